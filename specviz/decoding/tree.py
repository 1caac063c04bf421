"""Tree buffers: what the target needs to score a whole draft tree in one pass.

Nodes are in topological order (parent[i] < i). Node i attends to the cached
prefix and to its own ancestors (itself included), and sits at position
prefix_len + depth(i), exactly where it would sit if its root-to-node path were
decoded on its own.
"""
from __future__ import annotations

import numpy as np
import torch

from ..trace import tree_depths as depths


def ancestor_matrix(parent: np.ndarray) -> np.ndarray:
    """[N, N] bool: anc[i, j] is True when j is i or an ancestor of i."""
    n = parent.shape[0]
    anc = np.eye(n, dtype=bool)
    # parents precede children, so one forward sweep sees each parent's row complete
    for i in range(1, n):
        anc[i] |= anc[parent[i]]
    return anc


def is_chain(parent: np.ndarray) -> bool:
    return bool(np.all(parent[1:] == np.arange(parent.shape[0] - 1)))


def tree_attention_inputs(parent: np.ndarray, prefix_len: int, dtype: torch.dtype, device) -> tuple:
    """The additive mask [1, 1, N, prefix_len + N] and position ids [1, N] for one tree pass."""
    n = parent.shape[0]
    allowed = np.ones((n, prefix_len + n), dtype=bool)
    allowed[:, prefix_len:] = ancestor_matrix(parent)
    mask = torch.zeros((1, 1, n, prefix_len + n), dtype=dtype, device=device)
    mask.masked_fill_(~torch.from_numpy(allowed).to(device), torch.finfo(dtype).min)
    positions = torch.from_numpy(prefix_len + depths(parent)).to(device).unsqueeze(0)
    return mask, positions
