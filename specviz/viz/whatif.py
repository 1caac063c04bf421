"""The what-if panel: what each tree shape would have done on the current prompt, ranked by the speedup
the cost model predicts for it on this machine (or by τ when there is no cost curve).

Takes plain dict rows (name, family, nodes, steps, tokens, tau, detail; with a curve also speedup,
verify_cost, draft_ms, draft_how, and the flags own_setting / is_run) so it needs neither torch nor the
decoding package.
"""
from __future__ import annotations

import html

import plotly.graph_objects as go

from .palette import AR_REFERENCE_COLOR, BACKGROUND, INK_COLOR, WHATIF_RUN_COLOR
from .palette import WHATIF_FAMILY_COLORS as FAMILY_COLORS

OWN = " (this run's setting)"


def _predicted(rows: list) -> bool:
    return bool(rows) and all(r.get("speedup") is not None for r in rows)


def ranked(rows: list) -> list:
    """Best first: by predicted speedup when every row has one, else by τ."""
    key = "speedup" if _predicted(rows) else "tau"
    return sorted(rows, key=lambda r: -r[key])


def _label(r: dict) -> str:
    return r["name"] + (OWN if r.get("own_setting") else "")


def _nodes(r: dict) -> str:
    return "drafts nothing (= AR)" if r["nodes"] < 0.05 else f"{r['nodes']:.0f} nodes"


def _draft(r: dict) -> str:
    ms = r.get("draft_ms")
    return ("not counted" if ms is None else f"{ms:.0f} ms") + f" ({r.get('draft_how', '')})"


def whatif_figure(rows: list, run_tau: float, run_label: str, measured: float | None = None) -> go.Figure:
    """Horizontal bars, best at the top: predicted speedup (1× = AR) with a curve, else τ. `measured`: the
    run's measured speedup, written on its own bar."""
    rows = ranked(rows)
    by_speed = _predicted(rows)
    fig = go.Figure()
    for family, color in FAMILY_COLORS.items():
        sub = [r for r in rows if r["family"] == family]
        if not sub:
            continue
        if by_speed:
            text = [f"{r['speedup']:.2f}×" + (f" (measured {measured:.2f}×)" if r.get("is_run") and measured else "")
                    + f" · τ {r['tau']:.2f} · " + _nodes(r) for r in sub]
        else:
            text = [f"τ {r['tau']:.2f} · " + _nodes(r) for r in sub]
        hover = []
        for r in sub:
            h = (f"<b>{html.escape(_label(r))}</b><br>τ = {r['tau']:.3f} ({r['tokens']} tokens in {r['steps']} target "
                 f"forwards)<br>{r['nodes']:.1f} drafted nodes verified per step")
            if by_speed:
                h += (f"<br>predicted speedup {r['speedup']:.2f}× = τ ÷ (verify {r['verify_cost']:.2f} AR steps + "
                      f"drafting)<br>drafting: {html.escape(_draft(r))}")
            hover.append(h + f"<br>{html.escape(r['detail'])}")
        fig.add_trace(go.Bar(
            y=[_label(r) for r in sub], x=[r["speedup"] if by_speed else r["tau"] for r in sub], orientation="h",
            name=family, marker_color=color, marker_line=dict(width=[2 if r.get("own_setting") else 0 for r in sub],
                                                              color=INK_COLOR),
            text=text, textposition="outside", hovertext=hover, hoverinfo="text",
        ))
    if by_speed:
        fig.add_vline(x=1.0, line=dict(color=AR_REFERENCE_COLOR, width=1.5, dash="dot"),
                      annotation_text="AR = 1×", annotation_position="top")
        top = max([r["speedup"] for r in rows] + [1.0])
        title = "predicted speedup over AR on this machine (higher is better)"
    else:
        fig.add_vline(x=run_tau, line=dict(color=WHATIF_RUN_COLOR, width=2, dash="dash"),
                      annotation_text=f"{run_label}: τ {run_tau:.2f}", annotation_position="top")
        top = max([r["tau"] for r in rows] + [run_tau])
        title = "τ = tokens per target forward (higher is better)"
    fig.update_layout(
        height=max(300, 26 * len(rows) + 120), barmode="overlay", margin=dict(l=10, r=40, t=40, b=30),
        xaxis=dict(title=title, range=[0, 1.45 * top]),  # room for the bar labels
        yaxis=dict(autorange="reversed", categoryorder="array", categoryarray=[_label(r) for r in rows]),
        plot_bgcolor=BACKGROUND, legend=dict(orientation="h", y=-0.12),
    )
    return fig


