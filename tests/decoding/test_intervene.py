"""Interventions: a user edits a recorded step's draft, the run forks, and the target still decides.

Every registered method's fork stays equal to plain greedy decoding whatever the edit; under sampling,
the fork's tokens still follow the target's law; the edit is recorded, survives the trace file, and bad
edits are refused with a message."""
import numpy as np
import pytest
import torch

from specviz.config import ConfigError, SamplingConfig
from specviz.decoding.engine import SpeculativeDecoder
from specviz.decoding.intervene import DraftEdit
from specviz.decoding.registry import METHODS, get_method
from specviz.decoding.sampling import processed_probs
from specviz.trace import ACCEPTED, CUT, REPLACE, USER_SOURCE, Trace, TraceError, check_invariants

from ..conftest import PROMPTS, greedy_reference, tiny_drafter, tiny_settings
from .test_sampling import SMALL_VOCAB_KNOBS

N_NEW = 32
VOCAB = 96


def _decoder(model, name, prompt, n=N_NEW, sampling=None, knobs=None, trained=None, datastores=None):
    m = get_method(name)
    return SpeculativeDecoder(model, tiny_drafter(m, model, sampling, knobs, datastores, trained), prompt,
                              tiny_settings(name, n, sampling))


def _fresh_drafter(model, name, sampling=None, knobs=None, trained=None, datastores=None):
    return tiny_drafter(get_method(name), model, sampling, knobs, datastores, trained)


def _edits(step, k):
    """A replace and a cut of the first drafted node of recorded step k, and a replace deeper in the tree."""
    first = int(step.tree.token_ids[1])
    edits = [DraftEdit(k, 1, REPLACE, (first + 1) % VOCAB), DraftEdit(k, 1, CUT)]
    if step.tree.size > 2:
        last = step.tree.size - 1
        edits.append(DraftEdit(k, last, REPLACE, (int(step.tree.token_ids[last]) + 5) % VOCAB))
    return edits


@pytest.mark.parametrize("name", [m for m in METHODS if m != "ar"])
def test_every_methods_fork_matches_greedy_whatever_the_edit(tiny, name):
    prompt = PROMPTS[0]
    ref = greedy_reference(tiny, prompt, N_NEW).tolist()
    original = _decoder(tiny, name, prompt)
    for _ in range(6):
        original.step()
    drafted = [k for k, s in enumerate(original.records) if s.n_drafted]
    assert drafted, f"{name} drafted nothing in six steps"
    tried = 0
    for k in drafted[:2]:
        for edit in _edits(original.records[k], k):
            fork = original.fork(edit, _fresh_drafter(tiny, name))
            for _ in fork.steps():
                pass
            trace = fork.trace()
            check_invariants(trace, max_new_tokens=N_NEW)
            assert trace.output_ids.tolist() == ref, (name, edit)
            assert trace.steps[:k] == original.records[:k]  # the branch keeps what came before the edit
            mark = trace.steps[k].intervention
            assert mark is not None and mark.kind == edit.kind
            assert all(s.intervention is None for i, s in enumerate(trace.steps) if i != k)
            tried += 1
    # the original goes on untouched by its forks
    for _ in original.steps():
        pass
    assert original.trace().output_ids.tolist() == ref
    assert all(s.intervention is None for s in original.records)
    assert tried >= 2


def _first_accepting_step(dec):
    for k, s in enumerate(dec.records):
        if s.n_accepted >= 1:
            return k, s
    return None, None


def test_replacing_an_accepted_token_shortens_the_step_and_the_output_stays(tiny):
    """The accepted length moves with the edit, the text does not: the target still picks every token."""
    prompt = PROMPTS[1]
    ref = greedy_reference(tiny, prompt, N_NEW).tolist()
    original = _decoder(tiny, "prompt_lookup", prompt)
    for _ in original.steps():
        pass
    k, step = _first_accepting_step(original)
    assert k is not None, "prompt lookup accepted nothing on a repetitive prompt"
    node = int(step.accepted_path[0])
    wrong = (int(step.tree.token_ids[node]) + 1) % VOCAB
    fork = original.fork(DraftEdit(k, node, REPLACE, wrong), _fresh_drafter(tiny, "prompt_lookup"))
    edited = fork.step()
    assert edited.n_accepted == 0 and edited.status[node] != ACCEPTED
    assert edited.tree.source[node] == USER_SOURCE and int(edited.tree.token_ids[node]) == wrong
    # the correction is the target's own token: the one the drafter had right
    assert int(edited.committed_ids[0]) == int(step.tree.token_ids[node])
    assert edited.intervention.was == int(step.tree.token_ids[node])
    assert edited.intervention.accepted_before == step.n_accepted
    for _ in fork.steps():
        pass
    assert fork.trace().output_ids.tolist() == ref


