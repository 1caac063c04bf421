"""The Benchmark panel's views: the results table, speedup by category, acceptance per draft position and
the histogram of accepted lengths per step.

Each takes the report of the Spec-Bench harness (`runs.benchmark.bench_pieces`: method -> its rates, its
`by_category` rates, `acceptance_by_depth` and `accepted_lengths`), plain JSON, so a saved report renders
the same as a live one and nothing here needs torch.
"""
from __future__ import annotations

import csv
import io

import plotly.graph_objects as go

from .palette import AR_REFERENCE_COLOR, BACKGROUND, BAR_TRACK_COLOR, RUN_COLORS, SUBTLE_COLOR
from .tree import empty_figure

TABLE_HEADERS = ["method", "τ", "tok/s", "speedup vs AR", "greedy = AR", "tokens", "target forwards", "wall s"]
CSV_FIELDS = ["method", "tau", "tok_per_s", "speedup_vs_ar", "matches_ar", "tokens", "target_forwards", "wall_s"]
NO_RESULTS = "No benchmark results yet: pick methods and press Run benchmark"


def method_colors(report: dict) -> dict:
    """AR in the reference grey, the other methods in the run colours, in the report's order."""
    others = [m for m in report if m != "ar"]
    return {"ar": AR_REFERENCE_COLOR, **{m: RUN_COLORS[i % len(RUN_COLORS)] for i, m in enumerate(others)}}


def _same(name: str, row: dict, greedy: bool) -> str:
    if name == "ar":
        return "baseline"
    if not greedy:
        return "-"
    return "yes" if row["matches_ar"] else "NO"


def table_rows(report: dict, greedy: bool = True) -> list:
    """One row per method (TABLE_HEADERS), rounded for reading; rows without target forwards have no τ."""
    return [[name, round(r["tau"], 3) if r["target_forwards"] else None, round(r["tok_per_s"], 2),
             round(r["speedup_vs_ar"], 3), _same(name, r, greedy), r["tokens"], r["target_forwards"],
             round(r["wall_s"], 3)] for name, r in report.items()]


def report_csv(report: dict) -> str:
    """The report as CSV: a header (CSV_FIELDS) and one row per method, full precision."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for name, r in report.items():
        writer.writerow([name, *(r[f] for f in CSV_FIELDS[1:])])
    return out.getvalue()


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, height: int = 300) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, font=dict(size=13), x=0.02, y=0.97), height=height,
        margin=dict(l=50, r=16, t=40, b=40), plot_bgcolor=BACKGROUND, paper_bgcolor=BACKGROUND,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0, font=dict(size=11)),
        xaxis=dict(title=x_title, gridcolor=BAR_TRACK_COLOR), yaxis=dict(title=y_title, gridcolor=BAR_TRACK_COLOR, rangemode="tozero"),
    )
    return fig


def category_figure(report: dict | None) -> go.Figure:
    """Speedup against AR (its wall over the method's, on the same questions in the same run) per
    category, one bar per method, with AR's 1× drawn across; hover gives τ and tok/s."""
    if not report:
        return empty_figure(NO_RESULTS, height=300)
    colors = method_colors(report)
    categories = list(report["ar"]["by_category"]) if "ar" in report else []
    fig = go.Figure()
    for name, r in report.items():
        if name == "ar":
            continue
        cats = [c for c in categories if c in r["by_category"]]
        rows = [r["by_category"][c] for c in cats]
        fig.add_trace(go.Bar(
            x=cats, y=[c["speedup_vs_ar"] for c in rows], name=name, marker_color=colors[name],
            customdata=[[c["tau"], c["tok_per_s"]] for c in rows],
            hovertemplate=f"{name}<br>%{{x}}: %{{y:.2f}}× AR<br>τ %{{customdata[0]:.2f}}, "
                          "%{customdata[1]:.1f} tok/s<extra></extra>",
        ))
    if not fig.data:
        return empty_figure("Only the AR baseline ran: add a method to compare by category", height=300)
    fig.add_hline(y=1.0, line=dict(color=AR_REFERENCE_COLOR, width=1, dash="dot"), annotation_text="AR = 1×",
                  annotation_position="top left", annotation_font=dict(size=10, color=SUBTLE_COLOR))
    fig.update_layout(barmode="group")
    return _layout(fig, "Speedup against AR by category (same questions, same run)", "category", "speedup (×)")


def acceptance_figure(report: dict | None) -> go.Figure:
    """Acceptance rate at each draft position (accepted ÷ drafted among the nodes verification reached
    there), one line per method that drafted; a marker's size grows with the nodes verified there, since a
    rate over a handful of nodes is noise, and hover gives the count."""
    if not report:
        return empty_figure(NO_RESULTS, height=300)
    colors = method_colors(report)
    fig = go.Figure()
    for name, r in report.items():
        rates = r.get("acceptance_by_depth") or []
        counts = list(r.get("verified_by_depth") or []) + [0] * len(rates)
        points = [(d + 1, rate, counts[d]) for d, rate in enumerate(rates) if rate is not None]
        if not points:
            continue
        fig.add_trace(go.Scatter(
            x=[p for p, _, _ in points], y=[rate for _, rate, _ in points], mode="lines+markers", name=name,
            line=dict(color=colors[name], width=2),
            marker=dict(size=[min(6 + 2 * n ** 0.5, 18) for _, _, n in points], color=colors[name]),
            customdata=[n for _, _, n in points],
            hovertemplate=f"{name}<br>draft position %{{x}}: %{{y:.0%}} of %{{customdata}} verified nodes "
                          "accepted<extra></extra>",
        ))
    if not fig.data:
        return empty_figure("No method drafted anything: AR alone has no draft positions", height=300)
    fig = _layout(fig, "Acceptance rate per draft position (marker size: nodes verified)", "draft position",
                  "accepted ÷ verified")
    fig.update_yaxes(range=[0, 1.08], tickformat=".0%")
    fig.update_xaxes(dtick=1)
    return fig


def accepted_length_figure(report: dict | None) -> go.Figure:
    """The histogram of accepted lengths: the share of each method's drafting steps that accepted exactly k
    drafted tokens (the bonus not counted), grouped by k; steps that drafted nothing are left out (hover
    counts them)."""
    if not report:
        return empty_figure(NO_RESULTS, height=300)
    colors = method_colors(report)
    fig = go.Figure()
    for name, r in report.items():
        counts = r.get("accepted_lengths") or []
        total = sum(counts)
        if name == "ar" or not total:
            continue
        fig.add_trace(go.Bar(
            x=list(range(len(counts))), y=[c / total for c in counts], name=name, marker_color=colors[name],
            customdata=counts,
            hovertemplate=f"{name}<br>%{{customdata}} of {total} drafting steps accepted %{{x}} drafts "
                          f"(%{{y:.0%}}); {r.get('steps', total) - total} more steps drafted nothing<extra></extra>",
        ))
    if not fig.data:
        return empty_figure("No method drafted anything: AR alone accepts no drafts", height=300)
    fig.update_layout(barmode="group")
    fig = _layout(fig, "Accepted length per step (share of steps that drafted)", "drafted tokens accepted in a step",
                  "share of steps")
    fig.update_yaxes(tickformat=".0%")
    fig.update_xaxes(dtick=1)
    return fig
