"""Records never claim a token after the end of sequence.

A scripted drafter on the tiny model drafts the greedy continuation straight through the token we
declare EOS and on past it (what the target would say next if the text went on), optionally with a
decoy EOS beside every node and a child below it. The run must stop at EOS exactly where plain
greedy decoding stops, its last step adds nothing after the EOS (`bonus_kind` NO_BONUS), and no
record holds a node below an EOS node.
"""
import numpy as np
import pytest
import torch

from specviz.config import SamplingConfig
from specviz.decoding.drafters import Draft, DrafterBase
from specviz.decoding.engine import decode
from specviz.trace import NO_BONUS, check_invariants, step_committed_tokens

from ..conftest import PROMPTS, greedy_reference, tiny_settings

N_NEW = 30


class PastEosDrafter(DrafterBase):
    """Drafts `depth` tokens of the greedy continuation (EOS and what follows it included); with
    `decoys`, an EOS sibling before each node, with a child below it when the depth allows."""

    name = "scripted"

    def __init__(self, reference, prompt_len, eos, depth=6, decoys=False):
        self.ref, self.prompt_len, self.eos, self.depth, self.decoys = reference, prompt_len, eos, depth, decoys

    def propose(self, ctx, max_depth, generator):
        done = ctx.ids_host.shape[0] - self.prompt_len
        chain = [int(t) for t in self.ref[done : done + min(self.depth, max_depth)]]
        tokens, parent = [], []
        last = 0
        for d, t in enumerate(chain, start=1):
            if self.decoys and t != self.eos:
                tokens.append(self.eos)
                parent.append(last)
                if d < max_depth:
                    eos_node = len(tokens)
                    tokens.append(t)
                    parent.append(eos_node)
            tokens.append(t)
            parent.append(last)
            last = len(tokens)
        m = len(tokens)
        return Draft(torch.tensor(tokens, dtype=torch.long), np.array(parent, dtype=np.int64), torch.full((m,), 0.5),
                     None, ("scripted",) * m)


def eos_cases():
    """(prompt index, EOS position): the greedy token at that position is declared EOS (its first occurrence)."""
    return [(0, 3), (0, 5), (1, 8), (2, 13)]


def _setup(tiny, prompt_index, at):
    p = PROMPTS[prompt_index]
    ref = greedy_reference(tiny, p, N_NEW + 8)
    first = {}
    for i, t in enumerate(ref.tolist()):
        first.setdefault(t, i)
    # the first token at or after `at` that the output has not produced before
    pos = next(i for i in range(at, len(ref)) if first[int(ref[i])] == i)
    return p, ref, int(ref[pos]), pos


def _assert_nothing_after_eos(tr, eos):
    for s in tr.steps:
        t = s.tree
        assert not np.any(np.isin(t.token_ids[t.parent[1:]], [eos]) & (t.parent[1:] > 0)), "a node below EOS"
        assert all(c.kind != NO_BONUS for c in step_committed_tokens(s))  # no token claims to be the missing bonus
    assert tr.finish_reason == "eos" and tr.output_ids[-1] == eos


@pytest.mark.parametrize("record", [True, False], ids=["recording", "plain"])
@pytest.mark.parametrize("decoys", [False, True], ids=["chain", "decoy-eos-siblings"])
@pytest.mark.parametrize("case", eos_cases(), ids=lambda c: f"prompt{c[0]}-eos@{c[1]}")
def test_greedy_stops_at_eos_and_records_nothing_after_it(tiny, case, decoys, record):
    p, ref, eos, pos = _setup(tiny, *case)
    drafter = PastEosDrafter(ref, len(p), eos, decoys=decoys)
    tr = decode(tiny, drafter, p, tiny_settings("scripted", N_NEW), eos_ids=(eos,), record=record)
    check_invariants(tr, eos_ids=(eos,), max_new_tokens=N_NEW)
    # plain greedy decoding, cut at the first EOS
    assert tr.output_ids.tolist() == ref[: pos + 1].tolist()
    _assert_nothing_after_eos(tr, eos)
    last = tr.steps[-1]
    if last.n_accepted and last.tree.token_ids[last.accepted_path[-1]] == eos:
        # the drafted EOS was accepted: nothing is added after it
        assert last.bonus_kind == NO_BONUS and last.bonus_token == -1 and np.isnan(last.bonus_prob)
        assert last.committed_ids.tolist() == last.tree.token_ids[last.accepted_path].tolist()
    else:
        assert last.bonus_token == eos and last.bonus_kind != NO_BONUS


def test_the_drafted_eos_is_accepted_and_ends_the_path(tiny):
    """The scripted chain reaches EOS inside a step, so that step's path ends at the drafted EOS."""
    p, ref, eos, pos = _setup(tiny, 0, 5)
    tr = decode(tiny, PastEosDrafter(ref, len(p), eos, depth=pos + 3), p, tiny_settings("scripted", N_NEW),
                eos_ids=(eos,))
    check_invariants(tr, eos_ids=(eos,), max_new_tokens=N_NEW)
    assert len(tr.steps) == 1
    s = tr.steps[0]
    assert s.n_accepted == pos + 1 and s.bonus_kind == NO_BONUS
    assert s.tree.size == pos + 2  # the root and the chain up to EOS: the drafts past it were dropped
    assert tr.output_ids.tolist() == ref[: pos + 1].tolist()


@pytest.mark.parametrize("decoys", [False, True], ids=["chain", "decoy-eos-siblings"])
def test_sampled_runs_record_nothing_after_eos(tiny, decoys):
    p, ref, eos, pos = _setup(tiny, 0, 3)
    for seed in range(3):
        sampling = SamplingConfig(0.7, 1.0, seed)
        tr = decode(tiny, PastEosDrafter(ref, len(p), eos, decoys=decoys), p,
                    tiny_settings("scripted", N_NEW, sampling), eos_ids=(eos,))
        check_invariants(tr, eos_ids=(eos,), max_new_tokens=N_NEW)
        for s in tr.steps:
            t = s.tree
            assert not np.any(np.isin(t.token_ids[t.parent[1:]], [eos]) & (t.parent[1:] > 0))
