"""KV-cache compaction along the accepted path, for all layers in one launch.

After verification the accepted tokens' rows sit at scattered positions past the prefix;
this moves them to prefix_len, prefix_len + 1, ... in every [S, D] plane of a cache slab
such as [layers, 2, batch, kv_heads, S, D]. CUDA tensors run the Triton kernel, anything
else the PyTorch reference (see `specviz.kernels.backend`).
"""
from __future__ import annotations

import torch

from ..backend import backend_for
from . import reference


def kv_compact(slab: torch.Tensor, prefix_len: int, src: torch.Tensor) -> None:
    """In place, for every plane: slab[..., prefix_len + i, :] = old slab[..., src[i], :].

    src is int64 [n], strictly increasing, with src[i] >= prefix_len + i (not checked:
    that would cost a device sync). Rows from prefix_len + n on are left as they were.
    """
    n = src.numel()
    if n == 0:
        return
    # a host-side src tells for free whether every row is already in place: strictly
    # increasing from prefix_len to prefix_len + n - 1 leaves no other choice
    if src.device.type == "cpu" and int(src[0]) == prefix_len and int(src[-1]) == prefix_len + n - 1:
        return
    if backend_for(slab.device) == "triton" and slab.is_contiguous():
        # imported here so that the package imports without triton installed
        from . import triton as triton_impl

        triton_impl.kv_compact(slab, prefix_len, src)
        return
    reference.kv_compact(slab, prefix_len, src)


__all__ = ["kv_compact"]
