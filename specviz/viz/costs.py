"""The cost panel: this machine's verify-cost curve, the run's predicted speedup beside its measured one, and
one sentence that reads them.

Takes plain dicts (`CostCurve.to_dict()`, `RunCost.to_dict()` of specviz.decoding.costs, and the run's
speedup against AR), so it needs neither torch nor the decoding package, and a recorded run without a
curve renders a plain message instead.
"""
from __future__ import annotations

import html

import plotly.graph_objects as go

from .palette import (AR_REFERENCE_COLOR, BACKGROUND, COST_CURVE_COLOR, COST_RUN_COLOR, MUTED_COLOR, SUBTLE_COLOR,
                      TRANSPARENT)
from .tree import empty_figure

NO_CURVE = "No cost curve for this run"


def cost_curve_figure(curve: dict | None, run: dict | None = None, empty: str = "") -> go.Figure:
    """Forward ms against tokens scored in one forward (log axis), each point labelled in AR steps, the AR
    step drawn across, and the run's mean verify size marked. Without a curve: `empty`, or that there is none."""
    if not curve:
        return empty_figure(empty or f"{NO_CURVE}: it is measured on this machine after a run", height=260)
    xs, ys = list(curve["tokens"]), list(curve["forward_ms"])
    ar = ys[0]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="lines+markers+text", name="one target forward", line=dict(color=COST_CURVE_COLOR, width=2),
        marker=dict(size=7, color=COST_CURVE_COLOR), text=[f"{y / ar:.1f}×" for y in ys], textposition="top center",
        textfont=dict(size=10, color=SUBTLE_COLOR),
        hovertemplate="%{x} tokens scored in one forward: %{y:.1f} ms = %{text} an AR step<extra></extra>",
    ))
    fig.add_hline(y=ar, line=dict(color=AR_REFERENCE_COLOR, width=1, dash="dot"),
                  annotation_text=f"1 AR step = {ar:.1f} ms", annotation_position="bottom right",
                  annotation_font=dict(size=10, color=SUBTLE_COLOR))
    if run and run.get("steps"):
        # the run's mean step: its tokens scored against the mean of its steps' verify costs on the curve
        n, ms = run["nodes_per_step"] + 1, run["verify_ms"] / run["steps"]
        fig.add_trace(go.Scatter(
            x=[n], y=[ms], mode="markers", name="this run's verify (mean step)",
            marker=dict(size=13, symbol="diamond", color=COST_RUN_COLOR, line=dict(width=1, color=BACKGROUND)),
            hovertemplate=(f"this run: {run['nodes_per_step']:.1f} drafted nodes + the root per step<br>"
                           f"{ms:.1f} ms = {ms / ar:.1f} AR steps per verify<extra></extra>"),
        ))
    top = max(ys) * 1.25
    fig.update_layout(
        title=dict(text=f"Verify cost on this machine ({html.escape(curve['device'])}, {html.escape(curve['dtype'])}, "
                        f"{curve['context']}-token context)", font=dict(size=13), x=0.02, y=0.97),
        height=300, margin=dict(l=50, r=15, t=40, b=40), plot_bgcolor=BACKGROUND, showlegend=True,
        legend=dict(x=0.02, y=0.98, yanchor="top", bgcolor=TRANSPARENT, font=dict(size=10)),
        xaxis=dict(title="tokens scored in one forward (drafted nodes + 1)", type="log", tickvals=xs,
                   ticktext=[str(x) for x in xs]),
        yaxis=dict(title="ms per forward", range=[0, top], rangemode="tozero"),
    )
    return fig


def _x(v: float) -> str:
    return f"{v:.2f}×"


def _row(name: str, value: str, note: str = "") -> str:
    note = f' <span style="color:{MUTED_COLOR}">{html.escape(note)}</span>' if note else ""
    return f"<tr><td>{html.escape(name)}</td><td><b>{html.escape(value)}</b>{note}</td></tr>"


