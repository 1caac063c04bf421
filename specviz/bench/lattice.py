"""Lattice benchmark: steps and tokens per forward of each diffusion schedule (or Jacobi) on a question set.

Every configuration decodes the same prompts in one process, interleaved prompt by
prompt. Jacobi runs are also checked token for token against plain greedy decoding
of the same model, timed in the same loop, so its speedup is measured side by side.
"""
from __future__ import annotations

import time

from ..runner import LatticeRun, prepare_run
from ..textio import encode_prompt


def _decode(run: LatticeRun, ids: list):
    dec = run.decoder(ids, record=True)
    t0 = time.perf_counter()
    steps = list(dec.steps())
    return run.trace(dec, steps, time.perf_counter() - t0)


def lattice_bench(runs: dict, questions: list, store=None) -> dict:
    """runs: label -> LatticeRun. Returns label -> totals over the questions (and per-question rows)."""
    first = next(iter(runs.values()))
    ar = None
    if any(r.method == "jacobi" for r in runs.values()):
        ar = prepare_run(store, "ar", first.model_id, None, {}, first.max_new_tokens, first.temperature, 1.0,
                         first.seed)
    totals = {label: {"steps": 0, "forwards": 0, "tokens": 0, "cells": 0, "wall_s": 0.0, "rows": [],
                      "matches_ar": None} for label in runs}
    if ar is not None:
        totals["ar (greedy baseline)"] = {"steps": 0, "forwards": 0, "tokens": 0, "cells": 0, "wall_s": 0.0,
                                          "rows": [], "matches_ar": None}
    for q in questions:
        ids = encode_prompt(first.tokenizer, q["prompt"])
        ar_out = None
        if ar is not None:
            dec = ar.decoder(ids, record=False)
            t0 = time.perf_counter()
            steps = list(dec.steps())
            wall = time.perf_counter() - t0
            ar_out = dec.output_ids.tolist()
            t = totals["ar (greedy baseline)"]
            t["steps"] += len(steps)
            t["forwards"] += len(steps)
            t["tokens"] += len(ar_out)
            t["cells"] += len(ar_out)
            t["wall_s"] += wall
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
            if run.method == "jacobi" and ar_out is not None and run.temperature == 0:
                same = tr.output_ids.tolist() == ar_out
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
