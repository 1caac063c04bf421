"""What a sampled step records about its tests (uniforms, drafting distributions, residuals) is what the
verification kernel really used: a replayed trace can explain each verdict without the model."""
import numpy as np
import torch

from specviz.config import SamplingConfig
from specviz.decoding.engine import decode
from specviz.decoding.registry import get_method
from specviz.decoding.verify import residuals_after_rejection, stochastic_tree_verify
from specviz.trace import ACCEPTED, REJECTED, Trace

from ..conftest import PROMPTS, tiny_drafter, tiny_settings

V = 6


def _tree():
    """A root with three children: a drawn one, a point mass, a drawn one; one grandchild under the first."""
    g = torch.Generator().manual_seed(7)
    p = torch.softmax(torch.randn(5, V, generator=g) * 1.3, -1)
    q = torch.softmax(torch.randn(5, V, generator=g), -1)
    q[0] = 0.0  # the root is never drawn
    q[2] = 0.0  # a point mass: an all-zero row
    tokens = torch.tensor([0, 4, 3, 5, 1])  # drafts the target likes less than the drafter: rejections are common
    parent = np.array([-1, 0, 0, 0, 1])
    return p, q, tokens, parent


def test_residuals_follow_the_recursion_by_hand():
    p, q, tokens, parent = _tree()
    res = residuals_after_rejection(p, tokens, parent, q)
    point = torch.nn.functional.one_hot(tokens[2], V).float()
    left = (p[0] - q[1]).clamp_min(0)
    r1 = left / left.sum()
    left = (r1 - point).clamp_min(0)
    r2 = left / left.sum()
    left = (r2 - q[3]).clamp_min(0)
    r3 = left / left.sum()
    left = (p[1] - q[4]).clamp_min(0)
    r4 = left / left.sum()
    for got, want in zip(res[1:], (r1, r2, r3, r4)):
        torch.testing.assert_close(got, want)


def test_the_correction_is_drawn_from_the_recorded_residual():
    """Whenever every child of the root is rejected, the correction's law is the residual recorded after
    the last child: counted over 20,000 seeded verifications against the kernel itself."""
    p, q, tokens, parent = _tree()
    want = residuals_after_rejection(p, tokens, parent, q)[3].numpy()
    g = torch.Generator().manual_seed(11)
    counts, n = np.zeros(V), 0
    for _ in range(20_000):
        # the children are drafted as recorded: the drawn ones are tested against their proposal rows
        verdict = stochastic_tree_verify(tokens, parent, p, q, g)
        if not verdict.accepted_path:
            counts[verdict.bonus_token] += 1
            n += 1
    assert n > 500
    freq = counts / n
    tolerance = 4 * np.sqrt(want * (1 - want) / n) + 1e-3
    assert np.all(np.abs(freq - want) <= tolerance), (freq, want)


def test_a_sampled_run_records_its_tests_and_replays_them(tiny):
    sampling = SamplingConfig(1.0, 1.0, 5)
    m = get_method("sps")
    live_trace = decode(tiny, tiny_drafter(m, tiny, sampling), PROMPTS[0], tiny_settings("sps", 32, sampling),
                        record=True)
    trace = Trace.from_json(live_trace.to_json())
    saw_rejection = False
    for live, back in zip(live_trace.steps, trace.steps):
        n = live.tree.size
        assert back.uniforms.shape == (n,) and back.residual_topk_ids.shape[0] == n
        tested = ~np.isnan(back.accept_probs[1:])
        assert np.array_equal(~np.isnan(back.uniforms[1:]), tested)
        # each verdict is the uniform against the acceptance chance
        for i in np.flatnonzero(tested) + 1:
            assert (back.uniforms[i] < back.accept_probs[i]) == (back.status[i] == ACCEPTED)
            saw_rejection |= back.status[i] == REJECTED
        assert back.draft_topk_ids.shape == (n, 5)
        np.testing.assert_allclose(back.residual_topk_probs, live.residual_topk_probs)
    assert saw_rejection


def test_greedy_records_no_tests(tiny):
    m = get_method("sps")
    trace = decode(tiny, tiny_drafter(m, tiny), PROMPTS[0], tiny_settings("sps", 16), record=True)
    s = trace.steps[0]
    assert s.uniforms.size == 0 and s.residual_topk_ids.size == 0 and s.draft_topk_ids.size == 0
