"""The Compare tab's views: lanes racing on one prompt, drawn from plain per-lane series (no torch here).

A lane is a dict with `label`, `kind` ("speculative" or "lattice") and three per-step series of equal length:
`tokens` (tokens committed after each step), `forwards` (model forwards so far: target forwards for a
speculative lane, forwards for a lattice lane) and `wall_s` (decode seconds so far, as the decoder timed
itself). `at` is the step on show (-1: none yet). Everything else a view needs is passed in explicitly.
"""
from __future__ import annotations

import html

import plotly.graph_objects as go

from .palette import AR_REFERENCE_COLOR, BACKGROUND, KIND_COLORS, RUN_COLORS, STATUS_COLORS, SUBTLE_COLOR
from .tree import empty_figure

RACE_EMPTY = "Pick two to four lanes and press Run: every lane steps once per round"
DIFFUSION_DIFFERS = ("a diffusion lane decodes with its own model (a masked diffusion LM, not the AR target) and "
                     "fills cells in parallel, so its text is not AR's: it is expected to differ")


def lane_color(i: int) -> str:
    return RUN_COLORS[i % len(RUN_COLORS)]


def race_figure(lanes: list, x: str = "forwards") -> go.Figure:
    """Tokens committed against model forwards (`x="forwards"`) or decode seconds (`x="wall_s"`), one line per
    lane from (0, 0), each lane's step on show marked."""
    if not any(lane["tokens"] for lane in lanes):
        return empty_figure(RACE_EMPTY, height=300)
    fig = go.Figure()
    top_x = 0.0
    for i, lane in enumerate(lanes):
        xs, ys = [0, *lane[x]], [0, *lane["tokens"]]
        top_x = max(top_x, xs[-1])
        name = html.escape(str(lane["label"]))
        color = lane_color(i)
        unit = "forwards" if x == "forwards" else "s"
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers" if len(xs) <= 80 else "lines", name=name,
            line=dict(color=color, width=2.5), marker=dict(size=4),
            hovertemplate=f"{name}<br>%{{y}} tokens after %{{x:.3~f}} {unit}<extra></extra>"))
        at = lane.get("at", -1)
        if 0 <= at < len(lane["tokens"]):
            fig.add_trace(go.Scatter(x=[lane[x][at]], y=[lane["tokens"][at]], mode="markers", showlegend=False,
                                     marker=dict(size=11, color=color, line=dict(color=BACKGROUND, width=2)),
                                     hoverinfo="skip"))
    if x == "forwards":
        fig.add_trace(go.Scatter(x=[0, top_x], y=[0, top_x], mode="lines", name="1 token per forward (AR)",
                                 line=dict(color=AR_REFERENCE_COLOR, dash="dash", width=1.5), hoverinfo="skip"))
        title = "Tokens against model forwards<br><sup>slope = τ · above the dashed line: > 1 token per forward</sup>"
        xaxis = "model forwards"
    else:
        title = "Tokens against wall-clock time<br><sup>decode seconds, as each decoder timed itself here</sup>"
        xaxis = "decode seconds"
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=340, plot_bgcolor=BACKGROUND,
                      xaxis=dict(title=xaxis, rangemode="tozero"), yaxis=dict(title="tokens committed", rangemode="tozero"),
                      margin=dict(l=50, r=10, t=60, b=80),
                      legend=dict(orientation="h", y=-0.28, x=0, yanchor="top", font=dict(size=11)))
    return fig


def first_divergence(ids: list, reference: list) -> int | None:
    """The first position where `ids` and `reference` differ over their common length, else None."""
    for j, (a, b) in enumerate(zip(ids, reference)):
        if a != b:
            return j
    return None


def equals_reference(ids: list, reference: list, stopped_at_limit: bool) -> bool:
    """Whether a lane's output is AR's: the same tokens where both have them, and the same length unless the lane
    stopped at its own token limit before AR did (then it is AR's prefix)."""
    if first_divergence(ids, reference) is not None:
        return False
    return len(ids) == len(reference) or (stopped_at_limit and len(ids) < len(reference))


def lane_result(label: str, tokens: int, forwards: int, wall_s: float, ar: dict | None, equals_ar) -> dict:
    """One lane's row of the table and of the API's JSON. The speedup is throughput over AR's throughput, both
    timed in this comparison (`ar`: {"tokens", "wall_s"} of the AR lane or of the AR reference decode); for
    lanes of AR's length it is AR's decode time over the lane's."""
    tok_s = tokens / wall_s if wall_s > 0 else 0.0
    speedup = None
    if ar is not None and ar["wall_s"] > 0 and ar["tokens"] > 0 and tok_s > 0:
        speedup = tok_s / (ar["tokens"] / ar["wall_s"])
    return {"label": label, "tokens": int(tokens), "forwards": int(forwards), "wall_s": float(wall_s),
            "tokens_per_forward": tokens / forwards if forwards else 0.0, "tok_s": tok_s,
            "speedup_vs_ar": speedup, "equals_ar": equals_ar}


def _fmt(v, pattern: str = "{:.2f}", none: str = "—") -> str:
    return none if v is None else pattern.format(v)