def whatif_table_html(rows: list, run_tau: float, run_label: str, measured: float | None = None) -> str:
    rows = ranked(rows)
    by_speed = _predicted(rows)
    best = next((r for r in rows if not r.get("is_run")), None)
    run = next((r for r in rows if r.get("is_run")), None)
    head = f"<p><b>{html.escape(run_label)}</b>: τ {run_tau:.3f}"
    if by_speed and run is not None:
        head += f", predicted {run['speedup']:.2f}×" + (f", measured {measured:.2f}×" if measured is not None else "")
    head += "."
    if best is not None and by_speed:
        drafting = next((r for r in rows if not r.get("is_run") and r["nodes"] >= 0.05), None)
        if best["nodes"] < 0.05:
            head += (f" Best predicted: <b>{html.escape(best['name'])}</b>, which found nothing to draft here, so it "
                     "is AR itself (1×)")
            if drafting is not None:
                head += (f"; the best shape that drafts is <b>{html.escape(drafting['name'])}</b>, "
                         f"{drafting['speedup']:.2f}×")
            head += "."
        else:
            head += (f" Best predicted: <b>{html.escape(best['name'])}</b>, {best['speedup']:.2f}× (τ {best['tau']:.3f} "
                     f"with {best['nodes']:.0f} nodes per step).")
        head += (" Predicted speedup = τ ÷ what one step costs in AR steps: "
                 "verifying the row's nodes plus the root (this machine's cost curve) plus drafting them. A bigger tree "
                 "raises τ but also the verify cost; on a CPU each node costs real time, on a GPU up to ~64 are nearly "
                 "free.")
        if any(r.get("draft_ms") is None for r in rows):
            head += " Rows drafted by another model than this run's leave drafting out, so they read high."
    elif best is not None:
        head += (f" Best replayed: <b>{html.escape(best['name'])}</b>, τ {best['tau']:.3f} with "
                 f"{best['nodes']:.0f} nodes per step. More nodes raise τ only while the extra verify cost "
                 "stays small: on a CPU each node costs real time, on a GPU up to ~64 are nearly free.")
    lines = [head + "</p>", "<table class='sv-metrics'><tr><th>#</th><th>shape</th><th>family</th>"
             + ("<th>predicted speedup</th>" if by_speed else "")
             + "<th>τ</th><th>nodes/step</th>"
             + ("<th>verify cost (AR steps)</th><th>drafting per step</th>" if by_speed else "")
             + "<th>target forwards</th><th>how</th></tr>"]
    for i, r in enumerate(rows, 1):
        name = html.escape(_label(r), quote=False)
        if r.get("is_run") or r.get("own_setting"):
            name = f"<b>{name}</b>"
        cells = [str(i), name, html.escape(r["family"])]
        if by_speed:
            speed = f"{r['speedup']:.2f}×"
            if r.get("is_run") and measured is not None:
                speed = f"<b>{speed}</b> (measured {measured:.2f}×)"
            cells.append(speed)
        cells += [f"{r['tau']:.3f}", f"{r['nodes']:.1f}"]
        if by_speed:
            cells += [f"{r['verify_cost']:.2f}", html.escape(_draft(r))]
        cells += [str(r["steps"]), html.escape(r["detail"])]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)
