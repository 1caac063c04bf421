"""Cost-sized drafts (`budget: auto` and the auto method): lossless, sized by the cost curve, learning.

Speed is never timed here: the tests use fixed cost curves (conftest's CPU-like TINY_COSTS, and flat or
steep ones below), so every decision is the same on every machine."""
import numpy as np
import pytest
import torch

from specviz.config import AUTO, BUDGET, ConfigError, SamplingConfig
from specviz.decoding.auto import AcceptanceModel, CostAwareDrafter, best_size, reach
from specviz.decoding.costs import CostCurve
from specviz.decoding.drafters import Context, Draft, DrafterBase
from specviz.decoding.engine import decode
from specviz.decoding.registry import METHODS, get_method
from specviz.settings import RunSettings
from specviz.trace import check_invariants

from ..conftest import PROMPTS, greedy_reference, tiny_drafter, tiny_settings

BUDGETED = [name for name, m in METHODS.items() if BUDGET in m.knobs]
FLAT = CostCurve("flat", "gpu", "float16", 32, (1, 128), (10.0, 10.0))  # a GPU: any size costs one forward
STEEP = CostCurve("steep", "cpu", "float32", 32, (1, 2, 128), (10.0, 100.0, 1000.0))  # nothing can pay


def test_budget_knob_takes_auto_and_says_so():
    assert BUDGET.check("auto") == AUTO and BUDGET.check(" Auto ") == AUTO and BUDGET.check("12") == 12
    with pytest.raises(ConfigError, match="number or 'auto'"):
        BUDGET.check("lots")
    s = RunSettings.from_dict({"method": "dynamic_tree", "budget": "auto"})
    assert s.knobs["budget"] == AUTO and RunSettings.from_dict(s.to_dict()) == s
    # auto <-> a number changes the drafter, so it starts a new run; a number to a number stays live
    assert s.live_changes(s.changed(budget=8)) is None
    assert s.changed(budget=8).live_changes(s.changed(budget=16)) == {"budget": 16}


@pytest.mark.parametrize("name", BUDGETED + ["auto"])
@pytest.mark.parametrize("prompt", range(len(PROMPTS)))
def test_cost_sized_drafts_match_greedy(tiny, name, prompt):
    p = PROMPTS[prompt]
    knobs = {"budget": AUTO} if name != "auto" else {}
    tr = decode(tiny, tiny_drafter(get_method(name), tiny, knobs=knobs), p, tiny_settings(name, 40))
    check_invariants(tr, max_new_tokens=40)
    assert tr.output_ids.tolist() == greedy_reference(tiny, p, 40).tolist()


@pytest.mark.parametrize("name", ["dynamic_tree", "ngram_tree"], ids=["drawn-nodes", "point-masses"])
def test_cost_sized_sampling_follows_the_target(name):
    """The joint law of the first two tokens under budget auto equals the target's, for a drafter whose nodes
    are drawn (cut value-blind) and one of point masses (pruned by value). The auto method itself is in
    test_sampling's method-wide suite."""
    from .test_sampling import check_two_token_law

    check_two_token_law(name, {"budget": AUTO}, n=800)


def test_drawn_drafts_are_cut_without_looking_at_their_values(tiny):
    """Under sampling, a draft with proposal distributions keeps its first k nodes, k the same whatever the
    nodes' drawn values (keeping a drawn node because of its own value would bias verification)."""
    vocab = tiny.config.vocab_size

    class Drawn(DrafterBase):
        name = "drawn"

        def __init__(self, probs):
            self.probs = probs

        def propose(self, ctx, max_depth, generator):
            m = len(self.probs)
            dists = torch.full((m, vocab), 1.0 / vocab)
            return Draft(torch.arange(m), np.array([0, 0, 1, 1, 3, 5][:m]), torch.tensor(self.probs), dists, ("drawn",) * m)

    ctx = Context(torch.tensor([1, 2, 3]), np.array([1, 2, 3]))
    sampled = SamplingConfig(1.0, 1.0, 0)
    cpu = CostCurve("cpu", "cpu", "float32", 32, (1, 2, 4, 8), (10.0, 15.0, 16.0, 30.0))
    kept = []
    for probs in ([0.99, 0.01, 0.9, 0.9, 0.9, 0.9], [0.01, 0.99, 0.01, 0.01, 0.01, 0.01]):
        d = CostAwareDrafter(Drawn(probs), cpu, sampled)
        draft = d.propose(ctx, 8, None)
        kept.append((draft.token_ids.tolist(), draft.parent.tolist()))
        assert draft.dists is not None and draft.dists.shape[0] == len(draft.parent)
    assert kept[0] == kept[1] and kept[0][0] == list(range(len(kept[0][0])))  # a prefix in drafting order
    # greedy, the same drafter prunes by value: the confident branch is kept, the unlikely one is not
    greedy = CostAwareDrafter(Drawn([0.99, 0.01, 0.9, 0.9, 0.9, 0.9]), cpu)
    for _ in range(40):  # teach it that confident nodes are accepted and unlikely ones are not
        for prob, ok in ((0.99, True), (0.9, True), (0.01, False)):
            for depth in range(1, 5):
                greedy.acceptance.observe("drawn", depth, 0, prob, ok)
                greedy.acceptance.observe("drawn", depth, 1, prob, ok)
    draft = greedy.propose(ctx, 8, None)
    assert 1 not in draft.token_ids.tolist() and 0 in draft.token_ids.tolist()


