"""Tree builders: shapes, tries, the suffix-array datastore, the drafter's own tree pass, and shape updates."""


import numpy as np
import pytest
import torch

from specviz.config import ConfigError, SamplingConfig
from specviz.settings import RunSettings
from specviz.decoding.drafters import Context, ngram_continuations
from specviz.decoding.engine import SpeculativeDecoder
from specviz.decoding.registry import get_method
from specviz.decoding.retrieval import NgramTreeDrafter, RetrievalDrafter, SuffixArray, corpus_tokens
from specviz.decoding.shapes import PRESETS, accepted_length, best_static_tree, chain, normalise, parse_shape
from specviz.decoding.tree_drafters import DraftKV, DynamicShape, ModelTreeDrafter, StaticShape
from specviz.decoding.trie import TokenTrie, count_trie
from specviz.trace import tree_depths


# shapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_trees_of_the_advertised_size(name):
    paths = PRESETS[name]
    assert normalise(paths) == paths
    assert len(paths) == int(name.rsplit("-", 1)[1])


def test_parse_shape_forms_and_errors():
    assert parse_shape("0;1;0,0") == ((0,), (1,), (0, 0))
    assert parse_shape("[[0], [0, 0], [0, 0, 0]]") == chain(3)
    with pytest.raises(ValueError, match="no parent"):
        parse_shape("0;1,1")
    with pytest.raises(ValueError, match="unknown tree shape"):
        parse_shape("bushy")


def test_best_static_tree_is_ancestor_closed_and_prefers_likely_paths():
    paths = best_static_tree([0.6, 0.2, 0.1], 6, max_depth=4)
    assert len(paths) == 6 and normalise(paths) == paths
    # scores .6, .36, .216, .2, .1296 (0,0,0,0), then .12: 0.6^3 beats rank 2 at depth 1 (0.1)
    assert {(0,), (0, 0), (0, 0, 0), (1,), (0, 0, 0, 0)} <= set(paths) and (2,) not in paths


def test_best_static_tree_with_one_accuracy_row_per_depth():
    # Medusa heads: head k's ranks at depth k; depth is capped by the number of heads
    paths = best_static_tree([[0.9, 0.1], [0.2, 0.1]], 10)
    assert set(paths) == {(0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)}
    assert best_static_tree([[0.9, 0.1], [0.2, 0.1]], 4) == normalise([(0,), (0, 0), (1,), (0, 1)])


def test_accepted_length_walks_the_ranks():
    shape = set(PRESETS["binary-14"])
    assert accepted_length(shape, [0, 1, 1, 0], 0) == 3  # depth limit 3
    assert accepted_length(shape, [0, 2, 0], 0) == 1
    assert accepted_length(shape, [5, 0], 0) == 0
    assert accepted_length(set(chain(4)), [0, 0, 0, 0, 0], 2) == 3  # runs out of positions


# tries and the datastore ----------------------------------------------------------------------------
def test_token_trie_merges_shared_prefixes_and_respects_the_budget():
    trie = TokenTrie()
    assert trie.add_path([5, 6, 7], "a") == 3
    assert trie.add_path([5, 6, 8], "b") == 1  # 5, 6 shared
    assert trie.add_path([9, 9, 9], "c", budget=5) == 1
    tokens, parent, _, source = trie.arrays()
    assert tokens.tolist() == [5, 6, 7, 8, 9]
    assert parent.tolist() == [0, 1, 2, 2, 0]
    assert source == ("a", "a", "a", "b", "c")


def test_count_trie_keeps_the_most_frequent_prefixes_as_a_tree():
    seqs = [[1, 2, 3]] * 5 + [[1, 2, 4]] * 3 + [[1, 5]] * 2 + [[7]]
    trie = count_trie(seqs, max_nodes=4)
    tokens, parent, probs, _ = trie.arrays()
    assert tokens.tolist() == [1, 2, 3, 4]  # counts 10, 8, 5, 3 beat 5->[1,5] (2) and [7] (1)
    assert parent.tolist() == [0, 1, 2, 2]
    # conditional draft probabilities: count(prefix) / count(parent)
    assert probs.tolist() == pytest.approx([10 / 11, 8 / 10, 5 / 8, 3 / 8])
    assert np.all(parent < np.arange(1, 5))


def test_suffix_array_counts_and_continuations_match_brute_force():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 5, 200).tolist() for _ in range(3)]
    corpus = corpus_tokens(docs)
    sa = SuffixArray(corpus)
    # the order really is sorted
    suffixes = [corpus[i:].tolist() for i in sa.order]
    assert suffixes == sorted(suffixes)
    for q in ([1], [1, 2], [4, 4, 0], [3, 3, 3, 3]):
        brute = [i for i in range(len(corpus) - len(q) + 1) if corpus[i : i + len(q)].tolist() == q]
        assert sa.count(q) == len(brute)
        conts = sorted(sa.continuations(q, 3))
        want = []
        for i in brute:
            follow = corpus[i + len(q) : i + len(q) + 3].tolist()
            follow = follow[: follow.index(-1)] if -1 in follow else follow
            if follow:
                want.append(follow)
        assert conts == sorted(want)
    assert sa.count([9]) == 0 and sa.continuations([9], 3) == []


