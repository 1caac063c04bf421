"""The Spec-Bench harness: questions in, a side-by-side report out, one piece of model work at a time.

`bench_pieces` is the one implementation behind both front ends: `python -m specviz bench` drains it
(`bench.spec_bench.compare`), and the app's Benchmark panel advances it one decode step per turn on the
shared model, shows a line per question and can stop it between questions. Every method, the AR baseline
included, runs on the same prompts in the same process, interleaved prompt by prompt so that drift in
machine load hits all of them alike; speedups are AR's wall over the method's wall in that same run.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..decoding.registry import METHODS
from ..settings import RunSettings
from ..textio import check_prompt_fits, encode_prompt
from ..trace import ACCEPTED, REJECTED, summarize
from .baseline import against_ar

# the Spec-Bench dev split shipped with specviz (Apache-2.0, see its LICENSE beside it)
DEV_QUESTIONS = Path(__file__).resolve().parents[2] / "assets" / "spec_bench" / "question_dev.jsonl"


def load_questions(path: str | Path, limit: int | None = None, per_category: int | None = None,
                   categories=None) -> list:
    """Spec-Bench jsonl: each line has question_id, category and turns; the first turn is the prompt.
    `categories` (a list; None or empty for all) keeps only those, in the file's order."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"questions file {str(path)!r} does not exist")
    wanted = set(categories or ())
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
        if wanted and category not in wanted:
            continue
        if per_category is not None and seen[category] >= per_category:
            continue
        seen[category] += 1
        out.append({"question_id": q.get("question_id", n), "category": category, "prompt": prompt})
        if limit is not None and len(out) >= limit:
            break
    return out


def category_sizes(path: str | Path = DEV_QUESTIONS) -> dict:
    """Questions per category of a Spec-Bench file, in the file's order."""
    sizes: dict = {}
    for q in load_questions(path):
        sizes[q["category"]] = sizes.get(q["category"], 0) + 1
    return sizes


def parse_entry(entry: str) -> tuple:
    """`name` or `name:knob=value:knob=value` -> (name, knobs); the CLI's --methods item and the app's box."""
    name, *pairs = entry.strip().split(":")
    name = name.strip()
    if name not in METHODS:
        raise ConfigError(f"unknown method {name[:40]!r}; choose from {', '.join(METHODS)}")
    knobs = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or key not in {k.name for k in METHODS[name].knobs}:
            raise ConfigError(f"{entry.strip()[:80]!r}: write knob overrides as {name}:knob=value with a knob of {name} "
                              f"({', '.join(k.name for k in METHODS[name].knobs) or 'none'})")
        knobs[key] = value.strip()
    return name, knobs


def method_entries(spec) -> list:
    """The methods of a benchmark as [(label, method, overrides)], AR first and always present.

    `spec` is the CLI's comma-separated text (`eagle,eagle:budget=16:top_k=4`) or a list whose items are
    such entries or settings dicts (`{"method": "eagle", "budget": 16}`, as `/run` takes them). A dict's
    label is its entry text (its knobs that differ from the method's defaults), so labels stay unique."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or ())
    out, seen = [("ar", "ar", {})], {"ar"}
    for item in items:
        if isinstance(item, dict):
            name = item.get("method")
            if not isinstance(name, str) or name not in METHODS:
                raise ConfigError(f"unknown method {str(name)[:40]!r}; choose from {', '.join(METHODS)}")
            defaults = {k.name: k.default for k in METHODS[name].knobs}
            knobs = {k: v for k, v in item.items() if k != "method"}
            label = ":".join([name, *(f"{k}={v}" for k, v in knobs.items() if defaults.get(k, object()) != v)])
        elif isinstance(item, str):
            if not item.strip():
                continue
            name, knobs = parse_entry(item)
            label = item.strip()
        else:
            raise ConfigError(f"methods: each item is a method name or a settings dict, not {type(item).__name__}")
        if label not in seen:
            out.append((label, name, knobs))
            seen.add(label)
    return out


def entry_settings(name: str, knobs: dict, **common) -> RunSettings:
    """One entry's checked RunSettings: its knobs over the common fields (max_new_tokens, temperature…)."""
    return RunSettings.from_dict({**common, **knobs, "method": name})


def run_one(prepared, prompt_ids: list, record: bool = False):
    """Decode one prompt to the end; returns its Trace (wall time measured inside the decoder)."""
    dec = prepared.decoder(prompt_ids, record=record)
    for _ in dec.steps():
        pass
    return dec.trace()


def _decode(prepared, prompt_ids: list):
    """Generator: one decode step per `next()` (yields None), returning the Trace."""
    dec = prepared.decoder(prompt_ids, record=False)
    while not dec.done:
        dec.step()
        yield None
    return dec.trace()


