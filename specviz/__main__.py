"""Command line: `python -m specviz run …` and `python -m specviz bench …`."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time

from .config import MAX_NEW_TOKENS, SEED, TEMPERATURE, TOP_P, ConfigError
from .decoding.registry import METHODS, knob_table
from .kernels.backend import backend_for, set_backend
from .textio import trace_file_dict


def _methods_epilog() -> str:
    lines = ["methods:"]
    for m in METHODS.values():
        knobs = ", ".join(f"--{k.name.replace('_', '-')} ({k.help}; default {_fmt_default(k)})" for k in m.knobs)
        lines.append(f"  {m.name:<14} {m.label}. " + ("lossless. " if m.lossless else "LOSSY. "))
        lines += textwrap.wrap(m.summary, 80, initial_indent=" " * 17, subsequent_indent=" " * 17)
        if knobs:
            lines += textwrap.wrap("knobs: " + knobs, 80, initial_indent=" " * 17, subsequent_indent=" " * 17)
    return "\n".join(lines)


def _fmt_default(knob) -> str:
    return knob.default if knob.choices else f"{knob.default:g}"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=None, help="Hugging Face id or local path of the target (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--draft", default=None, help="draft model id for the model-drafted methods (default: early-exit self-draft of the target)")
    p.add_argument("--head", default=None, help="EAGLE or Medusa head checkpoint (Hub id or local directory) for the "
                                                "trained methods on a Hub target (default: the shipped drafters of the embedded model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--questions", help="Spec-Bench style .jsonl file (the first of `turns` is the prompt)")
    p.add_argument("--limit", type=int, default=None, help="use at most N questions")
    p.add_argument("--per-category", type=int, default=None, help="use at most N questions per category")
    p.add_argument("--max-new-tokens", type=int, default=int(MAX_NEW_TOKENS.default))
    p.add_argument("--temperature", type=float, default=TEMPERATURE.default, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=TOP_P.default)
    p.add_argument("--seed", type=int, default=int(SEED.default))
    for knob in knob_table().values():
        kind = str if knob.choices or knob.auto else int if knob.integer else float
        p.add_argument(f"--{knob.name.replace('_', '-')}", type=kind, default=None,
                       help=f"{knob.help} (default {_fmt_default(knob)})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m specviz",
                                     description="Watch and measure speculative, diffusion and Jacobi decoding.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="decode prompts with one method and print or save the results",
        epilog=_methods_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--method", required=True, choices=list(METHODS), help="decoding method (see below)")
    _add_common(run)
    run.add_argument("--json", dest="json_out", default=None, help="write per-prompt results to this JSON file")
    run.add_argument("--trace", dest="trace_out", default=None, help="write the full step traces to this JSON file")

    bench = sub.add_parser(
        "bench",
        help="compare methods side by side in one run: tau, tok/s and speedup against AR",
        epilog=_methods_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("what", nargs="?", choices=("methods", "kernels", "tau", "costs", "goals"),
                       default="methods",
                       help="methods: decode questions with each method (default); kernels: each kernel against "
                            "its reference, and the target's verify cost against tree size; tau: greedy tau only, "
                            "replayed against AR's output without verify forwards (fast, no speed); costs: this "
                            "machine's verify-cost curve of the target, as the cost model caches it; goals: methods plus "
                            "generate(), per category, with the cost model's predicted speedups, checked against "
                            "the cost model's goals")
    bench.add_argument("--remeasure", action="store_true", help="bench costs: measure again instead of the cached curve")
    bench.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods, each optionally with knob overrides (eagle:budget=16:top_k=4); ar is always included")
    bench.add_argument("--no-hf", action="store_true", help="skip the transformers generate() baselines (default and static cache)")
    bench.add_argument("--context", type=int, default=512, help="bench kernels: prefix length for the verify-cost curve")
    bench.add_argument("--full", action="store_true", help="bench kernels: also time the larger-model attention shapes")
    _add_common(bench)
    lattice = sub.add_parser(
        "lattice",
        help="diffusion schedules or Jacobi decoding on prompts: steps, tokens per forward, and the output",
        description="Decode with a masked/block diffusion LM under one or more schedules, or with Jacobi decoding "
                    "of an AR model, and report steps and tokens per forward side by side.",
    )
    _add_lattice(lattice)
    train = sub.add_parser(
        "train",
        help="train the embedded model's drafters (Medusa heads, EAGLE-style drafter, distilled early exit)",
        description="Self-distillation: the embedded model answers the project's own prompt set (not Spec-Bench), "
                    "its features are recorded, and the drafters are trained on them and written, with a manifest, "
                    "to assets/drafters/ (or --out). Runs on CPU or CUDA.",
    )
    from .train.pipeline import add_arguments as _add_train

    _add_train(train)
    for p in (run, bench, lattice):
        p.add_argument("--kernels", choices=("auto", "triton", "reference"), default=None,
                       help="kernel backend: auto (Triton on CUDA, else the PyTorch reference), or force one")
    return parser


def _add_lattice(p: argparse.ArgumentParser) -> None:
    from .config import LATTICE_KNOBS

    p.add_argument("--method", choices=("diffusion", "jacobi"), default="diffusion")
    p.add_argument("--model", default=None, help="tiny-mdm (default for diffusion, offline), a diffusion LM id, "
                                                 "or an AR model for jacobi (default: the embedded SmolLM2)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model's own code from its Hub repository (LLaDA, Dream, SDAR, …)")
    p.add_argument("--schedules", default=None,
                   help="comma-separated schedules to compare (default: --schedule); 'all' runs every schedule")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--questions", help="Spec-Bench style .jsonl file (the first of `turns` is the prompt)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--per-category", type=int, default=None)
    p.add_argument("--gen-length", type=int, default=32, help="canvas cells (jacobi: tokens at most)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", action="store_true", help="print each output text")
    p.add_argument("--trace", dest="trace_out", default=None, help="write the first prompt's traces to this JSON file")
    for knob in LATTICE_KNOBS:
        kind = str if knob.choices else int if knob.integer else float
        p.add_argument(f"--{knob.name.replace('_', '-')}", type=kind, default=None,
                       help=f"{knob.help} (default {_fmt_default(knob)})")


def cmd_lattice(args) -> int:
    from .bench.lattice import lattice_bench, print_lattice_report
    from .config import LATTICE_KNOBS
    from .decoding.schedules import SCHEDULES
    from .models import ModelStore
    from .runs import prepare_lattice_run
    from .settings import LatticeSettings

    knobs = {k.name: getattr(args, k.name) for k in LATTICE_KNOBS if getattr(args, k.name) is not None}
    own = LatticeSettings(method=args.method).knob_names
    stray = sorted(set(knobs) - set(own))
    if stray:
        raise ConfigError(f"--{stray[0].replace('_', '-')} is not a {args.method} knob")
    base = {"method": args.method, **knobs, "model": args.model or "", "gen_length": args.gen_length,
            "temperature": args.temperature, "seed": args.seed}
    store = ModelStore(trust_remote_code=args.trust_remote_code or None)
    runs = {}
    if args.method == "jacobi":
        run = prepare_lattice_run(store, base)
        runs[run.label] = run
    else:
        names = args.schedules or knobs.get("schedule") or "low_confidence"
        names = list(SCHEDULES) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
        for n in names:
            run = prepare_lattice_run(store, {**base, "schedule": n})
            runs[run.label] = run
    questions = _questions(args)
    first = next(iter(runs.values()))
    t0 = time.perf_counter()
    totals = lattice_bench(runs, questions, store)
    print(f"{len(questions)} prompt(s), model={first.model_id}, gen_length={args.gen_length}, "
          f"temperature={args.temperature}, {time.perf_counter() - t0:.0f}s")
    if first.method == "diffusion":
        k = first.settings.knobs
        print(f"block_size={k['block_size']} steps={k['steps']} threshold={k['threshold']} "
              f"prophet_gap={k['prophet_gap']} remask_below={k['remask_below']} adaptive_block={k['adaptive_block']} "
              f"cache={k['cache']} ({first.decoder(encode_first(first, questions)).mode})")
    print_lattice_report(totals, len(questions))
    if args.show or args.trace_out:
        ids = encode_first(first, questions)
        traces = []
        for label, run in runs.items():
            dec = run.decoder(ids)
            for _ in dec.steps():
                pass
            tr = dec.trace()
            traces.append(trace_file_dict(tr, run.tokenizer, questions[0]["prompt"]))
            if args.show:
                print(f"--- {label}: " + run.tokenizer.decode(tr.output_ids.tolist(), skip_special_tokens=True))
        if args.trace_out:
            with open(args.trace_out, "w") as f:
                json.dump(traces, f)
    return 0


def encode_first(run, questions) -> list:
    from .textio import encode_prompt

    return encode_prompt(run.tokenizer, questions[0]["prompt"])


def _knobs(args, method) -> dict:
    return {k.name: getattr(args, k.name) for k in method.knobs if getattr(args, k.name) is not None}


def run_settings(args, method, overrides: dict | None = None, temperature: float | None = None, strict=False):
    """The CLI flags as one RunSettings for `method`. Flags of knobs the method lacks are ignored, so one
    `bench` command can set knobs of several methods; `strict` refuses a --draft the method cannot use."""
    from .settings import RunSettings

    draft = args.head if method.uses_trained else args.draft if (method.uses_draft_model or strict) else None
    return RunSettings.from_dict({
        "method": method.name, **_knobs(args, method), **(overrides or {}), "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature if temperature is None else temperature, "top_p": args.top_p,
        "seed": args.seed, "target": args.target or "", "draft": draft or ""})


def _questions(args) -> list:
    from .bench.spec_bench import load_questions

    if args.prompt is not None:
        return [{"question_id": 0, "category": "", "prompt": args.prompt}]
    if args.questions is None:
        raise ConfigError("give --prompt or --questions")
    return load_questions(args.questions, args.limit, args.per_category)


def cmd_run(args) -> int:
    from .bench.spec_bench import run_questions
    from .models import ModelStore
    from .runs import prepare_run

    method = METHODS[args.method]
    questions = _questions(args)
    prepared = prepare_run(ModelStore(), run_settings(args, method, strict=True))
    results = run_questions(prepared, questions, record=args.trace_out is not None)
    for r in results:
        print(f"[{r['question_id']}] tau={r['mean_accepted']:.2f} forwards={r['target_forwards']} "
              f"tokens={len(r['output_ids'])} wall={r['wall_s']:.2f}s")
        print(textwrap.indent(r["text"].strip(), "    "))
    tokens = sum(len(r["output_ids"]) for r in results)
    forwards = sum(r["target_forwards"] for r in results)
    wall = sum(r["wall_s"] for r in results)
    print(f"{args.method}: tau={tokens / max(forwards, 1):.3f} tok/s={tokens / max(wall, 1e-9):.2f} over {len(results)} prompt(s)")
    if args.json_out:
        keys = ("question_id", "prompt_ids", "output_ids", "text", "target_forwards", "mean_accepted", "wall_s")
        with open(args.json_out, "w") as f:
            json.dump([{k: r[k] for k in keys} for r in results], f)
    if args.trace_out:
        prompts = {q["question_id"]: q["prompt"] for q in questions}
        traces = [trace_file_dict(r["trace"], prepared.target.tokenizer, prompts.get(r["question_id"]))
                  for r in results]
        with open(args.trace_out, "w") as f:
            json.dump(traces, f)
    return 0


def cmd_bench_costs(args) -> int:
    import time

    from .models import ModelStore
    from .runs.costs import cost_curve, machine, on_disk

    store = ModelStore()
    target = store.get(args.target)
    measuring = args.remeasure or not on_disk(target)
    t0 = time.perf_counter()
    curve = cost_curve(store, target, remeasure=args.remeasure)
    took = time.perf_counter() - t0
    print(f"verify cost of {curve.model_id} on {curve.device} ({curve.dtype}), {curve.context}-token prefix, "
          f"{machine()}; {'measured' if measuring else 'read from the cache'} in {took:.1f} s")
    print(f"{'tokens scored':>13}{'forward ms':>12}{'vs AR step':>12}")
    for n, ms in zip(curve.tokens, curve.forward_ms):
        print(f"{n:>13}{ms:>12.2f}{ms / curve.ar_ms:>11.2f}x")
    return 0


def cmd_bench_goals(args) -> int:
    from .bench.goals import format_report, goals
    from .runs.costs import machine

    if args.temperature != 0:
        raise ConfigError("bench goals compares greedy outputs and walls: use temperature 0")
    questions = _questions(args)
    prepared = _prepare_entries(args, 0.0)
    ar = prepared["ar"]
    curve = ar.costs()  # this machine's curve: from the cache, or measured now (before any timing)
    t0 = time.perf_counter()
    result = goals(prepared, questions, curve)
    print(f"{len(questions)} prompt(s), max_new_tokens={args.max_new_tokens}, greedy, target={ar.target.model_id}, "
          f"{machine()}, {time.perf_counter() - t0:.0f} s")
    print(f"cost curve (ms per forward by tokens scored): " +
          ", ".join(f"{n}: {ms:.1f}" for n, ms in zip(curve.tokens, curve.forward_ms)))
    print(format_report(result))
    return 0


def cmd_bench_kernels(args) -> int:
    from .bench.kernels import kernel_rows, print_kernel_rows, print_verify_cost, verify_cost
    from .models import ModelStore

    import torch

    target = ModelStore().get(args.target)
    device = next(target.model.parameters()).device
    print(f"kernels on {device} ({backend_for(device)} backend), torch {torch.__version__}")
    print_kernel_rows(kernel_rows(device, args.full))
    print_verify_cost(verify_cost(target.model, args.context), target.model_id, args.context, device)
    return 0


def method_entries(spec: str) -> list:
    """`--methods` entries: a method name, optionally with knob overrides after colons, so one
    run can compare settings side by side, e.g. `eagle,eagle:budget=16:top_k=4,eagle:draft_vocab=0`.
    Returns [(label, method, overrides)], AR first (the app's Benchmark panel parses its box the same way)."""
    from .runs.benchmark import method_entries as entries

    return entries(spec)


def _prepare_entries(args, temperature: float) -> dict:
    from .models import ModelStore
    from .runs import prepare_run

    store = ModelStore()
    return {label: prepare_run(store, run_settings(args, METHODS[name], overrides, temperature))
            for label, name, overrides in method_entries(args.methods)}


def cmd_bench(args) -> int:
    from .bench.spec_bench import compare

    questions = _questions(args)
    prepared = _prepare_entries(args, args.temperature)
    t0 = time.perf_counter()
    report = compare(prepared, questions, hf=not args.no_hf and args.temperature == 0)
    print(f"{len(questions)} prompt(s), max_new_tokens={args.max_new_tokens}, temperature={args.temperature}, "
          f"target={prepared['ar'].target.model_id}, {time.perf_counter() - t0:.0f}s")
    print(f"kernels: {prepared['ar'].decoder([0]).backend}")
    w = max(16, max(len(n) for n in report) + 2)
    print(f"{'method':<{w}}{'tau':>7}{'tok/s':>9}{'ms/tok':>9}{'wall s':>9}{'speedup':>9}  greedy==AR")
    for n, r in report.items():
        same = "-" if n == "ar" or args.temperature > 0 else ("yes" if r["matches_ar"] else "NO")
        tau = f"{r['tau']:>7.3f}" if r["target_forwards"] else f"{'-':>7}"
        print(f"{n:<{w}}{tau}{r['tok_per_s']:>9.2f}{1000 / max(r['tok_per_s'], 1e-9):>9.2f}{r['wall_s']:>9.1f}"
              f"{r['speedup_vs_ar']:>8.2f}x  {same}")
    return 0


def cmd_bench_tau(args) -> int:
    from .bench.spec_bench import replay_taus

    if args.temperature != 0:
        raise ConfigError("bench tau replays greedy runs: use temperature 0")
    questions = _questions(args)
    prepared = _prepare_entries(args, 0.0)
    t0 = time.perf_counter()
    report = replay_taus(prepared, questions, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"{len(questions)} prompt(s), max_new_tokens={args.max_new_tokens}, greedy, replayed against AR's output "
          f"({time.perf_counter() - t0:.0f}s; no speed measured: use `bench` for that)")
    w = max(16, max(len(n) for n in report) + 2)
    print(f"{'method':<{w}}{'tau':>7}{'nodes/step':>12}{'steps':>8}{'tokens':>8}")
    for n, r in report.items():
        print(f"{n:<{w}}{r['tau']:>7.3f}{r['nodes_per_step']:>12.1f}{r['steps']:>8}{r['tokens']:>8}")
    print("\nshare of steps by accepted drafted tokens")
    depth = max(len(r["accepted_share"]) for r in report.values())
    print(f"{'method':<{w}}" + "".join(f"{a:>7}" for a in range(depth)))
    for n, r in report.items():
        print(f"{n:<{w}}" + "".join(f"{x:>7.3f}" for x in r["accepted_share"]))
    categories = list(dict.fromkeys(c for r in report.values() for c in r["by_category"]))
    if len(categories) > 1:
        print("\ntau by category")
        print(f"{'category':<16}" + "".join(f"{n[:20]:>21}" for n in report))
        for c in categories:
            print(f"{c[:15]:<16}" + "".join(f"{r['by_category'].get(c, float('nan')):>21.3f}" for r in report.values()))
    return 0


def main(argv=None) -> int:
    from .models import ModelLoadError

    args = build_parser().parse_args(argv)
    if getattr(args, "kernels", None):
        set_backend(args.kernels)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "lattice":
            return cmd_lattice(args)
        if args.command == "train":
            from .train.pipeline import run as cmd_train

            return cmd_train(args)
        if args.what == "tau":
            return cmd_bench_tau(args)
        if args.what == "goals":
            return cmd_bench_goals(args)
        if args.what == "costs":
            return cmd_bench_costs(args)
        return cmd_bench_kernels(args) if args.what == "kernels" else cmd_bench(args)
    except (ConfigError, ModelLoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
