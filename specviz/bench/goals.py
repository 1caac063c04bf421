"""The cost model's goals, checked on held-out prompts: `python -m specviz bench goals`.

One interleaved run (`spec_bench.compare`: AR, transformers' generate with its default and static
cache, and each method, prompt by prompt) gives every figure the goals need:

- speedup of each method over our AR, overall and per category (Σ AR wall ÷ Σ method wall);
- speedup over transformers' plain generate (default cache), the baseline a user would otherwise get;
- the cost model's predicted speedup of each method, from its own step records priced on this
  machine's verify-cost curve (`decoding.costs.run_cost`), against the measured one;
- whether our AR is at least as fast as generate with either cache.

Greedy outputs are checked against AR for every method, so a speedup never comes from a different text.
"""
from __future__ import annotations

from collections import defaultdict

from ..decoding.costs import run_cost
from .spec_bench import HF_ROWS, compare

BEST_OVER_AR = 1.3  # the best method against our AR, and against generate
AUTO_PER_CATEGORY = 0.97  # auto against AR, in every category
AUTO_OVERALL = 1.2
PREDICTION_ERROR = 0.15  # |predicted ÷ measured − 1| per method
HF_PLAIN = "hf_generate"


def goals(prepared_runs: dict, questions: list, curve) -> dict:
    """Run the comparison and return {"methods": {name: row}, "categories": [...], "checks": [...]}."""
    per_prompt: list = []
    report = compare(prepared_runs, questions, hf=True, per_prompt=per_prompt)
    categories = list(dict.fromkeys(r["category"] for r in per_prompt))
    wall = defaultdict(float)  # (method, category) -> Σ wall
    steps = defaultdict(list)  # method -> every step record
    for r in per_prompt:
        wall[r["method"], r["category"]] += r["wall_s"]
        if r["trace"] is not None:
            steps[r["method"]] += r["trace"].steps
    plain = report[HF_PLAIN]["wall_s"]
    methods = {}
    for name, row in report.items():
        cost = run_cost(curve, steps[name]) if steps.get(name) else None
        methods[name] = {
            **row,
            "speedup_vs_generate": plain / row["wall_s"] if row["wall_s"] else 0.0,
            "predicted": cost.predicted if cost is not None and name != "ar" else None,
            "by_category": {c: wall["ar", c] / wall[name, c] for c in categories if wall[name, c] > 0},
        }
    return {"methods": methods, "categories": categories, "checks": checks(methods)}


def checks(methods: dict) -> list:
    """(goal, passed, detail) for each goal of the cost model."""
    ours = {n: m for n, m in methods.items() if n not in HF_ROWS and n != "ar"}
    out = []
    if ours:
        best_name = max(ours, key=lambda n: ours[n]["speedup_vs_ar"])
        best = ours[best_name]
        out.append((f"best method ≥ {BEST_OVER_AR}× our AR", best["speedup_vs_ar"] >= BEST_OVER_AR,
                    f"{best_name} {best['speedup_vs_ar']:.2f}×"))
        out.append((f"best method ≥ {BEST_OVER_AR}× transformers' generate", best["speedup_vs_generate"] >= BEST_OVER_AR,
                    f"{best_name} {best['speedup_vs_generate']:.2f}×"))
    if "auto" in methods:
        auto = methods["auto"]
        worst = min(auto["by_category"].items(), key=lambda kv: kv[1], default=("-", 0.0))
        out.append((f"auto ≥ {AUTO_PER_CATEGORY}× AR in every category", worst[1] >= AUTO_PER_CATEGORY,
                    f"lowest: {worst[0]} {worst[1]:.2f}×"))
        out.append((f"auto ≥ {AUTO_OVERALL}× AR overall", auto["speedup_vs_ar"] >= AUTO_OVERALL,
                    f"{auto['speedup_vs_ar']:.2f}×"))
    errors = {n: m["predicted"] / m["speedup_vs_ar"] - 1 for n, m in ours.items()
              if m["predicted"] is not None and m["speedup_vs_ar"] > 0}
    if errors:
        worst = max(errors, key=lambda n: abs(errors[n]))
        out.append((f"predicted speedup within {PREDICTION_ERROR:.0%} of measured, every method",
                    abs(errors[worst]) <= PREDICTION_ERROR, f"largest error: {worst} {errors[worst]:+.0%}"))
    for row in HF_ROWS:
        if row in methods:
            out.append((f"our AR at least as fast as {row}", methods[row]["speedup_vs_ar"] <= 1.0,
                        f"{row} runs at {methods[row]['speedup_vs_ar']:.2f}× our AR"))
    return out


def format_report(result: dict) -> str:
    methods, categories = result["methods"], result["categories"]
    w = max(16, max(len(n) for n in methods) + 2)
    lines = [f"{'method':<{w}}{'tau':>7}{'tok/s':>8}{'vs AR':>8}{'vs gen':>8}{'pred':>8}{'err':>7}  greedy==AR"]
    for n, m in methods.items():
        tau = f"{m['tau']:>7.2f}" if m["target_forwards"] else f"{'-':>7}"
        pred = f"{m['predicted']:>7.2f}×" if m["predicted"] is not None else f"{'-':>8}"
        err = (f"{m['predicted'] / m['speedup_vs_ar'] - 1:>+7.0%}" if m["predicted"] is not None and m["speedup_vs_ar"]
               else f"{'-':>7}")
        same = "-" if n == "ar" else ("yes" if m["matches_ar"] else "NO")
        lines.append(f"{n:<{w}}{tau}{m['tok_per_s']:>8.2f}{m['speedup_vs_ar']:>7.2f}×{m['speedup_vs_generate']:>7.2f}×"
                     f"{pred}{err}  {same}")
    lines.append("\nspeedup over our AR by category")
    named = [n for n in methods if n != "ar"]
    lines.append(f"{'category':<16}" + "".join(f"{n[:18]:>19}" for n in named))
    for c in categories:
        lines.append(f"{c[:15]:<16}" + "".join(
            f"{methods[n]['by_category'].get(c, float('nan')):>18.2f}×" for n in named))
    lines.append("\ngoals")
    for goal, ok, detail in result["checks"]:
        lines.append(f"  [{'met' if ok else 'MISSED'}] {goal}: {detail}")
    return "\n".join(lines)
