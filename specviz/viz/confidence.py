"""Per-position confidence: the current step's drafted positions, and a strip over the whole generation."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from ..trace import STATUS_NAMES, SpecStep
from .palette import (ACCEPT_PROB_COLOR, ACCEPT_PROB_EDGE_COLOR, BACKGROUND, DRAFT_COLOR, KIND_COLORS, KIND_LABELS,
                      STATUS_COLORS)
from .tree import accept_text, empty_figure, fmt_prob, tested


TICKS_SHOWN = 32  # above this many drafted nodes only every other (third …) token names its bar; hover names all


def _or_none(values) -> list:
    """Floats with NaN as None: plotly leaves a gap for None, where NaN would be drawn or read as 0."""
    return [float(v) if np.isfinite(v) else None for v in values]


def step_confidence_figure(step: SpecStep, labels: list) -> go.Figure:
    """For each drafted node: target p as a bar coloured by outcome, draft q as a tick on it, and the acceptance
    probability it was tested with. Untested nodes (never reached, or after an accepted sibling) have no
    acceptance probability, so they get no diamond: never a 1.0 or a 0 they did not have.

    One bar per node (not a bar each for p and q) keeps 64 nodes readable; past `TICKS_SHOWN` the axis names
    every other node, and the hover names each."""
    nodes = list(range(1, step.tree.size))
    if not nodes:
        return empty_figure(f"Step {step.step}: nothing drafted; the target produced one token", height=220)
    depth = step.tree.depth
    xs = list(range(len(nodes)))
    names = [html.escape(str(labels[i])) for i in nodes]
    was_tested = tested(step)
    accept = [step.accept_probs[i] if was_tested[i] else np.nan for i in nodes]
    notes = [f"<b>{names[x]}</b> · node {i}, depth {int(depth[i])} · {STATUS_NAMES[int(step.status[i])]}"
             f"<br>draft q = {fmt_prob(step.tree.draft_probs[i])}, target p = {fmt_prob(step.target_probs[i])}"
             f"<br>acceptance = {accept_text(step, i)}" for x, i in enumerate(nodes)]
    # node i's token was scored by its parent's row, so its position's uncertainty is the parent's
    if step.target_entropy.shape[0] == step.tree.size:
        rows = [int(step.tree.parent[i]) for i in nodes]
        notes = [f"{n}<br>target entropy here {step.target_entropy[r]:.2f} nats, "
                 f"top-2 gap {step.target_top2_gap[r]:.2f}" for n, r in zip(notes, rows)]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=xs, y=_or_none(step.target_probs[nodes]), name="target p (colour: outcome)",
                         marker_color=[STATUS_COLORS[STATUS_NAMES[int(step.status[i])]] for i in nodes],
                         customdata=notes, hovertemplate="%{customdata}<extra></extra>"))
    fig.add_trace(go.Scatter(x=xs, y=_or_none(step.tree.draft_probs[nodes]), name="draft q", mode="markers",
                             marker=dict(symbol="line-ew", size=14, line=dict(width=3, color=DRAFT_COLOR)),
                             customdata=notes, hovertemplate="%{customdata}<extra></extra>"))
    fig.add_trace(go.Scatter(x=xs, y=_or_none(accept), name="acceptance probability (tested nodes)", mode="markers",
                             marker=dict(symbol="diamond", size=9, color=ACCEPT_PROB_COLOR,
                                         line=dict(width=1, color=ACCEPT_PROB_EDGE_COLOR)),
                             customdata=notes, hovertemplate="%{customdata}<extra></extra>"))
    every = -(-len(nodes) // TICKS_SHOWN)
    ticks = xs[::every]
    fig.update_layout(
        title=dict(text=f"Step {step.step}: per-position probabilities of the drafted nodes", x=0, xanchor="left",
                   y=0.98, yanchor="top"),
        height=320,
        bargap=0.15,
        xaxis=dict(tickvals=ticks, ticktext=[_tick(names[x]) for x in ticks], tickangle=-50 if len(nodes) > 12 else 0,
                   range=[-0.6, len(nodes) - 0.4]),
        yaxis=dict(range=[0, 1.05], title="probability"),
        margin=dict(l=50, r=10, t=70, b=70),
        legend=dict(orientation="h", x=0, y=1.02, xanchor="left", yanchor="bottom"),
        plot_bgcolor=BACKGROUND,
    )
    return fig


def _tick(name: str, limit: int = 10) -> str:
    text = html.unescape(name)
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "…")


def running_strip_figure(tokens: list, labels: list, current_step: int | None = None, first: int = 0,
                         title: str | None = None) -> go.Figure:
    """One bar per generated token: height = target probability when committed, colour = how it was committed.

    `tokens` are `trace.CommittedToken`s; `labels[i]` is the display text of token i. `first` is the generated
    position of `tokens[0]`, for a trailing window of a longer generation (the x axis keeps the positions).
    """
    if not tokens:
        return empty_figure("No tokens yet", height=200)
    fig = go.Figure()
    for kind, color in KIND_COLORS.items():
        idx = [i for i, t in enumerate(tokens) if t.kind == kind]
        if not idx:
            continue
        fig.add_trace(
            go.Bar(
                x=[first + i for i in idx],
                y=[np.nan_to_num(tokens[i].target_prob, nan=0.0) for i in idx],
                name=KIND_LABELS[kind].split(" (")[0],
                marker=dict(
                    color=color,
                    opacity=[1.0 if current_step is None or tokens[i].step == current_step else 0.45 for i in idx],
                ),
                customdata=[[html.escape(str(labels[i])), tokens[i].step, tokens[i].depth] for i in idx],
                hovertemplate="#%{x} %{customdata[0]}<br>step %{customdata[1]}, depth %{customdata[2]}"
                "<br>target p = %{y:.3f}<extra>" + kind + "</extra>",
            )
        )
    fig.update_layout(
        title=title or "Whole generation: target probability of each committed token",
        height=220,
        bargap=0.05,
        xaxis=dict(title="generated token"),
        yaxis=dict(range=[0, 1.05]),
        margin=dict(l=40, r=10, t=45, b=40),
        legend=dict(orientation="h", y=1.18, x=1, xanchor="right"),
        plot_bgcolor=BACKGROUND,
    )
    return fig
