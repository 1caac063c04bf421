"""The ancestor mask of one step's draft tree: which earlier tokens each tree token may attend to.

One target forward verifies a whole tree because every node attends to the committed prefix and to its own
ancestors only, never to its siblings' branches: row i of the mask is node i's query, column j a key. A
chain's mask is the plain causal triangle; a tree's is the triangle with its branches' cross terms cut out.
Drawn as an SVG grid (no plotting library): a cell per (query, key) pair, the prefix as one column.
"""
from __future__ import annotations

import html

import numpy as np

from ..trace import SpecStep, ancestor_matrix
from .palette import INK_COLOR, MASKED_PAIR_COLOR, MUTED_COLOR, STATUS_COLORS, SUBTLE_COLOR

MAX_MASK_NODES = 64  # a bigger tree shows its first 64 nodes (the accepted path is among the first drafted)
CELL = 13
LABEL_W = 92


def _short(label: str, width: int = 12) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def ancestor_mask_html(step: SpecStep | None, labels: list | None = None) -> str:
    """The step's ancestor mask as an SVG grid with row and column labels, and a sentence on what it shows."""
    if step is None:
        return "<p class='sv-muted'>Run or step a speculative method: the mask of the shown step's tree appears here.</p>"
    n_all = step.tree.size
    n = min(n_all, MAX_MASK_NODES)
    allowed = ancestor_matrix(step.tree.parent[:n])
    labels = list(labels or [])
    names = [("root " if i == 0 else f"{i} ") + _short(labels[i] if i < len(labels) else f"#{step.tree.token_ids[i]}")
             for i in range(n)]
    accepted = set(int(i) for i in step.accepted_path) | {0}
    top = 70
    width, height = LABEL_W + (n + 1) * CELL + 8, top + n * CELL + 8
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             f"aria-label='ancestor mask of a {n}-node tree' style='font:10px sans-serif'>"]
    # column headers: the prefix, then each node (rotated so they fit)
    headers = ["prefix", *names]
    for j, name in enumerate(headers):
        x = LABEL_W + j * CELL + CELL / 2
        parts.append(f"<text transform='translate({x + 3},{top - 4}) rotate(-60)' fill='{MUTED_COLOR}'>"
                     f"{html.escape(name)}</text>")
    on_path = STATUS_COLORS["accepted"]
    # the masked-out pairs are the pale background: only allowed cells are drawn (a 64-node tree has ~300)
    parts.append(f"<rect x='{LABEL_W + CELL}' y='{top}' width='{n * CELL - 1}' height='{n * CELL - 1}' "
                 f"fill='{MASKED_PAIR_COLOR}'/>")
    for i in range(n):
        y = top + i * CELL
        color = on_path if i in accepted else INK_COLOR
        parts.append(f"<text x='{LABEL_W - 4}' y='{y + CELL - 3}' text-anchor='end' fill='{color}'>"
                     f"{html.escape(names[i])}</text>")
        # every tree token sees the whole committed prefix
        parts.append(f"<rect x='{LABEL_W}' y='{y}' width='{CELL - 1}' height='{CELL - 1}' fill='{SUBTLE_COLOR}'>"
                     f"<title>{html.escape(names[i])} sees the committed prefix</title></rect>")
        for j in range(n):
            x = LABEL_W + (j + 1) * CELL
            if allowed[i, j]:
                fill = on_path if i in accepted and j in accepted else INK_COLOR
                tip = f"{names[i]} sees {names[j]}" if i != j else f"{names[i]} sees itself"
                parts.append(f"<rect x='{x}' y='{y}' width='{CELL - 1}' height='{CELL - 1}' fill='{fill}' "
                             f"data-query='{i}' data-key='{j}'><title>{html.escape(tip)}</title></rect>")
    parts.append("</svg>")
    shown = int(allowed.sum())
    chain = bool(np.all(step.tree.parent[1:n] == np.arange(0, n - 1)))
    what = ("a chain, so the mask is the ordinary causal triangle" if chain else
            f"a tree, so {n * (n + 1) // 2 - shown} of the triangle's {n * (n + 1) // 2} pairs are cut: a node never "
            "sees another branch")
    more = f" (the first {n} of its {n_all} nodes)" if n_all > n else ""
    caption = (f"<p>Step {step.step}: one target forward scores all {n_all} tree tokens{more}. Row = a token's query, "
               f"column = a key it may attend to (filled). This step drafted {what}. Filled green cells: the path "
               f"the target accepted.</p>")
    return f"<div class='sv-mask'>{caption}<div style='overflow:auto;max-height:560px'>{''.join(parts)}</div></div>"