def test_retrieval_returns_the_known_most_frequent_continuations():
    # "a b" is followed by "c d" three times, by "e" once; documents end at separators
    a, b, c, d, e = 10, 11, 12, 13, 14
    docs = [[a, b, c, d], [a, b, c, d, a, b, e], [1, a, b, c, d]]
    store = {"retrieval:shipped": SuffixArray(corpus_tokens(docs))}
    drafter = RetrievalDrafter(store, use_context=False, ngram=2, depth=2, budget=3)
    trie = drafter.build(np.array([7, a, b]), max_depth=8)
    tokens, parent, probs, source = trie.arrays()
    assert tokens.tolist() == [c, e, d]
    assert parent.tolist() == [0, 0, 1]
    assert probs.tolist() == pytest.approx([0.75, 0.25, 1.0])
    assert set(source) == {"retrieval:shipped"}
    # the context store alone: the text so far
    ctx = RetrievalDrafter({}, use_context=True, ngram=2, depth=2, budget=8)
    t2 = ctx.build(np.array([a, b, c, 5, a, b]), max_depth=8)
    assert t2.arrays()[0].tolist() == [c, 5]


def test_ngram_continuations_longest_and_most_recent_first():
    ids = np.array([1, 2, 3, 9, 2, 3, 8, 1, 2, 3])
    found = ngram_continuations(ids, 3, 2)
    assert found[0] == [9, 2]  # the 3-gram [1 2 3] matched at 0
    assert found[1:] == [[8, 1], [9, 2]]  # then the 2-gram [2 3], most recent first
    trie = NgramTreeDrafter(3, 2, budget=3).build(ids, max_depth=8)
    assert trie.arrays()[0].tolist() == [9, 2, 8]


