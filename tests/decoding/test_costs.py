"""The cost model: the verify-cost curve (measured through the decoder, interpolated, cached per model,
device, dtype and machine) and the speedup it predicts for a draft."""
import json

import numpy as np

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


def timed_steps(slower: float = 1.0) -> list:
    """The synthetic trace's steps (3 + 3 + 0 drafted nodes; 3 + 3 + 1 tokens; 1 ms of drafting each), their
    verify times as CURVE says, all `slower` times slower (a machine busy with other work)."""
    from dataclasses import replace

    from tests.test_trace import synthetic_trace

    return [replace(s, verify_ms=CURVE.ms(s.tree.size) * slower, draft_ms=s.draft_ms * slower)
            for s in synthetic_trace().steps]


def test_run_cost_prices_every_step_on_the_curve():
    from specviz.decoding.costs import reach_by_depth, run_cost

    steps = timed_steps()
    run = run_cost(CURVE, steps)
    # verify: a 4-token forward twice and a 1-token one (16 + 16 + 10 ms), plus 3 ms of drafting
    assert run.verify_ms == pytest.approx(42.0) and run.draft_ms == pytest.approx(3.0)
    assert run.predicted == pytest.approx(7 * 10.0 / 45.0)
    assert run.tokens == 7 and run.steps == 3 and run.nodes_per_step == pytest.approx(2.0)
    assert run.step_cost == pytest.approx(1.5)  # break-even: 1.5 tokens per step
    assert run.slowdown == pytest.approx(1.0) and run.measured_verify_ms == pytest.approx(42.0)
    # drafting per level: 2 ms over the chain of 3 and the tree of depth 2 (the empty step drafted nothing)
    assert run.draft_ms_per_level == pytest.approx(0.4)
    # reach counts every step, so 1 + Σ reach is the run's tokens per step
    assert reach_by_depth(steps) == pytest.approx((2 / 3, 2 / 3))
    assert expected_tokens(run.reach_by_depth) == pytest.approx(run.tokens_per_step)
    assert run_cost(CURVE, []) is None and reach_by_depth([]) == ()


def test_a_busy_machine_slows_drafting_and_verifying_alike():
    """A run timed while the CPU did other work: its drafting is brought back to the curve's conditions by
    how much slower its verify forwards ran, so the prediction is that of a quiet machine."""
    from specviz.decoding.costs import run_cost

    quiet, busy = run_cost(CURVE, timed_steps()), run_cost(CURVE, timed_steps(slower=5.0))
    assert busy.slowdown == pytest.approx(5.0) and busy.measured_draft_ms == pytest.approx(15.0)
    assert busy.draft_ms == pytest.approx(quiet.draft_ms) and busy.predicted == pytest.approx(quiet.predicted)


def test_run_cost_is_the_cost_of_each_step_not_of_the_mean_step():
    from dataclasses import replace

    from specviz.decoding.costs import run_cost
    from specviz.trace import DraftTree
    from tests.test_trace import synthetic_trace

    # flat up to 4 tokens, then steep: a 7-node step costs 3 AR steps, an empty one 1
    curve = CostCurve("m", "cpu", "float32", 256, (1, 2, 4, 8), (10.0, 10.0, 10.0, 30.0))
    s0, _, s2 = synthetic_trace().steps
    chain7 = DraftTree(np.arange(8), np.arange(-1, 7), np.ones(8, np.float32), ("root",) + ("ngram",) * 7)
    s0 = replace(s0, tree=chain7, draft_ms=0.0, verify_ms=30.0)
    s2 = replace(s2, draft_ms=0.0, verify_ms=10.0)
    run = run_cost(curve, [s0, s2])
    assert run.verify_ms == pytest.approx(30.0 + 10.0)
    assert run.predicted == pytest.approx(4 * 10.0 / 40.0)
    # the mean step (3.5 nodes, a 4.5-token forward) would have been priced at 12.5 ms: far too cheap
    assert predicted_speedup(curve, 2.0, run.nodes_per_step) == pytest.approx(2 * 10.0 / 12.5)


def test_what_if_rows_are_priced_with_their_drafting_and_ranked_by_predicted_speedup():
    from specviz.decoding.costs import DRAFT_FREE, DRAFT_MEASURED, DRAFT_NOT_COUNTED, run_cost, whatif_speedups

    run = run_cost(CURVE, timed_steps())  # 0.4 ms of drafting per level, 1 ms per step

    def row(name, family, tau, nodes, depth=0, **flags):
        return dict(name=name, family=family, tau=tau, nodes=nodes, depth=depth, steps=10, tokens=20, detail="d",
                    **flags)

    rows = [row("huge", "model static tree", 3.0, 63, 6, own_drafter=True),  # best τ, far too costly
            row("builder", "model-free", 2.0, 7),
            row("chain-3", "model chain", 2.5, 3, 3, own_drafter=True),
            row("mine", "model chain", 2.0, 3, 3, own_drafter=True, own_setting=True),
            row("other model", "model chain", 2.5, 3, 3)]
    out = whatif_speedups(CURVE, rows, run, {"name": "this run", "detail": "itself"})
    by = {r["name"]: r for r in out}
    assert by["builder"]["draft_ms"] == 0.0 and by["builder"]["draft_how"] == DRAFT_FREE
    assert by["builder"]["speedup"] == pytest.approx(2.0 * 10 / 24)
    assert by["chain-3"]["draft_ms"] == pytest.approx(1.2)  # 0.4 ms per level × depth 3
    assert by["chain-3"]["speedup"] == pytest.approx(2.5 * 10 / (16 + 1.2))
    assert by["mine"]["draft_ms"] == pytest.approx(1.0) and by["mine"]["draft_how"] == DRAFT_MEASURED
    assert by["other model"]["draft_ms"] is None and by["other model"]["draft_how"] == DRAFT_NOT_COUNTED
    assert by["other model"]["speedup"] == pytest.approx(2.5 * 10 / 16)  # verify only: an upper bound
    assert by["huge"]["verify_cost"] == pytest.approx(CURVE.ms(64) / 10)
    # the run itself is a row, priced step by step
    assert by["this run"]["is_run"] and by["this run"]["speedup"] == pytest.approx(run.predicted)
    assert by["this run"]["tau"] == pytest.approx(7 / 3)
    speeds = [r["speedup"] for r in out]
    assert speeds == sorted(speeds, reverse=True)
    assert out[-1]["name"] == "huge" and out[0]["name"] == "other model"
