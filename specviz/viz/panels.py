"""HTML panels: the coloured generated text and the metrics table, plus the depth chart."""
from __future__ import annotations

import html

import plotly.graph_objects as go

from .palette import (ACCEPT_RATE_COLOR, BACKGROUND, EDIT_MARK, INK_COLOR, KIND_COLORS, KIND_LABELS, MUTED_COLOR,
                      STATUS_COLORS)
from .tree import empty_figure


def legend_html(edited: bool = False) -> str:
    items = "".join(
        f'<span><i class="sv-swatch" style="background:{c}"></i>{html.escape(KIND_LABELS[k])}</span>'
        for k, c in KIND_COLORS.items()
    )
    if edited:
        items += (f'<span style="border-bottom:2px dashed {INK_COLOR}">{EDIT_MARK} committed at the step you '
                  f'edited</span>')
    return f'<div class="sv-legend">{items}</div>'


def token_span(piece: str, t, outlined: bool = False, edited: bool = False) -> str:
    """The span of one generated token (`t` its `CommittedToken`); the current step's tokens are outlined, and
    those committed by a step a user edited (`trace.Intervention`) underlined dashed."""
    title = (f"step {t.step} · {KIND_LABELS.get(t.kind, t.kind)} · depth {t.depth} · target p {t.target_prob:.3f}"
             f" · id {t.token_id}" + (f" · {EDIT_MARK} committed after your edit" if edited else ""))
    styles = ([f"outline:1px solid {INK_COLOR}"] if outlined else []) + \
        ([f"border-bottom:2px dashed {INK_COLOR}"] if edited else [])
    style = f' style="{";".join(styles)}"' if styles else ""
    cls = " sv-edited" if edited else ""
    return (f'<span class="sv-tok sv-{t.kind}{cls}" data-step="{t.step}" title="{html.escape(title)}"{style}>'
            f"{html.escape(piece)}</span>")


def text_html(spans: list, edited: bool = False) -> str:
    """The generated-text panel around already built token spans (`edited`: some came after a user's edit)."""
    if not spans:
        return legend_html() + f'<div class="sv-text" style="color:{MUTED_COLOR}">The generated text appears here.</div>'
    return legend_html(edited) + '<div class="sv-text">' + "".join(spans) + "</div>"


def generated_text_html(pieces: list, tokens: list, current_step: int | None = None) -> str:
    """`pieces[i]` is the text of generated token i and `tokens[i]` its `CommittedToken`."""
    return text_html([token_span(piece, t, current_step is not None and t.step == current_step)
                      for piece, t in zip(pieces, tokens)])


def _row(name: str, value: str, note: str = "") -> str:
    note = f' <span style="color:{MUTED_COLOR}">{html.escape(note)}</span>' if note else ""
    return f"<tr><td>{html.escape(name)}</td><td><b>{html.escape(value)}</b>{note}</td></tr>"


def metrics_html(summary: dict, speedup: dict | None, backend: str, lossless: bool, finish: str) -> str:
    """`speedup`: {"ratio", "ar_s", "method_s", "matches_ar" (bool or None), "how"} once measured."""
    rows = [
        _row("τ (mean accepted length)", f"{summary['tau']:.2f}", "tokens per target forward, bonus included"),
        _row("τ drafts only", f"{summary['tau_drafts_only']:.2f}", "accepted drafts per target forward"),
    ]
    if summary["acceptance_rate"] is not None:
        rows.append(_row("acceptance rate", f"{summary['acceptance_rate']:.1%}", f"{summary['accepted']} of {summary['drafted']} drafted"))
    rows += [
        _row("tokens", str(summary["new_tokens"]), f"in {summary['steps']} steps" + (f", stopped at {finish}" if finish else "")),
        _row("target forwards", str(summary["target_forwards"]), f"+ {summary['draft_forwards']} drafter forwards"),
        _row("tok/s", f"{summary['tok_per_s']:.1f}", f"draft {summary['draft_ms']:.0f} ms + verify {summary['verify_ms']:.0f} ms"),
    ]
    if speedup is None:
        rows.append(_row("speedup vs AR", "…", "measured when the run finishes"))
    else:
        rows.append(_row("speedup vs AR", f"{speedup['ratio']:.2f}×", speedup["how"]))
        if speedup.get("matches_ar") is not None:
            rows.append(_row("greedy output == AR", "yes ✓" if speedup["matches_ar"] else "NO ✗", "token for token"))
    rows.append(_row("verification", "lossless" if lossless else "LOSSY", f"backend: {backend}"))
    return '<table class="sv-metrics">' + "".join(rows) + "</table>"


def depth_chart(summary: dict) -> go.Figure:
    """Per depth: how often the step's accepted path got that deep, and the per-node acceptance rate."""
    rates = summary["acceptance_by_depth"]
    if not rates:
        return empty_figure("Acceptance by depth appears once something is drafted", height=220)
    reach = summary.get("path_reach_by_depth") or [None] * len(rates)
    xs = list(range(1, len(rates) + 1))
    fig = go.Figure()
    fig.add_trace(go.Bar(
        x=xs, y=[r if r is not None else 0.0 for r in reach], name="steps reaching this depth",
        marker_color=STATUS_COLORS["accepted"], text=[f"{r:.0%}" if r is not None else "–" for r in reach],
        textposition="outside",
        hovertemplate="depth %{x}: the accepted path reached it in %{y:.1%} of the steps that drafted this deep"
                      "<extra></extra>",
    ))
    fig.add_trace(go.Bar(
        x=xs, y=[r if r is not None else 0.0 for r in rates], name="accepted ÷ reached nodes",
        marker_color=ACCEPT_RATE_COLOR, text=[f"{r:.0%}" if r is not None else "–" for r in rates], textposition="outside",
        hovertemplate="depth %{x}: %{y:.1%} of the nodes verification reached were accepted<extra></extra>",
    ))
    fig.update_layout(
        title="Acceptance by depth",
        height=240,
        barmode="group",
        xaxis=dict(title="draft depth", dtick=1),
        yaxis=dict(range=[0, 1.18], tickformat=".0%"),
        margin=dict(l=40, r=10, t=45, b=40),
        plot_bgcolor=BACKGROUND,
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom", font=dict(size=10)),
    )
    return fig
