"""KV-cache compaction along the accepted path, in plain PyTorch: the specification.

For P planes of [S, D] and n accepted positions a kernel reads n * D values per plane and
writes n * D values per plane: 2 * P * n * D elements moved in all, the rest of the cache
untouched. This reference gathers into a temporary and copies it back, so it moves twice that.
"""
from __future__ import annotations

import torch


def check_args(slab: torch.Tensor, prefix_len: int, src: torch.Tensor) -> None:
    if slab.dim() < 2:
        raise ValueError(f"slab must end in [S, D]; got shape {tuple(slab.shape)}")
    if src.dim() != 1:
        raise ValueError(f"src must be 1-D; got shape {tuple(src.shape)}")
    if src.dtype != torch.int64:
        raise ValueError(f"src must be int64; got {src.dtype}")
    if prefix_len < 0 or prefix_len + src.numel() > slab.shape[-2]:
        raise ValueError(
            f"prefix_len {prefix_len} + {src.numel()} accepted rows overrun S = {slab.shape[-2]}"
        )


def kv_compact(slab: torch.Tensor, prefix_len: int, src: torch.Tensor) -> None:
    """In place, for every plane: slab[..., prefix_len + i, :] = old slab[..., src[i], :].

    src is strictly increasing with src[i] >= prefix_len + i; rows after prefix_len + n stay.
    """
    check_args(slab, prefix_len, src)
    n = src.numel()
    # index_select copies every source row before any destination row is written
    rows = slab.index_select(-2, src.to(slab.device))
    slab[..., prefix_len : prefix_len + n, :].copy_(rows)
