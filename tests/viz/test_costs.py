"""The cost panel and the what-if panel's ranking by predicted speedup, from plain dicts (no model)."""
from specviz.decoding.costs import CostCurve, run_cost, whatif_speedups
from specviz.trace import Trace
from specviz.viz.costs import NO_CURVE, cost_curve_figure, cost_panel_html, cost_reading
from specviz.viz.whatif import whatif_figure, whatif_table_html
from tests.test_trace import synthetic_trace

# the embedded model on this project's 2-core CPU, as `python -m specviz bench costs` measured it
CURVE = CostCurve("embedded", "cpu", "float32", 256, (1, 2, 4, 8, 16, 32, 64, 128),
                  (57.7, 95.0, 87.9, 90.7, 95.5, 123.1, 174.0, 283.5))


def steps():
    """A synthetic run (3 + 3 + 0 drafted nodes, 7 tokens), timed as the curve says, 5 ms of drafting a step."""
    from dataclasses import replace

    return [replace(s, verify_ms=CURVE.ms(s.tree.size), draft_ms=5.0) for s in synthetic_trace().steps]


def test_cost_panel_puts_the_prediction_beside_the_measurement():
    run = run_cost(CURVE, steps()).to_dict()
    fig = cost_curve_figure(CURVE.to_dict(), run)
    assert [t.name for t in fig.data] == ["one target forward", "this run's verify (mean step)"]
    assert list(fig.data[0].x) == list(CURVE.tokens) and fig.data[0].text[-1] == "4.9×"
    assert "1 AR step = 57.7 ms" in fig.layout.annotations[0].text
    panel = cost_panel_html(CURVE.to_dict(), run, {"ratio": 0.61, "how": "AR 1 s ÷ this run 1.6 s"})
    assert f"{run['predicted']:.2f}×" in panel and "0.61×" in panel and "measured" in panel
    assert "break-even" in panel and "1 s ÷ this run" in panel
    # the reading names the verify cost, the tokens per step and both speedups
    reading = cost_reading(run, 0.61)
    assert reading.startswith("On this machine verifying 2 drafted nodes (plus the root) costs 1.3 AR steps")
    assert "committed 2.3 tokens per step, more than the 1.4 a step costs" in reading and f"predicted at {run['predicted']:.2f}×" in reading
    assert reading.endswith("measured at 0.61×.")
    # not timed: the panel says why
    assert "box is off" in cost_panel_html(CURVE.to_dict(), run, None, "plain AR was not timed (the box is off)")


def test_a_recorded_run_without_a_curve_still_renders():
    trace = Trace.from_json(synthetic_trace().to_json())  # replayed from its JSON, no model anywhere
    assert trace.steps
    assert NO_CURVE in cost_panel_html(None, None, None)
    fig = cost_curve_figure(None, None)
    assert NO_CURVE in fig.layout.annotations[0].text
    # an AR run drafts nothing
    ar = run_cost(CURVE, [steps()[2]]).to_dict()
    assert cost_reading(ar, None).startswith("This run drafted nothing")


def test_what_if_ranks_by_predicted_speedup_not_by_tau():
    def row(name, family, tau, nodes, depth=3, **flags):
        return dict(name=name, family=family, tau=tau, nodes=nodes, depth=depth, steps=10, tokens=20, detail="d",
                    **flags)

    run = run_cost(CURVE, steps())
    rows = whatif_speedups(CURVE, [row("wide-64", "model static tree", 2.5, 63, own_drafter=True),
                                   row("chain-2", "model chain", 1.6, 2, 2, own_drafter=True, own_setting=True),
                                   row("prompt lookup", "model-free", 1.4, 1.5)],
                           run, {"name": "this run (sps)", "detail": "itself"})
    table = whatif_table_html(rows, run.tokens_per_step, "this run (sps)", measured=0.9)
    # τ would put wide-64 first; at 3 AR steps a verify it is last
    order = [table.index(n) for n in ("chain-2 (this run's setting)", "prompt lookup", "wide-64")]
    assert order == sorted(order)
    assert "(measured 0.90×)" in table and "predicted speedup" in table
    fig = whatif_figure(rows, run.tokens_per_step, "this run (sps)", measured=0.9)
    assert list(fig.layout.yaxis.categoryarray) == [r["name"] + (" (this run's setting)" if r.get("own_setting") else "")
                                                    for r in rows]
    assert fig.layout.xaxis.title.text.startswith("predicted speedup")
    run_bar = next(t for t in fig.data if t.name == "this run")
    assert "(measured 0.90×)" in run_bar.text[0]


def test_the_panel_says_when_ar_and_the_run_were_timed_under_different_loads():
    run = run_cost(CURVE, steps()).to_dict()  # timed as the curve says: slowdown 1
    even = {"ratio": 1.5, "ar_s": 7 * 0.0577, "how": ""}  # AR at the curve's speed too
    assert "alike, so the gap is an error of the cost model" in cost_panel_html(CURVE.to_dict(), run, even)
    busy = {"ratio": 3.0, "ar_s": 7 * 0.0577 * 4, "how": ""}  # AR timed while the machine was 4× slower
    panel = cost_panel_html(CURVE.to_dict(), run, busy)
    assert "plain AR ran at 4.0× the curve&#x27;s AR step" in panel and "slowed them unequally" in panel
