"""The draft tree of one step, with the accepted path, rejected branches and the bonus token, as an SVG.

Layout: depth runs left to right; each leaf gets its own row in depth-first
order (networkx's DFS over the tree), and an inner node sits on the row of its
first child. Subtrees therefore occupy contiguous bands, edges never cross, and
the root is always in the top-left corner, where the scroll box opens. Rows
have a fixed height and the SVG scrolls, so a 64-node tree keeps every label as
legible as a 4-node chain.

The SVG is drawn here rather than by plotly so that each node is an element of
the page the UI can listen to (`TREE_CLICK_JS`), with no script injected at
launch and nothing to poll for.
"""
from __future__ import annotations

import html
import math

import networkx as nx
import numpy as np
import plotly.graph_objects as go  # empty_figure only

from ..trace import ACCEPTED, CUT, REJECTED, ROOT, STATUS_NAMES, UNREACHED, USER_SOURCE, SpecStep
from .palette import (BACKGROUND, CUT_MARK, EDIT_DASH, EDIT_MARK, KIND_COLORS, MUTED_COLOR, STATUS_COLORS,
                      SUBTLE_COLOR, source_color, status_text_color)

BONUS_NODE = "bonus"


def view_depth(max_depth) -> int | None:
    """The collapse depth as a whole number >= 1, or None (show everything) for anything else: a view option
    must never make the layout misbehave, whatever a client sends."""
    try:
        value = float(max_depth)
    except (TypeError, ValueError):
        return None
    return max(1, int(value)) if math.isfinite(value) else None


def visible_nodes(step: SpecStep, max_depth: int | None) -> tuple:
    """(visible node ids, hidden-descendant count per visible node) when collapsing below `max_depth`.

    The accepted path always stays visible: it is what the step is about."""
    depth = step.tree.depth
    max_depth = view_depth(max_depth)
    keep = np.ones(step.tree.size, dtype=bool) if max_depth is None else depth <= max_depth
    keep[0] = True  # the root: every hidden node's walk up the tree ends here
    keep[step.accepted_path] = True
    hidden_below = np.zeros(step.tree.size, dtype=np.int64)
    for i in range(step.tree.size - 1, 0, -1):
        if not keep[i]:
            # charge the hidden node to its nearest visible ancestor
            a = int(step.tree.parent[i])
            while not keep[a]:
                a = int(step.tree.parent[a])
            hidden_below[a] += 1
    return [i for i in range(step.tree.size) if keep[i]], hidden_below


def has_bonus(step: SpecStep) -> bool:
    """Whether the step ends with a token of the target's own (bonus or correction); not when the accepted
    path ended at end-of-sequence and nothing was added after it (bonus_token -1, bonus_kind "none")."""
    return step.bonus_token >= 0 and step.bonus_kind in KIND_COLORS


def _graph(step: SpecStep, nodes: list) -> nx.DiGraph:
    g = nx.DiGraph()
    for i in nodes:
        g.add_node(i)
        if i > 0:
            g.add_edge(int(step.tree.parent[i]), i)
    if has_bonus(step):
        last = int(step.accepted_path[-1]) if step.n_accepted else 0
        g.add_node(BONUS_NODE)
        g.add_edge(last, BONUS_NODE)
    return g


def tidy_layout(g: nx.DiGraph, root=0) -> dict:
    """Node -> (depth, row): leaves in DFS order, a parent on its first child's row."""
    depth = nx.shortest_path_length(g, root)
    rows: dict = {}
    next_row = 0
    # networkx visits children in insertion order, i.e. node order, so sibling order is stable
    for node in nx.dfs_preorder_nodes(g, root):
        if g.out_degree(node) == 0:
            rows[node] = float(next_row)
            next_row += 1
    for node in nx.dfs_postorder_nodes(g, root):
        if node not in rows:
            rows[node] = rows[next(iter(g.successors(node)))]
    return {n: (depth[n], rows[n]) for n in g.nodes}


def fmt_prob(p) -> str:
    return "–" if p is None or not np.isfinite(p) else f"{p:.3f}"


