"""Spec-Bench style runs: questions in, per-prompt results and side-by-side ratios out.

Speed is measured here, never in tests. Every method, the AR baseline included,
runs on the same prompts in the same process, interleaved prompt by prompt so
that drift in machine load hits all of them alike.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..runs.baseline import against_ar
from ..textio import check_prompt_fits, encode_prompt


def load_questions(path: str | Path, limit: int | None = None, per_category: int | None = None) -> list:
    """Spec-Bench jsonl: each line has question_id, category and turns; the first turn is the prompt."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"questions file {str(path)!r} does not exist")
    out, seen = [], defaultdict(int)
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
            prompt = q["turns"][0]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise ConfigError(f"{path.name} line {n} is not a Spec-Bench question (needs a 'turns' list)") from None
        category = q.get("category", "")
        if per_category is not None and seen[category] >= per_category:
            continue
        seen[category] += 1
        out.append({"question_id": q.get("question_id", n), "category": category, "prompt": prompt})
        if limit is not None and len(out) >= limit:
            break
    return out


def run_one(prepared, prompt_ids: list, record: bool = False):
    """Decode one prompt to the end; returns its Trace (wall time measured inside the decoder)."""
    dec = prepared.decoder(prompt_ids, record=record)
    for _ in dec.steps():
        pass
    return dec.trace()


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

    Returns per method: tau (new tokens / target forwards over all prompts),
    tok/s, total wall, speedup = AR wall / method wall, and whether the greedy
    output matched AR on every prompt.
    """
    if "ar" not in prepared_runs:
        raise ConfigError("compare needs the 'ar' baseline among the methods")
    any_run = next(iter(prepared_runs.values()))
    tok = any_run.target.tokenizer
    prompts = [encode_prompt(tok, q["prompt"]) for q in questions]
    hf_rows = HF_ROWS if hf else {}
    if warmup:
        for p in prepared_runs.values():
            run_one(p.limited(4), prompts[0])
        for cache in hf_rows.values():
            hf_generate(prepared_runs["ar"].limited(4), prompts[0], cache)
    # AR first on every prompt, so each method's output can be checked against it
    order = ["ar"] + [n for n in prepared_runs if n != "ar"]
    totals = {name: {"tokens": 0, "forwards": 0, "wall": 0.0, "match": True} for name in [*order, *hf_rows]}
    for q, ids in zip(questions, prompts):
        hf_out = {}
        for row, cache in hf_rows.items():
            out, wall = hf_generate(prepared_runs["ar"], ids, cache)
            totals[row]["tokens"] += len(out)
            totals[row]["wall"] += wall
            hf_out[row] = out
            if per_prompt is not None:
                per_prompt.append({"category": q.get("category", ""), "method": row, "wall_s": wall, "trace": None})
        ar = None
        for name in order:
            prepared = prepared_runs[name]
            tr = run_one(prepared, ids)
            if per_prompt is not None:  # every run of every prompt, for reports by category
                per_prompt.append({"category": q.get("category", ""), "method": name, "wall_s": tr.wall_s, "trace": tr})
            t = totals[name]
            t["tokens"] += int(tr.output_ids.shape[0])
            t["forwards"] += sum(s.target_forwards for s in tr.steps)
            t["wall"] += tr.wall_s
            if name == "ar":
                ar = tr
                for row, out in hf_out.items():
                    # generate may stop at EOS at a different point only if decoding differed
                    totals[row]["match"] &= out == ar.output_ids.tolist()
            elif prepared.settings.greedy:
                t["match"] &= bool(against_ar(tr, ar, greedy=True)["matches_ar"])
    ar_wall = totals["ar"]["wall"]
    report = {}
    for name, t in totals.items():
        report[name] = {
            "tau": t["tokens"] / t["forwards"] if t["forwards"] else 0.0,
            "tokens": t["tokens"],
            "target_forwards": t["forwards"],
            "wall_s": t["wall"],
            "tok_per_s": t["tokens"] / t["wall"] if t["wall"] else 0.0,
            "speedup_vs_ar": ar_wall / t["wall"] if t["wall"] else 0.0,
            "matches_ar": t["match"],
        }
    return report


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
