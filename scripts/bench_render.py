"""How much a streamed step costs to render, early and late in a long run (a benchmark, not a test).

Builds a synthetic 512-token speculative run (draft trees of 20-60 nodes with chains, a weak drafter, so about
420 steps) and a synthetic diffusion run (a 512-cell canvas in blocks of 64, about 440 steps) from the trace
dataclasses and numpy random data (no model), feeds them to the live views of `specviz.viz.live`, and prints
the median cost of `add(step)` + `live()` at step 10 and at step 400, their ratio (target: ≤ 1.5), and the
cost of the old full re-render of the same step for contrast.

    .venv/bin/python scripts/bench_render.py [--repeats 7] [--payload]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from specviz.trace import (  # noqa: E402
    ACCEPTED, BONUS, CORRECTION, KEPT, MASKED, REJECTED, REMASKED, REVEALED, ROOT, UNREACHED, DiffusionStep,
    DraftTree, SpecStep, Trace, check_diffusion_invariants, check_invariants, commit_steps, committed_tokens,
    summarize, summarize_diffusion, tree_depths,
)
from specviz.viz.confidence import running_strip_figure, step_confidence_figure  # noqa: E402
from specviz.viz.lattice import (  # noqa: E402
    canvas_text_html, diffusion_metrics_html, lattice_svg, progress_figure, schedule_figure,
    tokens_per_forward_figure,
)
from specviz.viz.live import LatticeLiveView, SpecLiveView  # noqa: E402
from specviz.viz.panels import depth_chart, generated_text_html, metrics_html  # noqa: E402
from specviz.viz.tree import tree_html  # noqa: E402

SOURCES = ("early-exit-L20", "retrieval:shipped", "retrieval:context")
TOPK = 4


# --- synthetic runs -------------------------------------------------------------------------------
def _tree(rng, size: int, path_len: int, max_depth: int = 10) -> np.ndarray:
    """Parents of a `size`-node tree whose nodes 1..path_len form the chain the target accepts; the rest
    grow side chains (half the time a node continues the last one) and branches off earlier nodes."""
    parent = [-1] + list(range(path_len))
    depth = list(range(path_len + 1))
    for i in range(path_len + 1, size):
        last = i - 1
        if rng.random() < 0.5 and depth[last] < max_depth:
            p = last
        else:
            p = int(rng.integers(0, i))
            while depth[p] >= max_depth:
                p = parent[p]
        parent.append(p)
        depth.append(depth[p] + 1)
    return np.asarray(parent, dtype=np.int64)


def spec_step(rng, k: int, root_pos: int, size: int, path_len: int, vocab: int = 5000, bonus_kind: str | None = None):
    """One valid `SpecStep`: a tree of `size` nodes whose first `path_len` nodes were accepted.
    `bonus_kind="none"`: the accepted path ended at end-of-sequence, nothing added after it."""
    parent = _tree(rng, size, path_len)
    n = size
    tokens = rng.integers(0, vocab, n).astype(np.int64)
    path = np.arange(1, path_len + 1, dtype=np.int64)
    status = np.full(n, UNREACHED, dtype=np.int8)
    status[0] = ROOT
    on_path = {0, *path.tolist()}
    for i in range(1, n):
        if int(parent[i]) in on_path:
            status[i] = REJECTED
    status[path] = ACCEPTED
    last = int(path[-1]) if path_len else 0
    if bonus_kind is None:
        bonus_kind = CORRECTION if np.any(parent == last) or (path_len == 0 and n > 1) else BONUS
    bonus = -1 if bonus_kind == "none" else int(rng.integers(0, vocab))
    committed = tokens[path] if bonus < 0 else np.concatenate([tokens[path], [bonus]]).astype(np.int64)
    target_probs = rng.uniform(0.05, 1.0, n).astype(np.float32)
    accept_probs = np.where(status == UNREACHED, np.nan, rng.uniform(0.0, 1.0, n)).astype(np.float32)
    target_probs[0] = accept_probs[0] = 1.0
    source = ("root",) + tuple(SOURCES[int(j)] for j in rng.integers(0, len(SOURCES), n - 1))
    return SpecStep(
        step=k, root_pos=root_pos,
        tree=DraftTree(tokens, parent, np.concatenate([[1.0], rng.uniform(0.01, 1.0, n - 1)]).astype(np.float32), source),
        target_probs=target_probs, accept_probs=accept_probs, status=status, accepted_path=path,
        bonus_token=bonus, bonus_prob=float(rng.uniform(0.1, 1.0)), bonus_kind=bonus_kind, committed_ids=committed,
        target_topk_ids=rng.integers(0, vocab, (n, TOPK)).astype(np.int64),
        target_topk_probs=rng.uniform(0, 1, (n, TOPK)).astype(np.float32),
        draft_ms=float(rng.uniform(5, 20)), verify_ms=float(rng.uniform(10, 40)), target_forwards=1,
        draft_forwards=int(tree_depths(parent).max()),
        target_entropy=rng.uniform(0, 4, n).astype(np.float32), target_top2_gap=rng.uniform(0, 1, n).astype(np.float32),
    )


def synthetic_spec_run(n_tokens: int = 512, n_steps: int = 420, seed: int = 0, prompt_len: int = 16) -> Trace:
    """`n_steps` steps committing `n_tokens` tokens: each step one target token plus the drafts accepted."""
    rng = np.random.default_rng(seed)
    extra = np.bincount(rng.integers(0, n_steps, n_tokens - n_steps), minlength=n_steps)
    extra = np.minimum(extra, 8)
    extra[: n_tokens - n_steps - int(extra.sum())] += 1  # what the cap took, on the first steps
    steps, pos = [], prompt_len - 1
    for k, a in enumerate(extra):
        s = spec_step(rng, k, pos, int(rng.integers(20, 61)), int(a))
        steps.append(s)
        pos += int(s.committed_ids.shape[0])
    return Trace("bench", {}, "synthetic", None, np.arange(prompt_len, dtype=np.int64), steps)


def synthetic_lattice_run(length: int = 512, block: int = 64, seed: int = 0, vocab: int = 5000, k_top: int = 5) -> list:
    """Blocks filled left to right, one or two cells a step (about 55 steps a block), a cell remasked now and
    then, every other block closed by an all-in step; every masked cell of the active block is scored each step."""
    rng = np.random.default_rng(seed)
    final = rng.integers(0, vocab, length).astype(np.int64)
    prev = np.full(length, -1, dtype=np.int64)
    steps = []
    for b, lo in enumerate(range(0, length, block)):
        hi = min(lo + block, length)
        while np.any(prev[lo:hi] < 0):
            masked = lo + np.flatnonzero(prev[lo:hi] < 0)
            k = min(masked.shape[0], 2 if rng.random() < 0.25 else 1)
            reveal = rng.choice(masked, k, replace=False)
            all_in = b % 2 == 1 and k == masked.shape[0]  # every other block ends with Prophet's early commit
            kept = lo + np.flatnonzero(prev[lo:hi] >= 0)
            remask = rng.choice(kept, 1) if k == 2 and kept.shape[0] and rng.random() < 0.2 else np.zeros(0, np.int64)
            canvas = prev.copy()
            canvas[reveal] = final[reveal]
            canvas[remask] = -1
            state = np.where(prev >= 0, KEPT, MASKED).astype(np.int8)
            state[reveal] = REVEALED
            state[remask] = REMASKED
            proposal = np.full(length, -1, dtype=np.int64)
            scored = np.concatenate([masked, remask]).astype(np.int64)
            proposal[scored] = final[scored]
            conf = np.full(length, np.nan, dtype=np.float32)
            conf[scored] = rng.uniform(0.2, 1.0, scored.shape[0])
            gap = np.where(np.isfinite(conf), conf * rng.uniform(0.2, 1.0, length), np.nan).astype(np.float32)
            ent = np.where(np.isfinite(conf), -np.log(np.maximum(conf, 1e-6)), np.nan).astype(np.float32)
            topk_ids = np.full((length, k_top), -1, dtype=np.int64)
            topk_probs = np.zeros((length, k_top), dtype=np.float32)
            topk_ids[scored] = rng.integers(0, vocab, (scored.shape[0], k_top))
            topk_ids[scored, 0] = final[scored]
            topk_probs[scored] = np.sort(rng.uniform(0, 1, (scored.shape[0], k_top)), axis=1)[:, ::-1]
            steps.append(DiffusionStep(
                step=len(steps), block=b, block_start=lo, block_end=hi, canvas=canvas, cell_state=state,
                proposal=proposal, confidence=conf, top2_gap=gap, entropy=ent, topk_ids=topk_ids, topk_probs=topk_probs,
                rule="prophet all-in" if all_in else f"low_confidence: {k} cells", threshold=float("nan"),
                signal=float("nan"), forwards=1, cached=lo, eos_at=-1, forward_ms=float(rng.uniform(5, 15)),
                select_ms=float(rng.uniform(0.1, 1.0)), all_in=all_in,
            ))
            prev = canvas
    return steps


def spec_labels(steps: list) -> tuple:
    """(node labels per step, bonus label per step, committed-token pieces per step), as the UI would pass."""
    nodes = [[f"t{int(t)}" for t in s.tree.token_ids] for s in steps]
    bonus = [f"t{s.bonus_token}" for s in steps]
    pieces = [[f" w{int(t)}" for t in s.committed_ids] for s in steps]
    return nodes, bonus, pieces


def lattice_labels(steps: list) -> tuple:
    canvas = [[f"t{int(t)}" if t >= 0 else "" for t in s.canvas] for s in steps]
    proposal = [[f"t{int(t)}" if t >= 0 else "" for t in s.proposal] for s in steps]
    return canvas, proposal


# --- timing ------------------------------------------------------------------------------------------
def _ms(f) -> float:
    t0 = time.perf_counter()
    f()
    return 1000.0 * (time.perf_counter() - t0)


def time_spec_live(steps, labels, k: int, repeats: int) -> float:
    nodes, bonus, pieces = labels
    out = []
    for _ in range(repeats):
        view = SpecLiveView(backend="reference (cpu)")
        for i in range(k):
            view.add(steps[i], nodes[i], bonus[i], pieces[i])
        out.append(_ms(lambda: (view.add(steps[k], nodes[k], bonus[k], pieces[k]), view.live())))
    return statistics.median(out)


def time_lattice_live(steps, labels, k: int, repeats: int) -> float:
    canvas, proposal = labels
    out = []
    for _ in range(repeats):
        view = LatticeLiveView(label="bench", backend="reference (cpu)")
        for i in range(k):
            view.add(steps[i], canvas[i], proposal[i])
            if i >= k - view.window:  # as in a stream: the rows still in the window were built on their step
                view.live()
        out.append(_ms(lambda: (view.add(steps[k], canvas[k], proposal[k]), view.live())))
    return statistics.median(out)


def old_spec_render(steps, labels, k: int) -> None:
    """What the Speculative tab rendered per streamed step before the live view (ui/session.py `render`)."""
    nodes, bonus, pieces = labels
    run = steps[: k + 1]
    flat = [p for ps in pieces[: k + 1] for p in ps]
    tokens = committed_tokens(run)
    summary = summarize(run)
    generated_text_html(flat, tokens, current_step=k)
    tree_html(run[k], nodes[k], bonus[k])
    step_confidence_figure(run[k], nodes[k])
    running_strip_figure(tokens, flat, current_step=k)
    metrics_html(summary, None, "reference (cpu)", True, "")
    depth_chart(summary)


def old_lattice_render(steps, labels, k: int) -> None:
    """What the Diffusion tab rendered per streamed step before the live view (ui/diffusion.py `_render`)."""
    canvas, proposal = labels
    run = steps[: k + 1]
    lattice_svg(run, canvas[: k + 1], proposal[: k + 1], current_step=k, title="bench")
    diffusion_metrics_html(summarize_diffusion(run), "", "reference (cpu)")
    progress_figure({"bench": run})
    canvas_text_html(run[k], commit_steps(run, k), canvas[k])
    schedule_figure(run)
    tokens_per_forward_figure(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--old-repeats", type=int, default=3)
    ap.add_argument("--payload", action="store_true", help="also print the JSON size of the lattice figures")
    args = ap.parse_args()
    early, late = 10, 400

    trace = synthetic_spec_run()
    check_invariants(trace, max_new_tokens=512)
    sizes = [s.tree.size - 1 for s in trace.steps]
    print(f"speculative run: {len(trace.steps)} steps, {trace.output_ids.shape[0]} tokens, "
          f"{min(sizes)}-{max(sizes)} drafted nodes a step (mean {np.mean(sizes):.0f}), τ {summarize(trace.steps)['tau']:.2f}")
    lattice = synthetic_lattice_run()
    check_diffusion_invariants(lattice)
    print(f"lattice run: {len(lattice)} steps on a {lattice[0].length}-cell canvas, "
          f"{summarize_diffusion(lattice)['remasked']} remasks")

    spec_lab, lat_lab = spec_labels(trace.steps), lattice_labels(lattice)
    print(f"\nmedian of {args.repeats} (old full render: of {args.old_repeats}), milliseconds")
    print(f"{'view':<34}{'step ' + str(early):>10}{'step ' + str(late):>10}{'ratio':>8}")
    rows = [
        ("SpecLiveView add + live", lambda k: time_spec_live(trace.steps, spec_lab, k, args.repeats)),
        ("  old full re-render (contrast)",
         lambda k: statistics.median(_ms(lambda: old_spec_render(trace.steps, spec_lab, k)) for _ in range(args.old_repeats))),
        ("LatticeLiveView add + live", lambda k: time_lattice_live(lattice, lat_lab, k, args.repeats)),
        ("  old full re-render (contrast)",
         lambda k: statistics.median(_ms(lambda: old_lattice_render(lattice, lat_lab, k)) for _ in range(args.old_repeats))),
    ]
    for name, f in rows:
        a, b = f(early), f(late)
        print(f"{name:<34}{a:>10.1f}{b:>10.1f}{b / a:>8.2f}")

    if args.payload:
        view = LatticeLiveView(label="bench")
        for i, s in enumerate(lattice[: late + 1]):
            view.add(s, lat_lab[0][i], lat_lab[1][i])
        live_json = len(view.live()["lattice"])
        full_json = len(view.full()["lattice"])
        print(f"\nlattice HTML at step {late}: live window {live_json / 1e6:.2f} MB, whole lattice "
              f"{full_json / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