def bench_pieces(prepared_runs: dict, questions: list, warmup: bool = True, baselines: dict | None = None,
                 per_prompt: list | None = None, cancelled=None):
    """Run every prepared method on every question, interleaved; AR ('ar') must be among them.

    A generator, advanced one piece of model work per `next()` (one decode step, one whole baseline call),
    so a caller can give each piece its own turn on a shared model. It yields None after a piece, a
    progress dict ({"event": "question", "index", "of", "category", "method", "tau", "wall_s"}) after each
    method finishes a question, and last {"event": "report", "report": …, "done": questions run,
    "cancelled": bool}. `cancelled()` is asked before each question: when true, the report covers the
    questions finished so far, every method on each of them. `baselines` maps extra report rows to
    `fn(prompt_ids) -> (output_ids, wall_s)` (the CLI's transformers generate()); their output is checked
    against AR's. Returns nothing; the report is the last item."""
    if "ar" not in prepared_runs:
        raise ConfigError("compare needs the 'ar' baseline among the methods")
    baselines = baselines or {}
    any_run = next(iter(prepared_runs.values()))
    tok = any_run.target.tokenizer
    prompts = []
    for q in questions:
        ids = encode_prompt(tok, q["prompt"])
        check_prompt_fits(len(ids), any_run.settings.max_new_tokens, any_run.target.max_positions)
        prompts.append(ids)
    if warmup and prompts:
        for p in prepared_runs.values():
            yield from _decode(p.limited(4), prompts[0])
    # AR first on every prompt, so each method's output can be checked against it
    order = ["ar"] + [n for n in prepared_runs if n != "ar"]
    totals = {name: {"tokens": 0, "forwards": 0, "wall": 0.0, "match": True, "steps": [], "by_category": {}}
              for name in [*order, *baselines]}
    done = 0
    for i, (q, ids) in enumerate(zip(questions, prompts)):
        if cancelled is not None and cancelled():
            break
        category = q.get("category", "")
        outs = {}
        for row, fn in baselines.items():
            out, wall = fn(ids)
            yield None
            _add(totals[row], category, len(out), 0, wall)
            outs[row] = out
            if per_prompt is not None:
                per_prompt.append({"category": category, "method": row, "wall_s": wall, "trace": None})
        ar = None
        for name in order:
            prepared = prepared_runs[name]
            tr = yield from _decode(prepared, ids)
            if per_prompt is not None:  # every run of every prompt, for reports by category
                per_prompt.append({"category": category, "method": name, "wall_s": tr.wall_s, "trace": tr})
            t = totals[name]
            forwards = sum(s.target_forwards for s in tr.steps)
            _add(t, category, int(tr.output_ids.shape[0]), forwards, tr.wall_s)
            t["steps"].extend(tr.steps)
            if name == "ar":
                ar = tr
                for row, out in outs.items():
                    # generate may stop at EOS at a different point only if decoding differed
                    totals[row]["match"] &= list(out) == ar.output_ids.tolist()
            elif prepared.settings.greedy:
                t["match"] &= bool(against_ar(tr, ar, greedy=True)["matches_ar"])
            yield {"event": "question", "index": i + 1, "of": len(questions), "category": category,
                   "question_id": q.get("question_id"), "method": name,
                   "tau": int(tr.output_ids.shape[0]) / forwards if forwards else 0.0, "wall_s": tr.wall_s}
        done += 1
    yield {"event": "report", "report": _report(totals), "done": done, "of": len(questions),
           "cancelled": done < len(questions)}


def _add(t: dict, category: str, tokens: int, forwards: int, wall: float) -> None:
    t["tokens"] += tokens
    t["forwards"] += forwards
    t["wall"] += wall
    c = t["by_category"].setdefault(category, {"tokens": 0, "forwards": 0, "wall": 0.0})
    c["tokens"] += tokens
    c["forwards"] += forwards
    c["wall"] += wall


def _rates(t: dict, ar: dict) -> dict:
    return {
        "tau": t["tokens"] / t["forwards"] if t["forwards"] else 0.0,
        "tokens": t["tokens"],
        "target_forwards": t["forwards"],
        "wall_s": t["wall"],
        "tok_per_s": t["tokens"] / t["wall"] if t["wall"] else 0.0,
        "speedup_vs_ar": ar["wall"] / t["wall"] if t["wall"] else 0.0,
    }


def _report(totals: dict) -> dict:
    """Per method: tau (new tokens / target forwards over all prompts), tok/s, total wall, speedup = AR wall
    / method wall, whether the greedy output matched AR on every prompt, the same by category, and from
    the step records the acceptance rate per draft position and the histogram of accepted lengths."""
    ar = totals["ar"]
    report = {}
    for name, t in totals.items():
        row = {**_rates(t, ar), "matches_ar": t["match"]}
        row["by_category"] = {c: _rates(ct, ar["by_category"].get(c, {"wall": 0.0}))
                              for c, ct in t["by_category"].items()}
        row.update(step_metrics(t["steps"]))
        report[name] = row
    return report


def step_metrics(steps: list) -> dict:
    """From the step records of one method, pooled over its questions:

    acceptance_by_depth[d]: accepted ÷ verified at draft position d+1 (`trace.summarize`), and
    verified_by_depth[d]: how many drafted nodes verification reached there (a rate over few is noise);
    accepted_lengths[k]: how many steps that drafted something accepted exactly k drafted tokens (the bonus
    not counted); steps / drafted_steps: all steps, and those that drafted (prompt lookup drafts nothing
    when the context has no match)."""
    drafted = [s for s in steps if s.n_drafted > 0]
    out = {"acceptance_by_depth": summarize(steps)["acceptance_by_depth"] if steps else [],
           "verified_by_depth": [], "accepted_lengths": [], "steps": len(steps), "drafted_steps": len(drafted)}
    if drafted:
        out["accepted_lengths"] = np.bincount([s.n_accepted for s in drafted]).tolist()
        reached = np.zeros(len(out["acceptance_by_depth"]), dtype=np.int64)
        for s in drafted:
            tested = np.isin(s.status[1:], (ACCEPTED, REJECTED))
            np.add.at(reached, s.tree.depth[1:][tested] - 1, 1)
        out["verified_by_depth"] = reached.tolist()
    return out


def last_report(pieces) -> dict:
    """Drain `bench_pieces` and return its report event."""
    event = None
    for event in pieces:
        pass
    return event
