"""The draft tree of one step, with the accepted path, rejected branches and the bonus token.

Layout: depth runs left to right; each leaf gets its own row in depth-first
order (networkx's DFS over the tree), and an inner node sits at the mean row
of its leaves. Subtrees therefore occupy contiguous bands and edges never
cross, which keeps 60+ node trees legible; the figure grows with the leaves.
"""
from __future__ import annotations

import html
import math

import networkx as nx
import numpy as np
import plotly.graph_objects as go

from ..trace import ACCEPTED, REJECTED, ROOT, STATUS_NAMES, UNREACHED, SpecStep
from .palette import BACKGROUND, INK_COLOR, KIND_COLORS, MUTED_COLOR, STATUS_COLORS, SUBTLE_COLOR, source_color

BONUS_NODE = "bonus"


LABELLED_NODES = 40  # above this many visible nodes only the root and the accepted path carry text


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
    """Node -> (depth, row): leaves in DFS order, parents centred over their leaves."""
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
            rows[node] = float(np.mean([rows[c] for c in g.successors(node)]))
    return {n: (depth[n], rows[n]) for n in g.nodes}


def _fmt(p) -> str:
    return "–" if p is None or not np.isfinite(p) else f"{p:.3f}"


def tree_figure(step: SpecStep, labels: list, bonus_label: str, title: str = "", max_depth: int | None = None) -> go.Figure:
    """`labels[i]` is the display text of node i; `bonus_label` that of the bonus token.

    Nodes deeper than `max_depth` collapse into a "+n" marker beside their nearest
    visible ancestor. Big trees keep text only on the root and the accepted path;
    every node still has its hover card."""
    max_depth = view_depth(max_depth)
    labels = [html.escape(str(t)) for t in labels]  # token text is data: never markup in the hover cards
    bonus_label = html.escape(str(bonus_label))
    shown, hidden_below = visible_nodes(step, max_depth)
    g = _graph(step, shown)
    pos = tidy_layout(g)
    big = len(shown) > LABELLED_NODES
    n_rows = 1 + max(r for _, r in pos.values())
    on_path = {0, *map(int, step.accepted_path)}
    fig = go.Figure()

    # edges: the accepted path bold, edges into never-reached nodes faint and dashed
    groups = {"path": ([], []), "tried": ([], []), "unreached": ([], []), "bonus": ([], [])}
    for u, v in g.edges:
        if v == BONUS_NODE:
            key = "bonus"
        elif u in on_path and v in on_path:
            key = "path"
        elif step.status[v] == UNREACHED:
            key = "unreached"
        else:
            key = "tried"
        xs, ys = groups[key]
        xs += [pos[u][0], pos[v][0], None]
        ys += [pos[u][1], pos[v][1], None]
    styles = {
        "path": dict(color=STATUS_COLORS["accepted"], width=4),
        "tried": dict(color=MUTED_COLOR, width=1.5),
        "unreached": dict(color=STATUS_COLORS["never-reached"], width=1, dash="dot"),
        "bonus": dict(color=KIND_COLORS.get(step.bonus_kind, MUTED_COLOR), width=3, dash="dash"),
    }
    for key, (xs, ys) in groups.items():
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=styles[key], hoverinfo="skip", showlegend=False))

    depth = step.tree.depth
    for status in (ROOT, ACCEPTED, REJECTED, UNREACHED):
        nodes = [i for i in shown if step.status[i] == status]
        if not nodes:
            continue
        name = STATUS_NAMES[status]
        hover = [
            f"<b>{labels[i]!s}</b> (id {int(step.tree.token_ids[i])})<br>node {i} · depth {int(depth[i])} · {name}"
            f"<br>proposed by: {step.tree.source[i]}"
            f"<br>draft p = {_fmt(step.tree.draft_probs[i])}"
            f"<br>target p = {_fmt(step.target_probs[i])}"
            f"<br>accept p = {_fmt(step.accept_probs[i])}"
            + (f"<br>+{int(hidden_below[i])} deeper nodes collapsed" if hidden_below[i] else "")
            for i in nodes
        ]
        labelled = status in (ROOT, ACCEPTED) or not big
        fig.add_trace(
            go.Scatter(
                x=[pos[i][0] for i in nodes],
                y=[pos[i][1] for i in nodes],
                mode="markers+text",
                name=name,
                text=[_short(labels[i]) if labelled else "" for i in nodes],
                textposition="top center",
                textfont=dict(size=13 if not big else 11, color=INK_COLOR if status != UNREACHED else MUTED_COLOR),
                marker=dict(
                    size=(16 if not big else 10) if status != ROOT else 20,
                    color=STATUS_COLORS[name],
                    line=dict(color=[source_color(step.tree.source[i]) for i in nodes], width=3),
                    symbol="circle" if status != ROOT else "square",
                ),
                hovertext=hover,
                hoverinfo="text",
            )
        )
    collapsed = [i for i in shown if hidden_below[i]]
    if collapsed:
        fig.add_trace(go.Scatter(
            x=[pos[i][0] + 0.45 for i in collapsed], y=[pos[i][1] for i in collapsed], mode="markers+text",
            name="collapsed", text=[f"+{int(hidden_below[i])}" for i in collapsed], textposition="middle right",
            textfont=dict(size=11, color=SUBTLE_COLOR), marker=dict(symbol="triangle-right", size=10, color=MUTED_COLOR),
            hovertext=[f"{int(hidden_below[i])} deeper nodes hidden; raise 'show depth' to see them" for i in collapsed],
            hoverinfo="text"))
    # the source legend: the ring colour says which drafter proposed a node
    for src in sorted(set(step.tree.source[i] for i in shown) - {"root"}):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"from {src}",
                                 marker=dict(size=12, color=BACKGROUND, line=dict(color=source_color(src), width=3))))
    if has_bonus(step):
        _add_bonus_star(fig, step, bonus_label, pos[BONUS_NODE])
    height = int(min(1600, max(300, (46 if not big else 22) * n_rows + 120)))
    fig.update_layout(
        title=title or (f"Step {step.step}: draft tree ({step.tree.size - 1} drafted, {step.n_accepted} accepted"
                        + (f"; {step.tree.size - len(shown)} collapsed below depth {max_depth}" if len(shown) < step.tree.size else "")
                        + ")"),
        height=height,
        margin=dict(l=20, r=20, t=50, b=30),
        xaxis=dict(title="depth", dtick=1, zeroline=False, showgrid=False),
        yaxis=dict(visible=False, autorange="reversed"),
        plot_bgcolor=BACKGROUND,
        legend=dict(orientation="h", y=-0.08),
        hoverlabel=dict(align="left"),
        dragmode="pan",
    )
    return fig


def _add_bonus_star(fig: go.Figure, step: SpecStep, bonus_label: str, at: tuple) -> None:
    color = KIND_COLORS[step.bonus_kind]
    fig.add_trace(
        go.Scatter(
            x=[at[0]],
            y=[at[1]],
            mode="markers+text",
            name=step.bonus_kind,
            text=[_short(bonus_label)],
            textposition="top center",
            textfont=dict(size=11, color=color),
            marker=dict(size=20, color=color, symbol="star"),
            hovertext=[
                f"<b>{bonus_label}</b> (id {step.bonus_token})<br>{step.bonus_kind} token from the target"
                f"<br>target p = {_fmt(step.bonus_prob)}"
            ],
            hoverinfo="text",
        )
    )


def _short(label: str, limit: int = 10) -> str:
    """An escaped label cut to `limit` visible characters (cut before escaping, so no entity is split)."""
    text = html.unescape(label)
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "…")


def empty_figure(message: str, height: int = 260) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font=dict(size=14, color=SUBTLE_COLOR))
    fig.update_layout(height=height, xaxis=dict(visible=False), yaxis=dict(visible=False), plot_bgcolor=BACKGROUND,
                      margin=dict(l=10, r=10, t=10, b=10))
    return fig