def cost_reading(run: dict, measured: float | None, not_measured: str = "not measured") -> str:
    """One plain sentence: what verifying costs here, what the run committed, predicted against measured."""
    nodes, steps = run["nodes_per_step"], max(run["steps"], 1)
    verify = run["verify_ms"] / steps / run["ar_ms"]
    draft = run["draft_ms"] / steps / run["ar_ms"]
    outcome = f"predicted at {_x(run['predicted'])} and " + (
        f"measured at {_x(measured)}" if measured is not None else not_measured)
    if nodes < 0.5:
        return f"This run drafted nothing: each step is one AR step, so it was {outcome}."
    cost = f"verifying {nodes:.0f} drafted nodes (plus the root) costs {verify:.1f} AR steps"
    if draft >= 0.05:
        cost += f" and drafting them another {draft:.1f}"
    committed = run["tokens_per_step"]
    compare = "more" if committed > verify + draft else "fewer"
    return (f"On this machine {cost}; this run committed {committed:.1f} tokens per step, {compare} than the "
            f"{verify + draft:.1f} a step costs, so it was {outcome}.")


def _load_note(run: dict, speedup: dict) -> str:
    """How fast plain AR and the run's verify forwards ran, against the curve: the measured speedup divides
    two decodes timed one after the other, and other work on the machine can slow one more than the other."""
    slowdown = run.get("slowdown", 1.0)
    ar_s, tokens = speedup.get("ar_s"), run["tokens"]
    if not ar_s or not tokens or run["ar_ms"] <= 0:
        return "two decodes timed one after the other"
    ar_slow = ar_s * 1000 / tokens / run["ar_ms"]
    timed = f"plain AR ran at {ar_slow:.1f}× the curve's AR step, this run's verify at {slowdown:.1f}× the curve"
    if max(ar_slow, slowdown) / max(min(ar_slow, slowdown), 1e-9) > 1.25:
        return f"{timed}: other work on the machine slowed them unequally, which moves the measurement"
    return f"{timed}: alike, so the gap is an error of the cost model"


def cost_panel_html(curve: dict | None, run: dict | None, speedup: dict | None, not_measured: str = "not measured",
                    ) -> str:
    """The run's predicted speedup beside its measured one, what the difference is made of, and a reading.
    `speedup`: the run's {"ratio", "ar_s", "method_s", …} against AR, or None (then `not_measured` says why)."""
    if not curve:
        return (f"<p><b>{NO_CURVE}.</b> The curve (the target's forward time against tokens scored) is measured on "
                "this machine, once, when a run finishes; a recorded run replayed without its model has none.</p>")
    if not run or not run.get("steps"):
        return "<p>Run or step to see this run's predicted speedup.</p>"
    measured = speedup.get("ratio") if speedup else None
    rows = [_row("predicted speedup", _x(run["predicted"]),
                 "Σ tokens × one AR step ÷ Σ (verify on the curve + drafting), step by step")]
    if measured is not None:
        rows.append(_row("measured speedup", _x(measured), speedup.get("how", "")))
        diff = measured / run["predicted"] - 1 if run["predicted"] > 0 else 0.0
        rows.append(_row("prediction vs measurement",
                         "within 1%" if abs(diff) < 0.01 else f"measured {abs(diff):.0%} {'above' if diff > 0 else 'below'}",
                         _load_note(run, speedup)))
    slowdown = run.get("slowdown", 1.0)
    drafted = f"{run['measured_draft_ms'] / 1000:.2f} s"
    if slowdown > 1.25:
        busy = f"the machine ran {slowdown:.1f}× slower (other work), so drafting ({drafted}) counts {slowdown:.1f}× less"
    elif slowdown < 0.8:
        busy = f"the machine ran {1 / slowdown:.1f}× faster, so drafting ({drafted}) counts {1 / slowdown:.1f}× more"
    else:
        busy = f"as fast as the curve; drafting {drafted}"
    rows.append(_row("this run's verify time", f"{run['measured_verify_ms'] / 1000:.2f} s",
                     f"{run['verify_ms'] / 1000:.2f} s on the curve: {busy}"))
    if measured is None:
        rows.insert(1, _row("measured speedup", "–", not_measured))
    rows += [
        _row("break-even", f"{run['step_cost']:.2f} tokens per step",
             f"a step costs {run['step_cost']:.2f} AR steps; this run committed {run['tokens_per_step']:.2f}"),
        _row("one AR step", f"{run['ar_ms']:.1f} ms", "one forward scoring one token"),
    ]
    reading = cost_reading(run, measured, not_measured)
    return (f'<p class="sv-cost-reading" style="font-size:15px">{html.escape(reading)}</p>'
            f'<table class="sv-metrics">{"".join(rows)}</table>')
