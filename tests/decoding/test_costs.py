"""The cost model: the verify-cost curve (measured through the decoder, interpolated, cached per model,
device, dtype and machine) and the speedup it predicts for a draft."""
import json

import pytest

from specviz.decoding.costs import CostCurve, expected_tokens, predicted_speedup
from specviz.runs.costs import measure_cost_curve

CURVE = CostCurve("m", "cpu", "float32", 256, (1, 2, 4, 8), (10.0, 12.0, 16.0, 24.0))


def test_curve_interpolates_between_and_extends_beyond_the_measured_sizes():
    assert CURVE.ar_ms == 10.0
    assert CURVE.ms(1) == 10.0 and CURVE.ms(4) == 16.0
    assert CURVE.ms(3) == pytest.approx(14.0)  # halfway between 2 and 4
    assert CURVE.ms(0) == 10.0  # never below one token
    assert CURVE.ms(16) == pytest.approx(24.0 + 2.0 * 8)  # the last segment's slope, 2 ms a token
    assert CURVE.relative(8) == pytest.approx(2.4)
    assert CostCurve.from_dict(json.loads(json.dumps(CURVE.to_dict()))) == CURVE
    with pytest.raises(ValueError):
        CostCurve("m", "cpu", "float32", 1, (2, 4), (1.0, 2.0))  # must start at one token
    with pytest.raises(ValueError):
        CostCurve("m", "cpu", "float32", 1, (1, 4), (1.0,))


def test_predicted_speedup_weighs_tokens_gained_against_the_step_cost():
    # AR itself: one token per step for one forward
    assert predicted_speedup(CURVE, 1.0, 0) == pytest.approx(1.0)
    # three drafted nodes (a 4-token forward, 16 ms) committing 2 tokens: 2 × 10 / 16
    assert predicted_speedup(CURVE, 2.0, 3) == pytest.approx(1.25)
    # the same with 4 ms of drafting no longer pays
    assert predicted_speedup(CURVE, 2.0, 3, draft_ms=4.0) == pytest.approx(1.0)
    # on a flat curve (a GPU) every accepted token is a gain
    flat = CostCurve("m", "cuda", "bfloat16", 256, (1, 64), (5.0, 5.0))
    assert predicted_speedup(flat, 3.0, 63) == pytest.approx(3.0)
    assert expected_tokens([0.8, 0.5, None, float("nan"), 0.2]) == pytest.approx(2.5)


def test_measured_curve_runs_through_the_decoder(tiny):
    curve = measure_cost_curve(tiny, "tiny", context=20, sizes=(1, 5, 33), reps=2, warmup=1)
    assert curve.tokens == (1, 5, 33) and all(t > 0 for t in curve.forward_ms)
    assert (curve.device, curve.dtype, curve.context) == ("cpu", "float32", 20)


def test_cost_curve_is_cached_in_the_store_and_on_disk(tiny, tmp_path, monkeypatch):
    from specviz.models import ModelStore
    from specviz.models.loading import LoadedModel
    from specviz.runs import costs

    monkeypatch.setenv("SPECVIZ_CACHE", str(tmp_path))
    target = LoadedModel("tiny", tiny, None, 0.0)
    measured = []

    def measure(model, model_id, context):
        measured.append(model_id)
        return measure_cost_curve(model, model_id, context, sizes=(1, 3), reps=1, warmup=0)

    monkeypatch.setattr(costs, "measure_cost_curve", measure)
    first = costs.cost_curve(ModelStore(), target, context=16)
    assert measured == ["tiny"] and first.model_id == "tiny"
    store = ModelStore()  # a later start: read from disk, not measured
    assert costs.cost_curve(store, target, context=16) == first and measured == ["tiny"]
    assert costs.cost_curve(store, target, context=16) == first and measured == ["tiny"]  # from the store
    again = costs.cost_curve(store, target, context=16, remeasure=True)
    assert measured == ["tiny", "tiny"] and costs.cost_curve(store, target, context=16) is again
    # a damaged file is measured again, and another context is its own curve
    for f in (tmp_path / "costs").glob("*.json"):
        f.write_text("{not json")
    costs.cost_curve(ModelStore(), target, context=16)
    costs.cost_curve(ModelStore(), target, context=12)
    assert measured == ["tiny"] * 4
