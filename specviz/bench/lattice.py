"""Lattice benchmark: steps and tokens per forward of each diffusion schedule (or Jacobi) on a question set.

Every configuration decodes the same prompts in one process, interleaved prompt by
prompt. Jacobi runs are also checked token for token against plain greedy decoding
of the same model, timed in the same loop, so its speedup is measured side by side.
"""
from __future__ import annotations

from ..runs.baseline import against_ar, ar_trace
from ..textio import encode_prompt


def _decode(run, ids: list):
    dec = run.decoder(ids, record=True)
    for _ in dec.steps():
        pass
    return dec.trace()


def _totals() -> dict:
    return {"steps": 0, "forwards": 0, "tokens": 0, "cells": 0, "wall_s": 0.0, "rows": [], "matches_ar": None}


def lattice_bench(runs: dict, questions: list, store=None) -> dict:
    """runs: label -> LatticeRun. Returns label -> totals over the questions (and per-question rows).
    Jacobi runs add the AR baseline of the same model, decoded in the same loop."""
    first = next(iter(runs.values()))
    jacobi = [r for r in runs.values() if r.method == "jacobi"]
    totals = {label: _totals() for label in runs}
    if jacobi:
        totals["ar (greedy baseline)"] = _totals()
    for q in questions:
        ids = encode_prompt(first.tokenizer, q["prompt"])
        ar = None
        if jacobi:
            ar = ar_trace(jacobi[0].spec, ids)
            n = int(ar.output_ids.shape[0])
            t = totals["ar (greedy baseline)"]
            t["steps"] += len(ar.steps)
            t["forwards"] += len(ar.steps)
            t["tokens"] += n
            t["cells"] += n
            t["wall_s"] += ar.wall_s
        for label, run in runs.items():
            tr = _decode(run, ids)
            s = tr.summary()
            t = totals[label]
            t["steps"] += s["steps"]
            t["forwards"] += s["forwards"]
            t["tokens"] += s["new_tokens"]
            t["cells"] += s["cells_revealed"]
            t["wall_s"] += tr.wall_s
            t["rows"].append({"question_id": q["question_id"], **s})
            if run.method == "jacobi" and ar is not None and run.settings.temperature == 0:
                same = bool(against_ar(tr, ar, greedy=True)["matches_ar"])
                t["matches_ar"] = same if t["matches_ar"] is None else (t["matches_ar"] and same)
    for t in totals.values():
        t["tokens_per_forward"] = t["tokens"] / max(t["forwards"], 1)
        t["cells_per_forward"] = t["cells"] / max(t["forwards"], 1)
        t["tok_per_s"] = t["tokens"] / max(t["wall_s"], 1e-9)
    return totals


def print_lattice_report(totals: dict, n_questions: int) -> None:
    ar = totals.get("ar (greedy baseline)")
    print(f"{'run':<34}{'steps':>7}{'fwd':>7}{'tokens':>8}{'tok/fwd':>9}{'cells/fwd':>10}{'tok/s':>8}"
          f"{'speedup':>9}  greedy==AR")
    for label, t in totals.items():
        speed = f"{(ar['wall_s'] / max(ar['tokens'], 1)) / (t['wall_s'] / max(t['tokens'], 1)):>8.2f}x" if ar else f"{'-':>9}"
        same = {None: "-", True: "yes", False: "NO"}[t["matches_ar"]]
        print(f"{label:<34}{t['steps'] / n_questions:>7.1f}{t['forwards'] / n_questions:>7.1f}"
              f"{t['tokens'] / n_questions:>8.1f}{t['tokens_per_forward']:>9.3f}{t['cells_per_forward']:>10.3f}"
              f"{t['tok_per_s']:>8.2f}{speed}  {same}")
    print("(steps, forwards and tokens are means per question; tok/fwd = generated tokens to the first EOS ÷ model "
          "forwards; speedup = AR ms/token ÷ this run's ms/token, same process)")