def test_reach_multiplies_down_paths_and_siblings_exclude_each_other():
    parent = np.array([0, 0, 1, 3])
    r = reach(parent, np.array([0.8, 0.6, 0.5, 0.5]))
    # siblings 0.8 + 0.6 > 1 are scaled to 0.8/1.4 and 0.6/1.4
    assert np.allclose(r, [0.8 / 1.4, 0.6 / 1.4, 0.8 / 1.4 * 0.5, 0.8 / 1.4 * 0.25])


def test_best_size_follows_the_cost_curve():
    node_reach = np.array([0.9, 0.8, 0.7, 0.1, 0.05])
    rate = 1 / 10.0  # AR: one token per 10 ms
    assert best_size(node_reach, FLAT, rate)[0] == 5  # a free verify takes every node
    assert best_size(node_reach, STEEP, rate) == (0, 1.0)  # scoring 2 tokens costs 10 AR steps: none pays
    cpu = CostCurve("cpu", "cpu", "float32", 32, (1, 2, 4, 8), (10.0, 15.0, 16.0, 30.0))
    k, expected = best_size(node_reach, cpu, rate)
    assert k == 3 and expected == pytest.approx(1 + 0.9 + 0.8 + 0.7)  # the 4th node adds 0.1 token for 3.5 ms


def test_acceptance_model_learns_and_explores():
    model = AcceptanceModel()
    fresh = model.estimate("ngram", 1, 0, 1.0)
    assert fresh > 0.7  # unseen: optimistic, so it is tried
    for _ in range(30):
        model.observe("ngram", 1, 0, 1.0, False)
    assert model.estimate("ngram", 1, 0, 1.0) < 0.15
    # the coarse (drafter, depth) estimate carries over to a bin it has not seen, but less confidently
    assert model.estimate("ngram", 1, 0, 1.0) < model.estimate("ngram", 1, 1, 0.3) < fresh
    for _ in range(30):
        model.observe("retrieval:shipped", 2, 0, 0.9, True)
    assert model.estimate("retrieval:shipped", 2, 0, 0.9) > 0.9


class _Wrong(DrafterBase):
    """Always drafts a chain of tokens the target never picks (costly, as a draft model would be)."""
    name = "wrong"

    def __init__(self, vocab, pause_ms=0.0):
        self.vocab, self.pause_ms, self.calls = vocab, pause_ms, 0

    def propose(self, ctx, max_depth, generator):
        import time
        self.calls += 1
        time.sleep(self.pause_ms / 1000)
        m = min(4, max_depth)
        tokens = torch.full((m,), int(ctx.ids_host[-1] + 1) % self.vocab)
        return Draft(tokens, np.arange(m), torch.full((m,), 0.9), None, (self.name,) * m)


def test_drafts_that_never_pay_turn_into_ar_steps(tiny):
    """A drafter that is always wrong is tried while the model is unsure, then no longer verified; a costly
    one (its drafting takes a fifth of an AR forward) stops being run at all, except for probes."""
    prompt = PROMPTS[0]
    ref = greedy_reference(tiny, prompt, 60).tolist()
    curve = CostCurve("cpu", "cpu", "float32", 32, (1, 2, 16, 64), (10.0, 15.0, 16.0, 30.0))
    cheap = CostAwareDrafter(_Wrong(96), curve)
    tr = decode(tiny, cheap, prompt, tiny_settings("test", 60))
    assert tr.output_ids.tolist() == ref
    verified = [s.n_drafted for s in tr.steps]
    assert sum(verified[:5]) > 0 and sum(verified[-20:]) == 0
    costly = CostAwareDrafter(_Wrong(96, pause_ms=2.0), curve)
    tr = decode(tiny, costly, prompt, tiny_settings("test", 60))
    assert tr.output_ids.tolist() == ref
    assert costly.inner.calls < 0.5 * len(tr.steps)


def test_auto_method_finds_copies_and_verifies_them(tiny):
    """On a prompt that repeats itself the auto method verifies the copies it finds (τ above 1)."""
    prompt = [5, 6, 7, 8, 9, 10, 11, 12] * 6
    tr = decode(tiny, tiny_drafter(get_method("auto"), tiny), prompt, tiny_settings("auto", 40))
    assert tr.output_ids.tolist() == greedy_reference(tiny, prompt, 40).tolist()
    assert len(tr.output_ids) / len(tr.steps) > 1.0
