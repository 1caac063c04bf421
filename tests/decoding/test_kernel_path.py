"""The decoder runs through the kernels: the Triton path (interpreted here) decodes the same tokens as the reference."""
import numpy as np
import pytest
import torch

from specviz.bench.kernels import verify_cost
from specviz.config import SamplingConfig
from specviz.decoding.engine import SpeculativeDecoder, decode
from specviz.decoding.registry import METHODS, get_method
from specviz.kernels import force_backend
from specviz.models.cache import SlabCache

from ..conftest import PROMPTS, tiny_drafter, tiny_knobs, tiny_settings


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("sampling", [SamplingConfig(), SamplingConfig(0.8, 1.0, 3)], ids=["greedy", "sampled"])
def test_triton_path_decodes_the_same_tokens(tiny, name, sampling):
    m = get_method(name)
    outs, backends = [], []
    for backend in ("reference", "triton"):
        with force_backend(backend):
            drafter = tiny_drafter(m, tiny, sampling)
            tr = decode(tiny, drafter, PROMPTS[1], tiny_settings(name, 8, sampling, tiny_knobs(m)), record=True)
        outs.append(tr.output_ids.tolist())
        backends.append(tr.backend)
    assert outs[0] == outs[1]
    assert backends == ["reference (cpu)", "triton (cpu)"]


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_compacted_slab_equals_a_fresh_prefill(tiny, backend):
    """After tree steps with compaction, the cache holds exactly the committed context's keys and values."""
    m = get_method("static_tree")
    with force_backend(backend), torch.inference_mode():
        dec = SpeculativeDecoder(tiny, tiny_drafter(m, tiny), PROMPTS[0], tiny_settings("static_tree", 16))
        steps = list(dec.steps())
        fresh = SlabCache(tiny.config.num_hidden_layers)
        tiny(input_ids=torch.from_numpy(dec.ids_host[:-1]).unsqueeze(0), past_key_values=fresh, use_cache=True)
    assert isinstance(dec.cache, SlabCache)
    n = len(dec.ids_host) - 1
    assert dec.cache.length == fresh.length == n
    # some step kept a branch that was not already in place, so compaction really moved entries
    assert any(list(s.accepted_path) != list(range(1, len(s.accepted_path) + 1)) for s in steps)
    torch.testing.assert_close(dec.cache.slab[..., :n, :], fresh.slab[..., :n, :], atol=1e-5, rtol=1e-5)


def test_verify_cost_curve_runs_through_the_decoder(tiny):
    rows = verify_cost(tiny, context=20, sizes=(1, 5, 33), reps=2)
    assert [r["nodes"] for r in rows] == [1, 5, 33]
    assert rows[0]["vs_one_token"] == 1.0
    assert all(r["forward_ms"] > 0 for r in rows)


def test_recorded_steps_carry_the_targets_uncertainty(tiny):
    """Per-node entropy and top-2 gap come from the logit-statistics kernel and survive the JSON round trip."""
    from specviz.trace import Trace

    m = get_method("static_tree")
    tr = decode(tiny, tiny_drafter(m, tiny), PROMPTS[0], tiny_settings("static_tree", 8))
    for s in tr.steps:
        assert s.target_entropy.shape == s.target_top2_gap.shape == (s.tree.size,)
        assert np.all((s.target_entropy >= 0) & (s.target_entropy <= np.log(96) + 1e-4))
        assert np.all((s.target_top2_gap >= 0) & (s.target_top2_gap <= 1))
        # the gap is between the top-1 and top-2 of the recorded top-k
        np.testing.assert_allclose(s.target_top2_gap, s.target_topk_probs[:, 0] - s.target_topk_probs[:, 1], atol=1e-5)
    back = Trace.from_dict(tr.to_dict())
    np.testing.assert_array_equal(back.steps[-1].target_entropy, tr.steps[-1].target_entropy)
