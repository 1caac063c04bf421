"""Spec-Bench style runs: questions in, per-prompt results and side-by-side ratios out.

Speed is measured here, never in tests. Every method, the AR baseline included,
runs on the same prompts in the same process, interleaved prompt by prompt so
that drift in machine load hits all of them alike.
"""
from __future__ import annotations

import time

import numpy as np

from ..config import ConfigError
from ..runs.benchmark import bench_pieces, last_report, load_questions, run_one  # noqa: F401 (the CLI's names)
from ..textio import check_prompt_fits, encode_prompt


def run_questions(prepared, questions: list, record: bool = False) -> list:
    tok = prepared.target.tokenizer
    results = []
    for q in questions:
        ids = encode_prompt(tok, q["prompt"])
        check_prompt_fits(len(ids), prepared.settings.max_new_tokens, prepared.target.max_positions)
        tr = run_one(prepared, ids, record)
        out, forwards, wall = tr.output_ids.tolist(), sum(s.target_forwards for s in tr.steps), tr.wall_s
        results.append(
            {
                "question_id": q["question_id"],
                "category": q.get("category", ""),
                "prompt_ids": ids,
                "output_ids": out,
                "text": tok.decode(out, skip_special_tokens=True),
                "target_forwards": forwards,
                "mean_accepted": len(out) / forwards if forwards else 0.0,
                "wall_s": wall,
                "trace": tr,
            }
        )
    return results


HF_ROWS = {"hf_generate": "dynamic", "hf_generate_static": "static"}  # report row -> generate()'s cache


def hf_generate(prepared, prompt_ids: list, cache: str = "static"):
    """transformers' own greedy generate with SDPA and its default (`cache="dynamic"`) or static cache: an
    outside AR baseline. It runs stock transformers, so our packed CPU linear (models/fast_linear) is off."""
    import torch

    from ..models import fast_linear
    from ..models.attention import implementation

    if cache not in HF_ROWS.values():
        raise ValueError(f"cache must be one of {sorted(HF_ROWS.values())}, not {cache!r}")
    model = prepared.target.model
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    n = prepared.settings.max_new_tokens
    extra = {"cache_implementation": "static"} if cache == "static" else {}
    with implementation(model, "sdpa"), fast_linear.disabled(), torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=list(prepared.target.eos_ids) or None,
                             pad_token_id=0, **extra)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    return out[0, len(prompt_ids):].tolist(), wall


def compare(prepared_runs: dict, questions: list, warmup: bool = True, hf: bool = False,
            per_prompt: list | None = None) -> dict:
    """Run every prepared method on every question, interleaved; AR ('ar') must be among them. `hf` adds
    transformers' generate() with its default and its static cache (rows `hf_generate`, `hf_generate_static`).

    The app's Benchmark panel runs the same harness (`runs.benchmark.bench_pieces`) step by step. Returns
    per method: tau (new tokens / target forwards over all prompts), tok/s, total wall, speedup = AR wall /
    method wall, whether the greedy output matched AR on every prompt, the same by category, the
    acceptance rate per draft position and the histogram of accepted lengths per step.
    """
    if "ar" not in prepared_runs:
        raise ConfigError("compare needs the 'ar' baseline among the methods")
    ar = prepared_runs["ar"]
    baselines = {row: (lambda ids, cache=cache: hf_generate(ar, ids, cache))
                 for row, cache in (HF_ROWS.items() if hf else ())}
    if warmup and hf and questions:
        first = encode_prompt(ar.target.tokenizer, questions[0]["prompt"])
        for cache in HF_ROWS.values():
            hf_generate(ar.limited(4), first, cache)
    return last_report(bench_pieces(prepared_runs, questions, warmup, baselines, per_prompt))["report"]


def replay_taus(prepared_runs: dict, questions: list, log=None) -> dict:
    """Greedy τ of each method without verify forwards: AR decodes each prompt once, one target
    forward records its features, and every drafter is replayed against that output (see
    decoding/whatif.py). Exact up to float ties; it measures no speed, only τ, so training runs
    can be compared quickly. `bench` (methods) is the real, timed measurement."""
    import torch

    from ..decoding.drafters import FeatureTap
    from ..decoding.whatif import replay_builder

    ar = prepared_runs["ar"]
    tok, model = ar.target.tokenizer, ar.target.model
    totals = {n: {"tokens": 0, "steps": 0, "nodes": 0.0, "accepted": []} for n in prepared_runs if n != "ar"}
    by_category: dict = {}  # (method, category) -> [tokens, steps]
    for i, q in enumerate(questions):
        ids = encode_prompt(tok, q["prompt"])
        out = run_one(ar, ids).output_ids.tolist()
        if not out:
            continue
        tap = FeatureTap(model)
        with tap, torch.inference_mode():
            model(input_ids=torch.tensor([ids + out], device=next(model.parameters()).device))
        features = tap.take()[0]
        for name, t in totals.items():
            prepared = prepared_runs[name]
            drafter = prepared.drafter()
            with torch.inference_mode():
                steps, nodes = replay_builder(drafter, ids, out, features if drafter.reads_target_features else None,
                                              t["accepted"])
            t["tokens"] += len(out)
            t["steps"] += steps
            t["nodes"] += nodes * steps
            cat = by_category.setdefault((name, q.get("category", "")), [0, 0])
            cat[0] += len(out)
            cat[1] += steps
        if log:
            log(f"[{i + 1}/{len(questions)}] {q.get('category', '')}: " + ", ".join(
                f"{n} {t['tokens'] / max(t['steps'], 1):.2f}" for n, t in totals.items()))
    return {n: {"tau": t["tokens"] / max(t["steps"], 1), "nodes_per_step": t["nodes"] / max(t["steps"], 1),
                # share of steps that accepted 0, 1, 2, ... drafted tokens: where a tree's budget goes unused
                "accepted_share": (np.bincount(t["accepted"]) / max(len(t["accepted"]), 1)).round(4).tolist(),
                "by_category": {c: tok / max(st, 1) for (m, c), (tok, st) in by_category.items() if m == n},
                "steps": t["steps"], "tokens": t["tokens"]} for n, t in totals.items()}
