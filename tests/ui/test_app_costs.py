"""The cost model in the app: after a run the cost panel shows the predicted speedup beside the measured one,
and the what-if rows are ranked by predicted speedup, with the run's own setting marked."""
import re

import pytest
from gradio_client import Client


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_cost_panel_and_what_if_after_a_run(client, embedded):
    out = client.predict(prompt="List three colours.", settings={"method": "sps", "draft_len": 3, "max_new_tokens": 16},
                         api_name="/run")
    status, *_, cost_plot, cost_html, metrics, _depth, summary = out
    assert "finished" in status
    measured = summary["speedup_vs_ar"]["ratio"]
    predicted = summary["cost_model"]["run"]["predicted"]
    assert 0 < predicted < 10 and summary["cost_model"]["curve"]["tokens"][0] == 1
    # the panel reads both numbers, as the run summary has them
    assert f"predicted at {predicted:.2f}×" in cost_html and f"measured at {measured:.2f}×" in cost_html
    assert "On this machine verifying 3 drafted nodes (plus the root) costs" in cost_html
    assert "prediction vs measurement" in cost_html
    assert "Verify cost on this machine" in str(cost_plot)

    _plot, table = client.predict(api_name="/what_if")
    rows = re.findall(r"<tr><td>\d+</td><td>(.*?)</td><td>[^<]*</td><td>(?:<b>)?([\d.]+)×", table)
    names = [re.sub("</?b>", "", name) for name, _ in rows]
    speeds = [float(s) for _, s in rows]
    assert len(rows) > 10 and speeds == sorted(speeds, reverse=True)
    assert "chain-3 (this run's setting)" in names and "this run (sps)" in names
    assert f"(measured {measured:.2f}×)" in table



def test_a_machine_without_a_curve_measures_it_after_the_run(embedded, tmp_path, monkeypatch):
    """No curve on disk: the run starts without one, its finishing work measures it (in the run's turn, before
    the AR baseline), and with the AR timing off the panel predicts and says why nothing was measured."""
    from specviz.models import ModelStore
    from specviz.runs import costs
    from specviz.ui.speculative import SpeculativeSpec

    monkeypatch.setenv("SPECVIZ_CACHE", str(tmp_path))
    measured = []
    real = costs.measure_cost_curve

    def quick(model, model_id, context):
        measured.append(model_id)
        return real(model, model_id, 16, sizes=(1, 4, 16), reps=1, warmup=0)

    monkeypatch.setattr(costs, "measure_cost_curve", quick)
    spec = SpeculativeSpec(ModelStore(loader=lambda model_id: embedded))
    session = spec.start("List three colours.", spec.parse({"method": "sps", "max_new_tokens": 6}))
    assert session.extra["cost_curve"] is None and not measured
    while not session.done:
        spec.advance(session)
    _, html = spec.cost_views(session, {"compare_ar": False})
    assert "No cost curve for this run" in html
    assert list(spec.finish_work(session, {"compare_ar": False})) == [None]  # one piece: the curve
    assert measured == [embedded.model_id] and "speedup" not in session.extra
    _, html = spec.cost_views(session, {"compare_ar": False})
    assert "predicted at" in html and "plain AR was not timed" in html
    assert spec.summary(session)["cost_model"]["curve"]["tokens"] == [1, 4, 16]
