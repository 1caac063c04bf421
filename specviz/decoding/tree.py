"""Tree buffers: what the target needs to score a whole draft tree in one pass.

Nodes are in topological order (parent[i] < i). Node i attends to the cached
prefix and to its own ancestors (itself included), and sits at position
prefix_len + depth(i), exactly where it would sit if its root-to-node path were
decoded on its own.

The ancestor matrix and the additive mask are built here once for everything
that scores a tree: the engine's target pass (and `tree_attention_inputs`), and
the model drafters' level passes over their own caches (`slot_mask`).
"""
from __future__ import annotations

import numpy as np
import torch

from ..trace import ancestor_matrix
from ..trace import tree_depths as depths


def upload(values, device, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Host values (a list or array) to the device, without waiting for the device's queued work."""
    return torch.as_tensor(np.asarray(values), dtype=dtype).to(device, non_blocking=True)


def additive_mask(allowed, dtype: torch.dtype, device) -> torch.Tensor:
    """[Q, K] bool array -> [1, 1, Q, K] additive mask: 0 where allowed, the dtype's minimum elsewhere."""
    allowed = upload(allowed, device, torch.bool)
    mask = torch.zeros((1, 1, *allowed.shape), dtype=dtype, device=device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def tree_attention_inputs(parent: np.ndarray, prefix_len: int, dtype: torch.dtype, device) -> tuple:
    """The additive mask [1, 1, N, prefix_len + N] and position ids [1, N] for one tree pass."""
    n = parent.shape[0]
    allowed = np.ones((n, prefix_len + n), dtype=bool)
    allowed[:, prefix_len:] = ancestor_matrix(parent)
    positions = upload(prefix_len + depths(parent), device).unsqueeze(0)
    return additive_mask(allowed, dtype, device), positions