def tested(step: SpecStep) -> np.ndarray:
    """[N] bool: the nodes verification actually tested. Only these have an acceptance probability. Greedy
    verification writes a 0/1 match for every node, reached or not, so a never-reached node is untested whatever
    its number; sampled verification marks the siblings after an accepted one rejected without testing them
    (their acceptance probability is NaN), so a rejected node is tested only if it has a number."""
    return (step.status == ACCEPTED) | ((step.status == REJECTED) & np.isfinite(step.accept_probs))


def accept_text(step: SpecStep, node: int) -> str:
    """The acceptance probability a node was tested with, or 'not tested' (never a 0 or 1 it never had)."""
    p = step.accept_probs[node]
    if node == 0:
        return "– (the root is committed already)"
    if not tested(step)[node] or not np.isfinite(p):
        return "not tested"
    return f"{p:.3f}"


# --- the SVG ---------------------------------------------------------------------------------------
# every row is this tall whatever the tree's size, so 64 nodes stay as legible as 4: a big tree scrolls
ROW_HEIGHT = 30
PILL_HEIGHT = 22
PILL_PAD = 7  # text inset inside a node's pill
CHAR_WIDTH = 7.3  # DejaVu Sans Mono at 12px, the monospace face every Debian machine has
COLUMN_GAP = 44  # room for the edges and a '+n' marker between depth columns
MARGIN = 12
LABEL_CHARS = 14  # a longer token is cut with an ellipsis in its pill (whole in its hover and its card)
SCROLL_HEIGHT = 560  # px: the tree scrolls beyond this instead of shrinking its rows
FONT = "DejaVu Sans Mono, ui-monospace, Menlo, monospace"


