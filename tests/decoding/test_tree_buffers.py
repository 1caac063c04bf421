"""The vectorised tree buffers (pointer jumping) equal a plain loop over the nodes, on random trees,
single nodes, deep chains and the forests the drafters' slot masks are built from."""
import numpy as np
import pytest
import torch

from specviz.decoding.tree import additive_mask, ancestor_matrix, tree_attention_inputs
from specviz.decoding.tree_drafters import slot_mask
from specviz.trace import tree_depths


def reference_ancestors(parent):
    n = len(parent)
    anc = np.zeros((n, n), dtype=bool)
    for i in range(n):
        j = i
        while j >= 0:
            anc[i, j] = True
            j = parent[j]
    return anc


def reference_depths(parent):
    return np.array([int(reference_ancestors(parent)[i].sum()) - 1 for i in range(len(parent))], dtype=np.int64)


def random_tree(n, rng, chainy=0.0):
    """Topologically ordered: node i's parent is before it (often i - 1 when `chainy`, for deep trees)."""
    parent = [-1]
    for i in range(1, n):
        parent.append(i - 1 if rng.random() < chainy else int(rng.integers(0, i)))
    return np.array(parent, dtype=np.int64)


TREES = {
    "one node": np.array([-1]),
    "two nodes": np.array([-1, 0]),
    "star": np.array([-1] + [0] * 9),
    "chain 2": np.arange(-1, 1),
    "chain 3": np.arange(-1, 2),
    "chain 64": np.arange(-1, 63),
    "chain 300": np.arange(-1, 299),
    "chain 257 (a power of two past)": np.arange(-1, 256),
}
rng = np.random.default_rng(0)
for n in (3, 7, 40, 200):
    TREES[f"random {n}"] = random_tree(n, rng)
    TREES[f"deep random {n}"] = random_tree(n, rng, chainy=0.9)


@pytest.mark.parametrize("name", list(TREES))
def test_ancestors_and_depths_equal_a_loop(name):
    parent = TREES[name]
    np.testing.assert_array_equal(ancestor_matrix(parent), reference_ancestors(parent))
    np.testing.assert_array_equal(tree_depths(parent), reference_depths(parent))
    assert tree_depths(parent).dtype == np.int64


def test_forests_with_several_roots():
    """Slot arrays mark the root's children with -1: several roots, each at depth 0."""
    for seed in range(20):
        r = np.random.default_rng(seed)
        n = int(r.integers(1, 30))
        parent = np.array([-1 if i == 0 or r.random() < 0.3 else int(r.integers(0, i)) for i in range(n)])
        np.testing.assert_array_equal(ancestor_matrix(parent), reference_ancestors(parent))
        np.testing.assert_array_equal(tree_depths(parent), reference_depths(parent))


def test_empty_tree():
    assert ancestor_matrix(np.zeros(0, np.int64)).shape == (0, 0)
    assert tree_depths(np.zeros(0, np.int64)).shape == (0,)


def reference_slot_mask(context_len, slot_parent, parent_slots):
    """The drafters' mask as a loop: a new node sees the context, its ancestor slots and itself."""
    n_slots, q = len(slot_parent), len(parent_slots)
    allowed = np.zeros((q, context_len + n_slots + q), dtype=bool)
    allowed[:, :context_len] = True
    for i, p in enumerate(parent_slots):
        allowed[i, context_len + n_slots + i] = True
        while p >= 0:
            allowed[i, context_len + p] = True
            p = slot_parent[p]
    return allowed


@pytest.mark.parametrize("seed", range(12))
def test_slot_mask_equals_a_loop(seed):
    r = np.random.default_rng(seed)
    n_slots = int(r.integers(0, 25))
    slot_parent = [-1 if i == 0 or r.random() < 0.3 else int(r.integers(0, i)) for i in range(n_slots)]
    q = int(r.integers(1, 6))
    parent_slots = [int(r.integers(-1, n_slots)) for _ in range(q)]
    context_len = int(r.integers(1, 9))
    np.testing.assert_array_equal(slot_mask(context_len, slot_parent, parent_slots),
                                  reference_slot_mask(context_len, slot_parent, parent_slots))


def test_tree_attention_inputs_are_the_additive_ancestor_mask():
    parent = TREES["random 40"]
    mask, positions = tree_attention_inputs(parent, 5, torch.float32, "cpu")
    allowed = np.concatenate([np.ones((40, 5), dtype=bool), reference_ancestors(parent)], axis=1)
    assert mask.shape == (1, 1, 40, 45)
    np.testing.assert_array_equal(mask[0, 0].numpy() == 0, allowed)
    assert torch.equal(mask, additive_mask(allowed, torch.float32, "cpu"))
    assert float(mask.min()) == torch.finfo(torch.float32).min
    np.testing.assert_array_equal(positions[0].numpy(), 5 + reference_depths(parent))
