"""Per-position confidence: the current step's drafted positions, and a strip over the whole generation."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from ..trace import STATUS_NAMES, SpecStep
from .palette import (ACCEPT_PROB_COLOR, ACCEPT_PROB_EDGE_COLOR, BACKGROUND, DRAFT_COLOR, KIND_COLORS, KIND_LABELS,
                      STATUS_COLORS)
from .tree import empty_figure


def step_confidence_figure(step: SpecStep, labels: list) -> go.Figure:
    """For each drafted node: draft p, target p (coloured by outcome) and the acceptance probability."""
    nodes = list(range(1, step.tree.size))
    if not nodes:
        return empty_figure(f"Step {step.step}: nothing drafted; the target produced one token", height=220)
    depth = step.tree.depth
    xs = [f"{i}·d{int(depth[i])}<br>{html.escape(str(labels[i]))}" for i in nodes]
    status = [STATUS_NAMES[int(step.status[i])] for i in nodes]
    # node i's token was scored by its parent's row, so its position's uncertainty is the parent's
    if step.target_entropy.shape[0] == step.tree.size:
        rows = [int(step.tree.parent[i]) for i in nodes]
        status = [f"{s}<br>target entropy here {step.target_entropy[r]:.2f} nats, "
                  f"top-2 gap {step.target_top2_gap[r]:.2f}" for s, r in zip(status, rows)]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=xs, y=step.tree.draft_probs[nodes], name="draft p", marker_color=DRAFT_COLOR,
                         hovertemplate="draft p = %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Bar(x=xs, y=np.nan_to_num(step.target_probs[nodes]), name="target p",
                         marker_color=[STATUS_COLORS[STATUS_NAMES[int(step.status[i])]] for i in nodes], customdata=status,
                         hovertemplate="target p = %{y:.3f}<br>%{customdata}<extra></extra>"))
    fig.add_trace(go.Scatter(x=xs, y=np.nan_to_num(step.accept_probs[nodes]), name="accept p", mode="markers",
                             marker=dict(symbol="diamond", size=11, color=ACCEPT_PROB_COLOR, line=dict(width=1, color=ACCEPT_PROB_EDGE_COLOR)),
                             hovertemplate="accept p = %{y:.3f}<extra></extra>"))
    fig.update_layout(
        title=f"Step {step.step}: per-position probabilities (bar colour of target p = outcome)",
        barmode="group",
        height=300,
        yaxis=dict(range=[0, 1.05], title="probability"),
        margin=dict(l=40, r=10, t=50, b=40),
        legend=dict(orientation="h", y=1.12, x=1, xanchor="right"),
        plot_bgcolor=BACKGROUND,
    )
    return fig


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
