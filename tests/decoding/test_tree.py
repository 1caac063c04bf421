"""Tree attention parity and KV compaction on tiny random models."""
import numpy as np
import pytest
import torch
from transformers import DynamicCache

from specviz.settings import RunSettings
from specviz.decoding import kv
from specviz.decoding.drafters import NoDrafter
from specviz.decoding.engine import SpeculativeDecoder
from specviz.decoding.tree import ancestor_matrix, depths, tree_attention_inputs

SHAPES = {
    "root only": [-1],
    "depth 1, 3 siblings": [-1, 0, 0, 0],
    "single chain": [-1, 0, 1, 2, 3],
    "branching": [-1, 0, 0, 1, 1, 2, 4, 4, 6],
    "wide and deep": [-1, 0, 0, 0, 1, 1, 2, 3, 4, 4, 5, 8, 9, 9, 11, 12],
}


def _preset_parent(name):
    """The parent array of a static preset, as the model-tree drafter lays it out (by depth, then ranks)."""
    from specviz.decoding.shapes import PRESETS

    paths = PRESETS[name]
    index = {(): 0}
    parent = [-1]
    for p in paths:
        index[p] = len(parent)
        parent.append(index[p[:-1]])
    return parent


SHAPES["preset medusa-like-26"] = _preset_parent("medusa-like-26")
SHAPES["preset deep-64"] = _preset_parent("deep-64")


def path_to(parent, i):
    path = []
    while i >= 0:
        path.append(i)
        i = parent[i]
    return path[::-1]


def test_ancestor_matrix_and_depths():
    parent = np.array(SHAPES["branching"])
    anc = ancestor_matrix(parent)
    for i in range(len(parent)):
        assert set(np.flatnonzero(anc[i])) == set(path_to(parent, i))
    assert depths(parent).tolist() == [0, 1, 1, 2, 2, 2, 3, 3, 4]


def tree_pass(model, parent, prefix_len, seed):
    """Cache a random prefix, then score a random tree over it in one pass."""
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(0, 96, (1, prefix_len), generator=g)
    tokens = torch.randint(0, 96, (1, len(parent)), generator=g)
    with torch.no_grad():
        cache = DynamicCache()
        model(input_ids=prefix, past_key_values=cache, use_cache=True)
        mask, pos = tree_attention_inputs(parent, prefix_len, torch.float32, "cpu")
        logits = model(input_ids=tokens, attention_mask=mask, position_ids=pos, past_key_values=cache).logits[0]
    return prefix, tokens, cache, logits


@pytest.mark.parametrize("shape", list(SHAPES))
def test_tree_pass_matches_plain_forward_over_each_path(tiny, shape):
    parent = np.array(SHAPES[shape])
    prefix, tokens, cache, tree_logits = tree_pass(tiny, parent, 9, seed=len(parent))
    with torch.no_grad():
        for i in range(len(parent)):
            path = path_to(parent, i)
            seq = torch.cat([prefix, tokens[:, path]], dim=1)
            ref = tiny(input_ids=seq).logits[0, -1]
            torch.testing.assert_close(tree_logits[i], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("path", [[], [1], [2, 6], [1, 4, 8, 11]])
def test_keep_path_leaves_exactly_the_accepted_path(tiny, path):
    parent = np.array(SHAPES["wide and deep"])
    prefix, tokens, cache, _ = tree_pass(tiny, parent, 6, seed=1)
    with torch.no_grad():
        kv.keep_path(cache, 6, path)
        ref_cache = DynamicCache()
        tiny(input_ids=torch.cat([prefix, tokens[:, [0, *path]]], dim=1), past_key_values=ref_cache)
    assert cache.get_seq_length() == 6 + 1 + len(path)
    for got, ref in zip(cache.layers, ref_cache.layers):
        torch.testing.assert_close(got.keys, ref.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.values, ref.values, atol=1e-5, rtol=1e-5)


def test_engine_scores_a_branching_tree_like_the_plain_forward(tiny):
    """The decoder's own scoring call (mask + positions over its cache) on a branching tree."""
    prompt = np.array([5, 6, 7, 8, 9])
    dec = SpeculativeDecoder(tiny, NoDrafter(), prompt, RunSettings("ar", {}, 8))
    dec.prefill()
    parent = np.array(SHAPES["branching"])
    tokens = torch.tensor([9, 1, 2, 3, 4, 5, 6, 7, 8])
    with torch.no_grad():
        logits = dec._score(tokens, parent, 4)
        for i in range(len(parent)):
            seq = torch.tensor([[5, 6, 7, 8, *tokens[path_to(parent, i)].tolist()]])
            torch.testing.assert_close(logits[i], tiny(input_ids=seq).logits[0, -1], atol=1e-5, rtol=1e-5)
