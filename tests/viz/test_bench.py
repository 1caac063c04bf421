"""The Benchmark panel's figures and table, from a synthetic report (no model, no torch)."""
import csv
import io

from specviz.viz.bench import (CSV_FIELDS, NO_RESULTS, accepted_length_figure, acceptance_figure, category_figure,
                               method_colors, report_csv, table_rows)
from specviz.viz.palette import AR_REFERENCE_COLOR


def _row(tau, wall, tokens=40, match=True, by_depth=(), lengths=(), cats=None, verified=()):
    forwards = round(tokens / tau) if tau else 0
    rates = {"tau": tau, "tokens": tokens, "target_forwards": forwards, "wall_s": wall,
             "tok_per_s": tokens / wall, "speedup_vs_ar": 4.0 / wall}
    by_category = {c: {**rates, "speedup_vs_ar": s} for c, s in (cats or {}).items()}
    return {**rates, "matches_ar": match, "by_category": by_category, "acceptance_by_depth": list(by_depth),
            "accepted_lengths": list(lengths), "verified_by_depth": list(verified),
            "steps": sum(lengths) + 5, "drafted_steps": sum(lengths)}


REPORT = {
    "ar": _row(1.0, 4.0, lengths=[], cats={"writing": 1.0, "math": 1.0}),
    "prompt_lookup": _row(1.6, 2.5, by_depth=[0.6, 0.5, None], lengths=[10, 8, 7],
                          verified=[25, 15, 0], cats={"writing": 1.4, "math": 1.9}),
    "sps": _row(2.0, 5.0, match=False, by_depth=[0.8, 0.6, 0.4], lengths=[4, 6, 6, 4], cats={"writing": 0.8, "math": 0.7}),
}


def test_table_rows_read_the_report():
    rows = table_rows(REPORT)
    assert [r[0] for r in rows] == ["ar", "prompt_lookup", "sps"]
    assert rows[0][4] == "baseline" and rows[1][4] == "yes" and rows[2][4] == "NO"
    assert rows[1][3] == 1.6  # speedup: AR's 4 s over 2.5 s
    assert table_rows(REPORT, greedy=False)[1][4] == "-"
    hf = {**REPORT, "hf_generate": {**REPORT["ar"], "target_forwards": 0}}
    assert table_rows(hf)[-1][1] is None  # no forwards counted: no τ


def test_csv_has_a_header_and_a_row_per_method():
    rows = list(csv.reader(io.StringIO(report_csv(REPORT))))
    assert rows[0] == CSV_FIELDS and [r[0] for r in rows[1:]] == list(REPORT)
    assert float(rows[2][CSV_FIELDS.index("speedup_vs_ar")]) == 1.6


def test_category_bars_one_trace_per_method_but_ar():
    fig = category_figure(REPORT)
    assert [t.name for t in fig.data] == ["prompt_lookup", "sps"]
    assert list(fig.data[0].x) == ["writing", "math"] and list(fig.data[0].y) == [1.4, 1.9]
    assert fig.layout.barmode == "group"
    # AR's 1× is drawn across
    assert any(s.y0 == 1.0 for s in fig.layout.shapes)


def test_acceptance_per_position_skips_unreached_positions():
    fig = acceptance_figure(REPORT)
    assert [t.name for t in fig.data] == ["prompt_lookup", "sps"]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[1].y) == [0.8, 0.6, 0.4]
    # markers grow with the nodes verified; a report without counts still draws
    assert list(fig.data[0].customdata) == [25, 15] and fig.data[0].marker.size[0] > fig.data[0].marker.size[1]
    assert list(fig.data[1].customdata) == [0, 0, 0]


def test_accepted_length_histogram_is_a_share_of_steps():
    fig = accepted_length_figure(REPORT)
    assert [t.name for t in fig.data] == ["prompt_lookup", "sps"]
    assert list(fig.data[1].x) == [0, 1, 2, 3] and abs(sum(fig.data[1].y) - 1) < 1e-9
    assert list(fig.data[0].customdata) == [10, 8, 7]


def test_empty_and_ar_only_reports_say_so():
    for make in (category_figure, acceptance_figure, accepted_length_figure):
        assert NO_RESULTS in make(None).layout.annotations[0].text
        assert "AR" in make({"ar": REPORT["ar"]}).layout.annotations[0].text


def test_ar_keeps_the_reference_colour():
    colors = method_colors(REPORT)
    assert colors["ar"] == AR_REFERENCE_COLOR and len(set(colors.values())) == 3
