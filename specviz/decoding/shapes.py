"""Static tree shapes, written the way Medusa writes tree "choices".

A shape is a set of rank paths: (0,) is the drafter's top candidate after the
root, (0, 1) the second-best candidate after that one, and so on. A drafter
that ranks candidates per node (a draft model, early exit, Medusa heads) fills
the shape; a path is accepted as far as the true tokens' ranks stay inside it.
That last fact also lets the what-if panel score any shape from the ranks
alone (see `accepted_length`).

Pure Python: no torch here.
"""
from __future__ import annotations

import heapq


def chain(n: int) -> tuple:
    return tuple((0,) * d for d in range(1, n + 1))


def full_tree(branching: int, depth: int) -> tuple:
    paths, level = [], [()]
    for _ in range(depth):
        level = [p + (r,) for p in level for r in range(branching)]
        paths += level
    return tuple(paths)


def best_static_tree(rank_accuracy, n_nodes: int, max_depth: int = 16) -> tuple:
    """The `n_nodes` paths with the highest chance of being accepted, assuming each
    depth's true token has rank r with probability `rank_accuracy[r]`, independently.
    `rank_accuracy` may also be one row per depth (Medusa heads: head k guesses depth k),
    which caps the depth at the number of rows.

    Every prefix of a chosen path scores at least as high as the path, so a
    best-first search returns a valid (ancestor-closed) tree. This is how
    Medusa sized its trees from measured head accuracies, here done for any
    drafter from the ranks measured on the current prompt.
    """
    rows = rank_accuracy if rank_accuracy and isinstance(rank_accuracy[0], (list, tuple)) else [rank_accuracy]
    rows = [[max(float(a), 0.0) for a in row] for row in rows]
    if len(rows) > 1:
        max_depth = min(max_depth, len(rows))
    acc = lambda depth: rows[min(depth, len(rows) - 1)]  # noqa: E731  (0-based depth)
    heap = [(-a, (r,)) for r, a in enumerate(acc(0)) if a > 0]
    heapq.heapify(heap)
    chosen = []
    while heap and len(chosen) < n_nodes:
        neg, path = heapq.heappop(heap)
        chosen.append(path)
        if len(path) < max_depth:
            for r, a in enumerate(acc(len(path))):
                if a > 0:
                    heapq.heappush(heap, (neg * a, path + (r,)))
    return normalise(chosen)


def _medusa_like() -> tuple:
    # hand-made: wide near the root, where ranks 1-3 still hit often, thin deeper down
    return normalise(
        [(0,), (1,), (2,), (3,)]
        + [(0, r) for r in range(4)] + [(1, r) for r in range(3)] + [(2, 0), (2, 1), (3, 0)]
        + [(0, 0, r) for r in range(3)] + [(0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (0, 2, 0), (2, 0, 0)]
        + [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0)]
    )


def _wide() -> tuple:
    return normalise(
        [(r,) for r in range(8)]
        + [(0, r) for r in range(8)] + [(1, r) for r in range(6)] + [(2, r) for r in range(4)] + [(3, 0), (3, 1)]
        + [(0, 0, r) for r in range(4)] + [(0, 1, r) for r in range(3)] + [(1, 0, 0), (1, 0, 1)]
        + [(0, 2, 0), (1, 1, 0), (2, 0, 0)]
    )


# a static shape is verified in one target forward: its size is capped like the dynamic trees' budget
MAX_SHAPE_NODES, MAX_SHAPE_DEPTH, MAX_SHAPE_RANK = 256, 32, 63


def normalise(paths) -> tuple:
    """Sorted by depth then ranks, duplicates dropped; refuses paths whose parent is missing and shapes
    larger than the caps."""
    if len(paths) > MAX_SHAPE_NODES:
        raise ValueError(f"the tree shape has {len(paths):,} paths; a shape has at most {MAX_SHAPE_NODES} nodes")
    try:
        out = sorted({tuple(int(r) for r in p) for p in paths}, key=lambda p: (len(p), p))
    except (TypeError, ValueError, OverflowError):
        raise ValueError("a tree shape is a list of rank paths such as [[0], [1], [0, 0]]") from None
    if any(len(p) > MAX_SHAPE_DEPTH or max(p, default=0) > MAX_SHAPE_RANK for p in out):
        raise ValueError(f"tree paths are at most {MAX_SHAPE_DEPTH} deep with ranks up to {MAX_SHAPE_RANK}")
    have = set(out)
    for p in out:
        if not p or min(p) < 0:
            raise ValueError(f"tree path {p!r} is invalid: ranks are non-negative and paths non-empty")
        if len(p) > 1 and p[:-1] not in have:
            raise ValueError(f"tree path {p!r} has no parent {p[:-1]!r} in the shape")
    return tuple(out)


PRESETS = {
    "chain-4": chain(4),
    "chain-8": chain(8),
    "binary-14": full_tree(2, 3),
    "medusa-like-26": _medusa_like(),
    "wide-40": _wide(),
    # rank accuracies typical of an untrained early-exit draft: mostly rank 0, a long tail
    "deep-64": best_static_tree([0.55, 0.15, 0.07, 0.04, 0.03], 64, max_depth=10),
}


CALIBRATED = "calibrated"  # the tree trained Medusa heads ship with, fitted to their measured accuracies


def parse_shape(spec, drafter=None) -> tuple:
    """A preset name, or a path list such as "[[0], [1], [0, 0]]" or "0;1;0,0".

    "calibrated" is the tree that came with trained heads (`drafter.tree`); heads without one
    (e.g. a Hub checkpoint) fall back to the hand-made Medusa-like tree."""
    if isinstance(spec, str):
        text = spec.strip()
        if text == CALIBRATED:
            if drafter is None or not hasattr(drafter, "tree"):
                raise ValueError(f"the '{CALIBRATED}' tree shape comes with trained Medusa heads; "
                                 f"choose another shape for this method")
            return normalise(drafter.tree) if drafter.tree else PRESETS["medusa-like-26"]
        if text in PRESETS:
            return PRESETS[text]
        if text.startswith("["):
            import json

            try:
                paths = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"tree shape {spec!r} is not a valid JSON path list: {err}") from None
        else:
            try:
                paths = [[int(r) for r in part.split(",")] for part in text.split(";") if part.strip()]
            except ValueError:
                raise ValueError(
                    f"unknown tree shape {spec!r}: use a preset ({', '.join(PRESETS)}) or paths like '0;1;0,0'"
                ) from None
        return normalise(paths)
    return normalise(spec)


def shape_depth(paths) -> int:
    return max((len(p) for p in paths), default=0)


def accepted_length(paths: set, ranks, start: int) -> int:
    """How many drafted tokens a static shape accepts at position `start`,
    given `ranks[t]`: the drafter's rank of the true token t on the true prefix."""
    n, path = 0, ()
    while start + n < len(ranks):
        path = path + (int(ranks[start + n]),)
        if path not in paths:
            break
        n += 1
    return n


def describe(paths) -> str:
    widths = [sum(1 for p in paths if len(p) == d) for d in range(1, shape_depth(paths) + 1)]
    return f"{len(paths)} nodes, depth {len(widths)}, per level {widths}"