def table_html(rows: list, ar_how: str) -> str:
    """The comparison table: one row per lane (`lane_result` dicts plus `kind` and `steps`)."""
    if not rows:
        return ""
    body = []
    for i, r in enumerate(rows):
        eq = {True: "yes", False: "no"}.get(r["equals_ar"], "— (sampled)" if r.get("greedy") is False else "—")
        per = "τ" if r.get("kind") == "speculative" else "tokens / forward"
        body.append(
            f'<tr><td><span class="sv-swatch" style="background:{lane_color(i)}"></span><b>{html.escape(r["label"])}</b>'
            f'</td><td>{r.get("steps", "")}</td><td>{r["tokens"]}</td><td>{r["forwards"]}</td>'
            f'<td>{r["tokens_per_forward"]:.2f} <span class="sv-note">{per}</span></td><td>{r["wall_s"]:.2f}</td>'
            f'<td>{r["tok_s"]:.1f}</td><td>{_fmt(r["speedup_vs_ar"], "{:.2f}×")}</td><td>{eq}</td></tr>')
    head = ("<tr><th>lane</th><th>steps</th><th>tokens</th><th>forwards</th><th>τ or tokens / forward</th>"
            "<th>decode s</th><th>tok/s</th><th>speedup vs AR</th><th>greedy output = AR</th></tr>")
    return (f'<table class="sv-card sv-compare-table" id="cmp-table-inner">{head}{"".join(body)}</table>'
            f'<p class="sv-note">{html.escape(ar_how)}</p>')


def tokens_html(pieces: list, diverge_at: int | None, reference_piece: str | None = None) -> str:
    """A lane's tokens as text, the first divergent one marked (with AR's token in its hover)."""
    out = []
    for j, piece in enumerate(pieces):
        text = html.escape(piece)
        if diverge_at is not None and j == diverge_at:
            ref = "" if reference_piece is None else f"; AR has {html.escape(repr(reference_piece))}"
            out.append(f'<span class="sv-diverge" title="position {j}: first token that differs from AR{ref}" '
                       f'style="background:{KIND_COLORS["correction"]}40;border-bottom:2px solid '
                       f'{STATUS_COLORS["rejected"]}">{text or "∅"}</span>')
        elif diverge_at is not None and j > diverge_at:
            out.append(f'<span style="color:{SUBTLE_COLOR}">{text}</span>')
        else:
            out.append(text)
    return "".join(out)


def ar_diff_html(rows: list, reference_label: str | None) -> str:
    """Each lane's output against AR's. `rows`: dicts of label, kind, method, pieces (the lane's tokens' text),
    diverge_at, equals_ar (None: not known yet, or sampled), sampled, ar_pieces, finished."""
    if not rows:
        return '<div class="sv-note">The outputs are checked against plain AR once the lanes have steps.</div>'
    if reference_label is None:
        return ('<div class="sv-note">AR\'s output is not known yet: with no AR lane it is decoded after the race, '
                'for the check and the speedups.</div>')
    parts = [f'<div class="sv-note">Reference: {html.escape(reference_label)}. The first token that differs from '
             'AR is marked; speculative decoding keeps the target\'s greedy output, so its lanes must show none.</div>']
    for i, r in enumerate(rows):
        at = r["diverge_at"]
        if r.get("sampled"):
            verdict = "sampled run: its output need not equal greedy AR's"
        elif at is None:
            n = len(r["pieces"])
            verdict = (f"equals AR (all {n} tokens)" if r["equals_ar"] else
                       f"equals AR so far ({n} tokens)" if not r.get("finished") else
                       f"agrees with AR on its {n} tokens, but the lengths differ")
        else:
            verdict = f"differs from AR at position {at}"
        why = ""
        if r["kind"] == "lattice" and r.get("method") == "diffusion" and at is not None:
            why = f'<div class="sv-note">Why: {DIFFUSION_DIFFERS}.</div>'
        elif r["kind"] == "speculative" and at is not None and r["equals_ar"] is not None:
            why = ('<div class="sv-note">A greedy speculative lane that differs from AR is a bug: '
                   'verification should have kept the target\'s own tokens.</div>')
        ref_piece = r["ar_pieces"][at] if at is not None and at < len(r["ar_pieces"]) else None
        parts.append(
            f'<div class="sv-compare-diff" data-lane="{i}" style="margin:6px 0"><b style="color:{lane_color(i)}">'
            f'{html.escape(r["label"])}</b> · {html.escape(verdict)}'
            f'<div class="sv-text" style="font-size:13px;line-height:1.6">{tokens_html(r["pieces"], at, ref_piece)}</div>'
            f'{why}</div>')
    return "".join(parts)


def lanes_html(cards: list) -> str:
    """Each lane's current step in small (`view`: a tree or lattice HTML) above its text so far. `cards`: dicts of
    label, summary (one line), view, text."""
    if not cards:
        return f'<div class="sv-note">{html.escape(RACE_EMPTY)}.</div>'
    cells = []
    for i, c in enumerate(cards):
        cells.append(
            f'<div class="sv-compare-lane" data-lane="{i}" style="flex:1 1 300px;min-width:0;border-top:4px solid '
            f'{lane_color(i)};padding:4px 6px"><div style="font-weight:600">{html.escape(c["label"])}</div>'
            f'<div class="sv-note">{html.escape(c["summary"])}</div>'
            f'<div class="sv-compare-view" style="max-height:260px;overflow:auto;zoom:0.75">{c["view"]}</div>'
            f'<div class="sv-text" style="font-size:12px;line-height:1.5;max-height:120px;overflow:auto">'
            f'{html.escape(c["text"])}</div></div>')
    return f'<div class="sv-compare-lanes" style="display:flex;flex-wrap:wrap;gap:10px">{"".join(cells)}</div>'
