"""The what-if panel: τ each tree shape would have reached on the current prompt.

Takes plain dict rows (name, family, nodes, steps, tokens, tau, detail) so it
needs neither torch nor the decoding package.
"""
from __future__ import annotations

import html

import plotly.graph_objects as go

from .palette import BACKGROUND, WHATIF_RUN_COLOR
from .palette import WHATIF_FAMILY_COLORS as FAMILY_COLORS


def whatif_figure(rows: list, run_tau: float, run_label: str) -> go.Figure:
    fig = go.Figure()
    for family, color in FAMILY_COLORS.items():
        sub = [r for r in rows if r["family"] == family]
        if not sub:
            continue
        fig.add_trace(go.Bar(
            y=[r["name"] for r in sub], x=[r["tau"] for r in sub], orientation="h", name=family,
            marker_color=color,
            text=[f"τ {r['tau']:.2f} · {r['nodes']:.0f} nodes" for r in sub], textposition="outside",
            hovertext=[f"<b>{html.escape(r['name'])}</b><br>τ = {r['tau']:.3f} ({r['tokens']} tokens in {r['steps']} "
                       f"target forwards)<br>{r['nodes']:.1f} drafted nodes verified per step<br>{html.escape(r['detail'])}"
                       for r in sub],
            hoverinfo="text",
        ))
    fig.add_vline(x=run_tau, line=dict(color=WHATIF_RUN_COLOR, width=2, dash="dash"),
                  annotation_text=f"{run_label}: τ {run_tau:.2f}", annotation_position="top")
    fig.update_layout(
        height=max(300, 26 * len(rows) + 120), barmode="group", margin=dict(l=10, r=40, t=40, b=30),
        xaxis=dict(title="τ = tokens per target forward (higher is better)",
                   range=[0, 1.3 * max([r["tau"] for r in rows] + [run_tau])]),  # room for the bar labels
        yaxis=dict(autorange="reversed"), plot_bgcolor=BACKGROUND, legend=dict(orientation="h", y=-0.12),
    )
    return fig


def whatif_table_html(rows: list, run_tau: float, run_label: str) -> str:
    best = max(rows, key=lambda r: r["tau"]) if rows else None
    lines = [f"<p><b>{html.escape(run_label)}</b>: τ {run_tau:.3f}."
             + (f" Best replayed: <b>{html.escape(best['name'])}</b>, τ {best['tau']:.3f} with "
                f"{best['nodes']:.0f} nodes per step. More nodes raise τ only while the extra verify cost "
                "stays small: on a CPU each node costs real time, on a GPU up to ~64 are nearly free." if best else "")
             + "</p>",
             "<table class='sv-metrics'><tr><th>shape</th><th>family</th><th>τ</th><th>nodes/step</th>"
             "<th>target forwards</th><th>how</th></tr>"]
    for r in sorted(rows, key=lambda r: -r["tau"]):
        lines.append(f"<tr><td>{html.escape(r['name'])}</td><td>{r['family']}</td><td>{r['tau']:.3f}</td>"
                     f"<td>{r['nodes']:.1f}</td><td>{r['steps']}</td><td>{html.escape(r['detail'])}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)
