"""Plain AR on the same prompt, target and sampling settings: the one reference every speedup is measured
against (the app after a run, `bench`, and the lattice bench for Jacobi)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..models.loading import LRUCache
from ..trace import Trace


def ar_decoder(prepared, prompt_ids, max_new_tokens: int | None = None, record: bool = False):
    """A plain AR decoder on `prepared`'s target and sampling settings, not yet stepped (a caller that
    shares the model steps it in turns)."""
    baseline = prepared.baseline()
    if max_new_tokens is not None:
        baseline = baseline.limited(max(int(max_new_tokens), 1))
    return baseline.decoder(prompt_ids, record=record)


def ar_trace(prepared, prompt_ids, max_new_tokens: int | None = None, record: bool = False) -> Trace:
    """Decode `prompt_ids` with plain AR on `prepared`'s target and sampling settings, to the end."""
    dec = ar_decoder(prepared, prompt_ids, max_new_tokens, record)
    for _ in dec.steps():
        pass
    return dec.trace()


@dataclass(frozen=True)
class ARTiming:
    """What a speedup needs of an AR run (its decode time and output), kept so that a server asked for the
    same prompt again (a class running one lesson) times AR once, not once per student."""

    wall_s: float
    output_ids: object
    measured_at: float

    @classmethod
    def of(cls, trace: Trace) -> "ARTiming":
        return cls(trace.wall_s, trace.output_ids, time.time())

    def age(self) -> str:
        s = max(time.time() - self.measured_at, 0.0)
        return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"

    @staticmethod
    def cache(capacity: int) -> LRUCache:
        """An LRU of timings by (target, prompt ids, length, sampling): `peek` one, `put` one."""
        return LRUCache(capacity)


def against_ar(method: Trace, ar: Trace | ARTiming, greedy: bool) -> dict:
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
