"""A static KV cache: every layer's keys and values in one preallocated slab.

The slab is [layers, 2, batch, kv_heads, capacity, head_dim]. Each layer's
`update` writes the new entries in place and hands the attention a view of
the filled part, so no step concatenates or reallocates (transformers'
DynamicCache copies the whole cache on every forward). Keeping the accepted
path after verification is one `kv_compact` launch over all layers at once.
Capacity grows by doubling if a run outgrows it.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from ..kernels.kv_compact import kv_compact


class SlabLayer(CacheLayerMixin):
    is_compileable = False

    def __init__(self, owner: "SlabCache", index: int):
        super().__init__()
        self.owner = owner
        self.index = index
        self.length = 0

    def lazy_initialization(self, key_states, value_states) -> None:
        self.owner.allocate(key_states)
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if self.owner.slab is None:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        start, end = self.length, self.length + n
        self.owner.reserve(end)
        slab = self.owner.slab
        slab[self.index, 0, :, :, start:end].copy_(key_states)
        slab[self.index, 1, :, :, start:end].copy_(value_states)
        self.length = end
        self.refresh()
        return self.keys, self.values

    def refresh(self) -> None:
        slab = self.owner.slab
        self.keys = slab[self.index, 0, :, :, : self.length]
        self.values = slab[self.index, 1, :, :, : self.length]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.length = 0
        if self.owner.slab is not None:
            self.refresh()


class SlabCache(Cache):
    def __init__(self, n_layers: int, capacity: int = 1024):
        super().__init__(layers=[SlabLayer(self, i) for i in range(n_layers)])
        self.capacity = max(16, int(capacity))
        self.slab = None

    def allocate(self, like: torch.Tensor) -> None:
        b, h, _, d = like.shape
        # a plain tensor even when the first forward runs under inference_mode, so a cache
        # made in one mode can be written in the other (tests score under no_grad)
        with torch.inference_mode(False):
            self.slab = torch.zeros((len(self.layers), 2, b, h, self.capacity, d), dtype=like.dtype, device=like.device)

    def reserve(self, length: int) -> None:
        if length <= self.capacity:
            return
        capacity = max(length, 2 * self.capacity)
        with torch.inference_mode(False):
            grown = self.slab.new_zeros((*self.slab.shape[:4], capacity, self.slab.shape[-1]))
            grown[..., : self.capacity, :] = self.slab
        self.slab, self.capacity = grown, capacity
        for layer in self.layers:
            layer.refresh()

    @property
    def length(self) -> int:
        return self.layers[0].length

    def truncate(self, length: int) -> None:
        for layer in self.layers:
            layer.length = min(layer.length, length)
            if self.slab is not None:
                layer.refresh()

    def keep_path(self, prefix_len: int, src_positions: list) -> None:
        """Move the entries at these absolute positions to prefix_len, prefix_len + 1, … and drop the rest."""
        n = len(src_positions)
        if self.slab is not None and list(src_positions) != list(range(prefix_len, prefix_len + n)):
            src = torch.tensor(src_positions, dtype=torch.int64).to(self.slab.device, non_blocking=True)
            kv_compact(self.slab, prefix_len, src)
        self.truncate(prefix_len + n)
