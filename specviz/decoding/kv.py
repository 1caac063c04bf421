"""KV-cache surgery after verification, for our slab cache or transformers' DynamicCache.

After a tree pass the cache holds prefix + all N tree nodes. `keep_path`
brings it back to prefix + root + accepted path by moving the accepted
entries into place and dropping the rest. On the slab cache that is one
`kv_compact` launch for all layers; a DynamicCache (kept for models that
cannot use the slab) gets a per-layer index gather over the tree block.
"""
from __future__ import annotations

import torch

from ..models.cache import SlabCache


def truncate(cache, length: int) -> None:
    """Drop every entry at position >= length."""
    if isinstance(cache, SlabCache):
        cache.truncate(length)
        return
    for layer in cache.layers:
        if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
            continue
        layer.keys = layer.keys[..., :length, :]
        layer.values = layer.values[..., :length, :]


def keep_path(cache, prefix_len: int, path_nodes: list) -> None:
    """Keep the prefix, the root (tree node 0) and the accepted nodes, in that order.

    `path_nodes` are tree node indices (root excluded) in depth order. For a
    chain whose accepted path is nodes 1..A the entries are already in place.
    """
    n_keep = 1 + len(path_nodes)
    if isinstance(cache, SlabCache):
        cache.keep_path(prefix_len, [prefix_len + i for i in (0, *path_nodes)])
        return
    if list(path_nodes) != list(range(1, n_keep)):
        src = torch.tensor([0, *path_nodes], dtype=torch.long) + prefix_len
        for layer in cache.layers:
            src_d = src.to(layer.keys.device)
            layer.keys[..., prefix_len : prefix_len + n_keep, :] = layer.keys.index_select(-2, src_d)
            layer.values[..., prefix_len : prefix_len + n_keep, :] = layer.values.index_select(-2, src_d)
    truncate(cache, prefix_len + n_keep)