def test_putting_in_the_targets_token_makes_a_rejected_draft_accepted(tiny):
    prompt = PROMPTS[0]
    original = _decoder(tiny, "sps", prompt, knobs={"exit_layer": 1})
    for _ in original.steps():
        pass
    found = [(k, s) for k, s in enumerate(original.records) if s.n_drafted and s.status[1] != ACCEPTED]
    assert found, "the one-layer early exit never missed its first draft"
    k, step = found[0]
    right = int(step.target_topk_ids[0, 0])  # the target's argmax after the root
    fork = original.fork(DraftEdit(k, 1, REPLACE, right), _fresh_drafter(tiny, "sps", knobs={"exit_layer": 1}))
    edited = fork.step()
    assert edited.status[1] == ACCEPTED and edited.n_accepted > step.n_accepted


def test_cutting_a_node_removes_its_subtree_and_the_target_fills_in(tiny):
    prompt = PROMPTS[0]
    original = _decoder(tiny, "static_tree", prompt, knobs={"exit_layer": 2})
    for _ in range(3):
        original.step()
    step = original.records[1]
    below = int(np.sum(step.tree.parent == 1))
    assert below > 0, "the tree has no children under node 1 to cut with it"
    fork = original.fork(DraftEdit(1, 1, CUT), _fresh_drafter(tiny, "static_tree", knobs={"exit_layer": 2}))
    edited = fork.step()
    mark = edited.intervention
    assert mark.kind == CUT and mark.node == 0 and mark.token == int(step.tree.token_ids[1])
    assert mark.removed >= 1 + below and edited.tree.size == step.tree.size - mark.removed
    # a static tree's siblings are distinct tokens: the cut one is gone from under the root
    assert mark.token not in edited.tree.token_ids[edited.tree.parent == 0].tolist()


def test_sampled_fork_still_follows_the_targets_law():
    """Joint law of the first two tokens of a fork that replaces a sampled draft token at step 0, against the
    exact law of a 6-token random model (point-mass verification of the edited tree)."""
    from specviz.models import tiny_random_llama

    vocab = 6
    model = tiny_random_llama(vocab_size=vocab, n_layers=2, hidden=16, seed=3)
    with torch.no_grad():
        model.lm_head.weight.div_(6.0)
    prompt = [1, 2, 1, 2, 1]
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, seed=0)
    with torch.no_grad():
        first = processed_probs(model(torch.tensor([prompt])).logits[0, -1], sampling)
        second = torch.stack([processed_probs(model(torch.tensor([prompt + [a]])).logits[0, -1], sampling)
                              for a in range(vocab)])
    exact = (first[:, None] * second).numpy()
    knobs = {"exit_layer": 1, "draft_len": 3}
    n = 1500
    counts = np.zeros((vocab, vocab))
    replaced = 0
    for seed in range(n):
        s = SamplingConfig(1.0, 1.0, seed)
        original = _decoder(model, "sps", prompt, 2, s, knobs)
        step = original.step()
        if not step.n_drafted:
            original = None
        node = 1
        edit_token = (seed * 7 + 1) % vocab  # a different edit each seed, some equal to the drafted token
        if original is None or edit_token == int(step.tree.token_ids[node]):
            edit_token = (edit_token + 1) % vocab
        if original is None:
            continue
        fork = original.fork(DraftEdit(0, node, REPLACE, edit_token), _fresh_drafter(model, "sps", s, knobs))
        for _ in fork.steps():
            pass
        a, b = fork.trace().output_ids.tolist()
        counts[a, b] += 1
        replaced += 1
    assert replaced > 0.9 * n
    freq = counts / replaced
    sigma = np.sqrt(exact * (1 - exact) / replaced)
    assert np.all(np.abs(freq - exact) < 4.5 * sigma + 2e-3), np.abs(freq - exact).max()


