"""Lossless greedy: every strategy reproduces plain greedy decoding token for token.

The oracle is transformers' own `generate` (independent of our engine). Each
strategy runs through the real engine; scripted drafters force the three
cases: every draft accepted, none accepted, exactly j accepted, plus branching
trees whose correct branch is not the first child.
"""
import numpy as np
import pytest
import torch

from specviz.decoding.drafters import DrafterBase
from specviz.decoding.drafters import Draft
from specviz.decoding.engine import decode
from specviz.decoding.registry import METHODS, get_method
from specviz.trace import check_invariants

from ..conftest import PROMPTS, greedy_reference, tiny_drafter, tiny_settings

N_NEW = 40


class ScriptedDrafter(DrafterBase):
    """Drafts from a known greedy continuation: `correct` right tokens then `wrong` wrong ones,
    optionally as a tree where a decoy sibling precedes each correct node."""

    def __init__(self, reference, prompt_len, correct, wrong, vocab, decoy_siblings=False):
        self.ref, self.prompt_len = reference, prompt_len
        self.correct, self.wrong, self.vocab, self.decoy = correct, wrong, vocab, decoy_siblings
        self.name = "scripted"

    def reset(self, prompt_ids):
        pass

    def propose(self, ctx, max_depth, generator):
        done = ctx.ids_host.shape[0] - self.prompt_len
        right = list(self.ref[done: done + self.correct])
        wrong = [int((t + 1 + k) % self.vocab) for k, t in enumerate(self.ref[done + len(right): done + len(right) + self.wrong])]
        chain = (right + wrong)[:max_depth]
        tokens, parent = [], []
        last = 0
        for t in chain:
            if self.decoy:
                tokens.append(int((t + 7) % self.vocab))
                parent.append(last)
            tokens.append(int(t))
            parent.append(last)
            last = len(tokens)
        m = len(tokens)
        return Draft(torch.tensor(tokens, dtype=torch.long), np.array(parent, dtype=np.int64),
                     torch.full((m,), 0.5), None, ("scripted",) * m)

    def commit(self, accepted_path, n_committed):
        pass


def _run(model, drafter, prompt, n=N_NEW):
    tr = decode(model, drafter, prompt, tiny_settings("test", n))
    check_invariants(tr, max_new_tokens=n)
    return tr


@pytest.mark.parametrize("prompt", range(len(PROMPTS)))
@pytest.mark.parametrize(
    "correct,wrong,decoy",
    [(6, 0, False), (0, 4, False), (2, 3, False), (5, 1, False), (3, 2, True), (4, 0, True)],
    ids=["all-accepted", "none-accepted", "exactly-2", "exactly-5", "tree-exactly-3", "tree-all"],
)
def test_scripted_drafts_are_lossless(tiny, prompt, correct, wrong, decoy):
    p = PROMPTS[prompt]
    ref = greedy_reference(tiny, p, N_NEW + 8)
    drafter = ScriptedDrafter(ref, len(p), correct, wrong, 96, decoy)
    tr = _run(tiny, drafter, p)
    assert tr.output_ids.tolist() == ref[:N_NEW].tolist()
    for s in tr.steps[:-1]:
        # every step accepts exactly what was scripted (the last step may be cut by the limit)
        assert s.n_accepted == min(correct, s.tree.depth.max())
    if correct and not wrong:
        assert tr.summary()["tau"] > 2


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("prompt", range(len(PROMPTS)))
def test_every_method_matches_greedy_on_tiny_model(tiny, name, prompt):
    p = PROMPTS[prompt]
    m = get_method(name)
    tr = decode(tiny, tiny_drafter(m, tiny), p, tiny_settings(name, N_NEW))
    check_invariants(tr, max_new_tokens=N_NEW)
    assert tr.output_ids.tolist() == greedy_reference(tiny, p, N_NEW).tolist()


def test_sps_with_a_separate_draft_model_matches_greedy(tiny):
    from specviz.models import tiny_random_llama

    draft_model = tiny_random_llama(vocab_size=96, n_layers=1, hidden=32, seed=5)
    m = get_method("sps")
    drafter = m.drafter(tiny, {"draft_len": 5}, draft_model=draft_model)
    tr = _run(tiny, drafter, PROMPTS[0])
    assert tr.output_ids.tolist() == greedy_reference(tiny, PROMPTS[0], N_NEW).tolist()
    assert all(src == "draft-model" for s in tr.steps for src in s.tree.source[1:])


EMBEDDED_PROMPTS = [
    "Write a short poem about autumn leaves.",
    "Repeat the phrase 'the quick brown fox' three times.",
    "What are the three states of matter?",
]


@pytest.fixture(scope="module")
def embedded_references(embedded):
    from specviz.textio import encode_prompt

    refs = []
    for text in EMBEDDED_PROMPTS:
        p = encode_prompt(embedded.tokenizer, text)
        refs.append((text, p, embedded.model.generate(torch.tensor([p]), max_new_tokens=32, do_sample=False)[0, len(p):].tolist()))
    return refs


@pytest.mark.parametrize("name", [m for m in METHODS if m != "ar"])
def test_every_method_matches_greedy_on_embedded_model(store, embedded, embedded_references, name):
    from specviz.models.trained import shipped_drafters
    from specviz.runs.corpus import load_datastores
    from specviz.runs.costs import cost_curve

    m = get_method(name)
    knobs = m.check_knobs({})
    stores = load_datastores(store, embedded, knobs["corpus"]) if m.uses_corpus else {}
    # the trained methods run on the drafters shipped in assets/drafters
    trained = shipped_drafters(embedded.model_id, embedded.model).get(m.uses_trained) if m.uses_trained else None
    for text, p, ref in embedded_references:
        # methods that size drafts by cost (auto) read this machine's curve, measured once and cached
        drafter = m.drafter(embedded.model, knobs, datastores=stores, trained=trained,
                            costs=lambda: cost_curve(store, embedded))
        tr = decode(embedded.model, drafter, p, tiny_settings(name, 32, knobs=knobs), eos_ids=embedded.eos_ids)
        check_invariants(tr, eos_ids=embedded.eos_ids, max_new_tokens=32)
        assert tr.output_ids.tolist() == ref, text
