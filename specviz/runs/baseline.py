"""Plain AR on the same prompt, target and sampling settings: the one reference every speedup is measured
against (the app after a run, `bench`, and the lattice bench for Jacobi)."""
from __future__ import annotations

from ..trace import Trace


def ar_trace(prepared, prompt_ids, max_new_tokens: int | None = None, record: bool = False) -> Trace:
    """Decode `prompt_ids` with plain AR on `prepared`'s target and sampling settings, to the end."""
    baseline = prepared.baseline()
    if max_new_tokens is not None:
        baseline = baseline.limited(max(int(max_new_tokens), 1))
    dec = baseline.decoder(prompt_ids, record=record)
    for _ in dec.steps():
        pass
    return dec.trace()


def against_ar(method: Trace, ar: Trace, greedy: bool) -> dict:
    """The speedup of `method` over `ar` (decode wall times, each measured inside its decoder, so model
    loading and rendering are excluded) and, for greedy runs, whether the outputs are equal."""
    n = int(method.output_ids.shape[0])
    ratio = ar.wall_s / method.wall_s if method.wall_s > 0 else 0.0
    return {
        "ratio": ratio,
        "ar_s": ar.wall_s,
        "method_s": method.wall_s,
        "matches_ar": (ar.output_ids.tolist() == method.output_ids.tolist()) if greedy else None,
        "how": f"AR {ar.wall_s:.2f} s ÷ this run {method.wall_s:.2f} s for {n} tokens, same prompt, "
               f"timed just now in this process",
    }


def compare_with_ar(prepared, method: Trace) -> dict:
    """Run AR for as many tokens as `method` produced, on its prompt, and compare."""
    if prepared.settings.method == "ar":
        return {"ratio": 1.0, "ar_s": method.wall_s, "method_s": method.wall_s, "matches_ar": None,
                "how": "this run is the AR baseline itself"}
    ar = ar_trace(prepared, method.prompt_ids, max(int(method.output_ids.shape[0]), 1), record=True)
    return against_ar(method, ar, prepared.settings.greedy)