def _short(label: str, limit: int = LABEL_CHARS) -> str:
    """`label` cut to `limit` visible characters (raw text: escape after cutting, so no entity is split)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _pill_width(text: str) -> float:
    return len(text) * CHAR_WIDTH + 2 * PILL_PAD


def tree_title(step: SpecStep, shown: int, max_depth: int | None) -> str:
    collapsed = step.tree.size - shown
    return (f"Step {step.step}: draft tree ({step.tree.size - 1} drafted, {step.n_accepted} accepted"
            + (f"; {collapsed} collapsed below depth {max_depth}" if collapsed else "") + ")")


def _node_hover(step: SpecStep, i: int, label: str, hidden: int) -> str:
    status = STATUS_NAMES[int(step.status[i])]
    lines = [f"{label} (id {int(step.tree.token_ids[i])}) · node {i} · depth {int(step.tree.depth[i])} · {status}"]
    if i:
        lines += [f"proposed by {step.tree.source[i]}", f"draft q = {fmt_prob(step.tree.draft_probs[i])}",
                  f"target p = {fmt_prob(step.target_probs[i])}", f"acceptance = {accept_text(step, i)}"]
    if hidden:
        lines.append(f"+{hidden} deeper nodes collapsed; raise 'show depth' to see them")
    lines.append("click for its card")
    return "\n".join(lines)


def _legend(step: SpecStep, shown: list, collapsed: bool) -> str:
    items = []
    for status in (ROOT, ACCEPTED, REJECTED, UNREACHED):
        if any(step.status[i] == status for i in shown):
            name = STATUS_NAMES[status]
            items.append(f'<span><i class="sv-swatch" style="background:{STATUS_COLORS[name]}"></i>{name}</span>')
    if has_bonus(step):
        color = KIND_COLORS[step.bonus_kind]
        items.append(f'<span><i class="sv-swatch" style="background:{color}"></i>★ {step.bonus_kind} '
                     f'(the target\'s own token)</span>')
    for src in sorted(set(step.tree.source[i] for i in shown) - {"root", USER_SOURCE}):
        items.append(f'<span><i class="sv-swatch sv-ring" style="border-color:{source_color(src)}"></i>'
                     f'ring: from {html.escape(src)}</span>')
    if USER_SOURCE in (step.tree.source[i] for i in shown):
        items.append(f'<span><i class="sv-swatch sv-ring" style="border-color:{source_color(USER_SOURCE)};'
                     f'border-style:dashed"></i>{EDIT_MARK} dashed ring: your edit</span>')
    if collapsed:
        items.append("<span>+n: deeper nodes hidden</span>")
    return f'<div class="sv-tree-legend">{"".join(items)}</div>'


def intervention_note(step: SpecStep, labels: list, token_labels: dict | None = None) -> str:
    """One line saying what the user changed in this step's draft before the target verified it again, and
    what that did to the accepted length ("" for a step nobody edited)."""
    edit = step.intervention
    if edit is None:
        return ""
    names = token_labels or {}

    def name(t):
        return html.escape(repr(str(names.get(int(t), f"#{int(t)}"))))

    if edit.kind == CUT:
        below = edit.removed - 1
        what = (f"{CUT_MARK} You cut the draft {name(edit.token)}" + (f" and the {below} drafted below it" if below else "")
                + f" from under {html.escape(repr(str(labels[edit.node])))}: a forced rejection, so the target "
                  "chose that position itself.")
    else:
        what = f"{EDIT_MARK} You replaced the draft {name(edit.was)} at node {edit.node} with {name(edit.token)}."
    before = (f" The original run accepted {edit.accepted_before} here; this branch accepted {step.n_accepted}."
              if edit.accepted_before >= 0 else "")
    return f'<div class="sv-tree-edit">{what}{before} The output is the target\'s either way.</div>'


def tree_html(step: SpecStep, labels: list, bonus_label: str, title: str = "", max_depth: int | None = None,
              token_labels: dict | None = None) -> str:
    """The draft tree as HTML: a title, a legend and an SVG drawn here, in a scroll box.

    `labels[i]` is the display text of node i, `bonus_label` that of the bonus token. Depth runs left to right,
    one fixed-height row per leaf (`tidy_layout`), so every node keeps a legible label at any size. Each node is
    an SVG group with `data-node` (its index, or "bonus") and `data-step`, which the page's one click listener
    reads; its `<title>` is the hover card. Nodes deeper than `max_depth` collapse into a "+n" beside their
    nearest visible ancestor; the accepted path always shows. Token text is data: it is escaped everywhere."""
    max_depth = view_depth(max_depth)
    labels = [str(t) for t in labels]
    shown, hidden_below = visible_nodes(step, max_depth)
    g = _graph(step, shown)
    pos = tidy_layout(g)
    on_path = {0, *map(int, step.accepted_path)}
    bonus = has_bonus(step)

    text = {i: (EDIT_MARK + " " if step.tree.source[i] == USER_SOURCE else "") + _short(labels[i]) for i in shown}
    if bonus:
        text[BONUS_NODE] = "★ " + _short(str(bonus_label))
    width = {n: _pill_width(t) for n, t in text.items()}
    pitch = max(width.values()) + COLUMN_GAP
    n_rows = 1 + int(max(r for _, r in pos.values()))
    max_col = max(d for d, _ in pos.values())

    def left(n):
        return MARGIN + pos[n][0] * pitch

    def mid_y(n):
        return MARGIN + pos[n][1] * ROW_HEIGHT + ROW_HEIGHT / 2

    parts = []
    # edges first, so the pills sit on top of them
    for u, v in g.edges:
        if v == BONUS_NODE:
            cls, color = "bonus", KIND_COLORS[step.bonus_kind]
        elif u in on_path and v in on_path:
            cls, color = "path", STATUS_COLORS["accepted"]
        elif step.status[v] == UNREACHED:
            cls, color = "unreached", STATUS_COLORS["never-reached"]
        else:
            cls, color = "tried", MUTED_COLOR
        x1, y1, x2, y2 = left(u) + width[u], mid_y(u), left(v), mid_y(v)
        bend = (x2 - x1) / 2
        parts.append(f'<path class="sv-edge sv-edge-{cls}" d="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} '
                     f'{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" fill="none" stroke="{color}"/>')
    for n in [*shown, *([BONUS_NODE] if bonus else [])]:
        x, y = left(n), mid_y(n) - PILL_HEIGHT / 2
        if n == BONUS_NODE:
            fill = ring = KIND_COLORS[step.bonus_kind]
            name = step.bonus_kind
            hover = (f"{bonus_label} (id {step.bonus_token}) · {step.bonus_kind} token from the target\n"
                     f"target p = {fmt_prob(step.bonus_prob)}\nclick for its card")
        else:
            name = STATUS_NAMES[int(step.status[n])]
            fill, ring = STATUS_COLORS[name], source_color(step.tree.source[n])
            hover = _node_hover(step, n, labels[n], int(hidden_below[n]))
            if step.tree.source[n] == USER_SOURCE:
                hover = f"{EDIT_MARK} your edit\n{hover}"
        on_path_cls = " sv-on-path" if n in on_path else ""
        edited = n != BONUS_NODE and step.tree.source[n] == USER_SOURCE
        dash = f' stroke-dasharray="{EDIT_DASH}"' if edited else ""
        on_path_cls += " sv-edited" if edited else ""
        parts.append(
            f'<g class="sv-node sv-{name}{on_path_cls}" data-node="{n}" data-step="{step.step}" tabindex="0" '
            f'role="button"><title>{html.escape(hover)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width[n]:.1f}" height="{PILL_HEIGHT}" rx="{PILL_HEIGHT / 2}" '
            f'fill="{fill}" stroke="{ring}" stroke-width="3"{dash}/>'
            f'<text x="{x + PILL_PAD:.1f}" y="{mid_y(n) + 4:.1f}" fill="{status_text_color(name)}">'
            f'{html.escape(text[n])}</text></g>')
        if n != BONUS_NODE and hidden_below[n]:
            parts.append(f'<text class="sv-more" x="{x + width[n] + 4:.1f}" y="{mid_y(n) - PILL_HEIGHT / 2 - 1:.1f}" '
                         f'fill="{SUBTLE_COLOR}">+{int(hidden_below[n])}</text>')
    svg_w = MARGIN * 2 + max_col * pitch + max(width[n] for n in pos if pos[n][0] == max_col) + COLUMN_GAP
    svg_h = MARGIN * 2 + n_rows * ROW_HEIGHT
    heading = html.escape(title or tree_title(step, len(shown), max_depth))
    collapsed = bool(hidden_below.any())
    return (f'<div class="sv-tree"><div class="sv-tree-title">{heading}</div>'
            f'{intervention_note(step, labels, token_labels)}{_legend(step, shown, collapsed)}'
            f'<div class="sv-tree-scroll" style="max-height:{SCROLL_HEIGHT}px">'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{svg_w:.0f}" height="{svg_h:.0f}" '
            f'font-family="{FONT}" font-size="12">{"".join(parts)}</svg></div>'
            f'<div class="sv-tree-hint">Click a node for its card (or focus it and press Enter); hover for its '
            f'probabilities.</div></div>')


def empty_tree_html(message: str) -> str:
    return f'<div class="sv-tree sv-tree-empty">{html.escape(message)}</div>'


# the page's one listener on the tree component: event delegation, so every re-render keeps working
TREE_CLICK_JS = """
const open = (node) => {
  element.querySelectorAll('.sv-selected').forEach((n) => n.classList.remove('sv-selected'));
  node.classList.add('sv-selected');
  trigger('click', {node: node.dataset.node, step: Number(node.dataset.step)});
};
element.addEventListener('click', (e) => {
  const node = e.target.closest('[data-node]');
  if (node && element.contains(node)) open(node);
});
element.addEventListener('keydown', (e) => {
  const node = e.target.closest('[data-node]');
  if (node && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); open(node); }
});
"""


def empty_figure(message: str, height: int = 260) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font=dict(size=14, color=SUBTLE_COLOR))
    fig.update_layout(height=height, xaxis=dict(visible=False), yaxis=dict(visible=False), plot_bgcolor=BACKGROUND,
                      margin=dict(l=10, r=10, t=10, b=10))
    return fig