# the drafter's own tree pass ------------------------------------------------------------------------
def test_draft_kv_tree_pass_matches_plain_forward_per_path(tiny):
    prompt = torch.tensor([3, 17, 4, 17, 4, 9])
    kv = DraftKV(tiny)
    kv.reset()
    root_logits = kv.catch_up(prompt)
    level1 = kv.forward(torch.tensor([5, 6, 7]), [-1, -1, -1])  # three children of the root
    level2 = kv.forward(torch.tensor([8, 9]), [0, 2])  # under 5 and under 7
    level3 = kv.forward(torch.tensor([10]), [4])  # under 7 -> 9
    with torch.no_grad():
        def plain(extra):
            return tiny(torch.cat([prompt, torch.tensor(extra, dtype=torch.long)]).unsqueeze(0)).logits[0, -1]
        torch.testing.assert_close(root_logits, plain([]), atol=1e-4, rtol=1e-4)
        for i, t in enumerate([5, 6, 7]):
            torch.testing.assert_close(level1[i], plain([t]), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(level2[0], plain([5, 8]), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(level2[1], plain([7, 9]), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(level3[0], plain([7, 9, 10]), atol=1e-4, rtol=1e-4)
    # keep the accepted 7 -> 9 -> 10 and continue: the cache must equal a plain prefill
    kv.keep([2, 4, 5])
    nxt = kv.catch_up(torch.cat([prompt, torch.tensor([7, 9, 10, 11])]))
    torch.testing.assert_close(nxt, plain([7, 9, 10, 11]), atol=1e-4, rtol=1e-4)


def _grow(tiny, shape, sampling=SamplingConfig(), max_depth=16):
    drafter = ModelTreeDrafter(tiny, shape, sampling, "test")
    drafter.reset(None)
    ids = torch.tensor([3, 17, 4, 17, 4, 9])
    draft = drafter.propose(Context(ids, ids.numpy()), max_depth, torch.Generator().manual_seed(0))
    return drafter, draft


def test_static_tree_is_filled_exactly_and_by_rank(tiny):
    shape = PRESETS["medusa-like-26"]
    drafter, draft = _grow(tiny, StaticShape("medusa-like-26"))
    assert draft.token_ids.shape[0] == 26
    parent = np.concatenate([[-1], draft.parent])
    assert np.bincount(tree_depths(parent))[1:].tolist() == [4, 10, 9, 3]
    # the root's children are the drafter's top 4, best first
    ids = torch.tensor([3, 17, 4, 17, 4, 9])
    with torch.no_grad():
        top = tiny(ids.unsqueeze(0)).logits[0, -1].topk(4).indices.tolist()
    root_kids = [int(draft.token_ids[i]) for i in range(26) if draft.parent[i] == 0]
    assert root_kids == top
    # deeper levels are capped by max_depth
    _, shallow = _grow(tiny, StaticShape("medusa-like-26"), max_depth=2)
    assert shallow.token_ids.shape[0] == 14 and len(shape) == 26


@pytest.mark.parametrize("greedy", [True, False])
def test_dynamic_tree_respects_budget_depth_and_stays_a_tree(tiny, greedy):
    sampling = SamplingConfig() if greedy else SamplingConfig(1.0, 1.0, 3)
    drafter, draft = _grow(tiny, DynamicShape(depth=4, top_k=3, budget=10), sampling)
    m = draft.token_ids.shape[0]
    parent = np.concatenate([[-1], draft.parent])
    assert m == 10 and np.all(parent[1:] < np.arange(1, m + 1))
    assert tree_depths(parent).max() <= 4
    # siblings are distinct tokens
    for node in range(m + 1):
        kids = [int(draft.token_ids[i]) for i in range(m) if draft.parent[i] == node]
        assert len(kids) == len(set(kids))
    if greedy:
        # EAGLE-2 rerank: every kept node's cumulative probability beats every dropped one's
        assert draft.dists is None
    else:
        assert draft.dists is not None and torch.allclose(draft.dists.sum(-1), torch.ones(m))
        # a without-replacement proposal excludes the siblings drawn before it
        for i in range(m):
            earlier = [int(draft.token_ids[j]) for j in range(i) if draft.parent[j] == draft.parent[i]]
            assert all(float(draft.dists[i, t]) == 0.0 for t in earlier)


def test_shape_knobs_apply_on_the_next_step(tiny):
    m = get_method("dynamic_tree")
    knobs = m.check_knobs({"exit_layer": 2, "budget": 6, "depth": 3})
    dec = SpeculativeDecoder(tiny, m.drafter(tiny, knobs), [3, 17, 4, 17, 4],
                             RunSettings("dynamic_tree", knobs, 30))
    first = dec.step()
    assert first.n_drafted == 6
    dec.update_shape({"budget": 12, "depth": 2})
    second = dec.step()
    assert second.n_drafted == 12 and second.tree.depth.max() <= 2
    assert dec.settings.knobs["budget"] == 12 and dec.trace().settings["budget"] == 12


def test_knob_choices_are_checked():
    m = get_method("static_tree")
    with pytest.raises(ConfigError, match="not an option"):
        m.check_knobs({"preset": "  "})
    # presets and corpora also take free text (own rank paths, a file path), checked where they are used
    assert m.check_knobs({"preset": "0;1;0,0"})["preset"] == "0;1;0,0"
    assert get_method("retrieval").check_knobs({"corpus": "/tmp/x.txt"})["corpus"] == "/tmp/x.txt"


def test_graft_records_both_sources(tiny):
    docs = [[3, 17, 4, 9, 60, 61, 62], [4, 9, 60, 61, 63]]
    store = {"retrieval:shipped": SuffixArray(corpus_tokens(docs))}
    m = get_method("graft")
    knobs = m.check_knobs({"exit_layer": 2, "prune_prob": 0.02, "budget": 12, "corpus": "shipped"})
    drafter = m.drafter(tiny, knobs, datastores=store)
    drafter.reset(None)
    ids = torch.tensor([3, 17, 4, 17, 4, 9])
    draft = drafter.propose(Context(ids, ids.numpy()), 8, torch.Generator())
    sources = set(draft.source)
    assert "early-exit-L2" in sources and "retrieval:shipped" in sources
    assert draft.token_ids.shape[0] <= 12
    # the grafted continuation 60 61 hangs under the root (or merges with a model node)
    assert 60 in draft.token_ids.tolist()


# the what-if replay ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,knobs", [
    ("static_tree", {"exit_layer": 2, "preset": "binary-14"}),
    ("sps", {"exit_layer": 2, "draft_len": 4}),
    ("ngram_tree", {"budget": 16}),
])
def test_what_if_replay_reproduces_the_real_run(tiny, name, knobs):
    """The replay of a run's own shape takes exactly as many target forwards as the run did."""
    from specviz.models.early_exit import early_exit_model
    from specviz.decoding.engine import decode
    from specviz.decoding.whatif import replay_builder, replay_static, true_token_ranks

    m = get_method(name)
    knobs = m.check_knobs(knobs)
    prompt = [3, 17, 4, 17, 4, 17, 9, 22, 4, 17]
    tr = decode(tiny, m.drafter(tiny, knobs), prompt, RunSettings(name, knobs, 40))
    if name == "ngram_tree":
        steps, _ = replay_builder(m.drafter(tiny, knobs), prompt, tr.output_ids)
    else:
        ranks = true_token_ranks(early_exit_model(tiny, 2), prompt, tr.output_ids)
        paths = PRESETS[knobs["preset"]] if name == "static_tree" else chain(knobs["draft_len"])
        steps, _ = replay_static(paths, ranks)
    assert steps == len(tr.steps)
    assert len(tr.steps) < 40  # drafts were accepted, so the comparison means something