def test_an_intervention_survives_the_trace_file(tiny):
    original = _decoder(tiny, "ngram_tree", PROMPTS[1])
    for _ in range(4):
        original.step()
    k = next(k for k, s in enumerate(original.records) if s.n_drafted)
    fork = original.fork(DraftEdit(k, 1, REPLACE, 7 if int(original.records[k].tree.token_ids[1]) != 7 else 8),
                         _fresh_drafter(tiny, "ngram_tree"))
    for _ in fork.steps():
        pass
    trace = fork.trace()
    back = Trace.from_json(trace.to_json())
    assert back.steps[k].intervention == trace.steps[k].intervention
    assert back.output_ids.tolist() == trace.output_ids.tolist()
    d = trace.to_dict()
    for bad in ({"kind": "delete", "node": 1, "token": 3}, {"kind": "replace", "node": 0, "token": 3},
                {"kind": "replace", "node": 10_000, "token": 3}, {"kind": "cut", "node": 0, "token": -5}, "cut"):
        broken = {**d, "steps": [dict(s) for s in d["steps"]]}
        broken["steps"][k]["intervention"] = bad
        with pytest.raises(TraceError, match="intervention|step"):
            Trace.from_dict(broken)
    # a replace whose node does not hold the user's token breaks the record contract
    broken = {**d, "steps": [dict(s) for s in d["steps"]]}
    broken["steps"][k]["intervention"] = {**d["steps"][k]["intervention"], "token": 95 if
                                          d["steps"][k]["intervention"]["token"] != 95 else 94}
    with pytest.raises(TraceError, match="user's token"):
        Trace.from_dict(broken)


def test_bad_edits_are_refused_with_a_message(tiny):
    original = _decoder(tiny, "sps", PROMPTS[0], knobs={"exit_layer": 2})
    for _ in range(2):
        original.step()
    step = original.records[0]
    drafted = int(step.tree.token_ids[1])
    cases = [
        (DraftEdit(5, 1, REPLACE, 3), "not a recorded step"),
        (DraftEdit(0, 0, REPLACE, 3), "root"),
        (DraftEdit(0, step.tree.size, CUT), "not a drafted node"),
        (DraftEdit(0, 1, REPLACE, VOCAB), "outside the target's vocabulary"),
        (DraftEdit(0, 1, REPLACE, -1), "outside the target's vocabulary"),
        (DraftEdit(0, 1, REPLACE, drafted), "already drafted"),
    ]
    for edit, message in cases:
        with pytest.raises(ConfigError, match=message):
            original.fork(edit, _fresh_drafter(tiny, "sps", knobs={"exit_layer": 2}))
    with pytest.raises(ConfigError, match="unknown edit"):
        DraftEdit(0, 1, "swap", 3)
    ar = _decoder(tiny, "ar", PROMPTS[0])
    ar.step()
    with pytest.raises(ConfigError, match="drafted nothing"):
        ar.fork(DraftEdit(0, 1, CUT), _fresh_drafter(tiny, "ar"))


def test_a_branch_of_a_branch_keeps_both_edits_and_stays_greedy(tiny):
    prompt = PROMPTS[0]
    ref = greedy_reference(tiny, prompt, N_NEW).tolist()
    knobs = {"exit_layer": 2}
    original = _decoder(tiny, "static_tree", prompt, knobs=knobs)
    for _ in range(3):
        original.step()
    first = original.fork(DraftEdit(1, 1, CUT), _fresh_drafter(tiny, "static_tree", knobs=knobs))
    for _ in range(3):
        first.step()
    step = first.records[3]
    second = first.fork(DraftEdit(3, 1, REPLACE, (int(step.tree.token_ids[1]) + 1) % VOCAB),
                        _fresh_drafter(tiny, "static_tree", knobs=knobs))
    for _ in second.steps():
        pass
    trace = second.trace()
    check_invariants(trace, max_new_tokens=N_NEW)
    assert trace.output_ids.tolist() == ref
    assert [s.intervention.kind for s in trace.steps if s.intervention is not None] == [CUT, REPLACE]
