"""Timings of kv_compact: one Triton launch for the whole slab against two PyTorch references.

Each shape gives two rows: `kv_compact/per_layer` times what a plain per-layer cache does
(a Python loop of index_select + copy over 30 layers' separate k and v tensors), and
`kv_compact/slab` times the single-gather reference on the slab.
"""
from __future__ import annotations

import torch

from ..backend import interpreting, triton_available
from ..timing import median_ms
from . import reference

LAYERS, BATCH, KV_HEADS, SEQ, HEAD_DIM = 30, 1, 3, 4096, 64
ACCEPTED = (1, 8, 64, 256)


def accepted_path(n: int, prefix_len: int, generator: torch.Generator) -> torch.Tensor:
    """n sorted distinct positions among 2n drafted ones past the prefix, as verification leaves them."""
    picked = torch.randperm(2 * n, generator=generator)[:n].sort().values
    # never the identity, which the dispatcher skips and which moves nothing
    picked[-1] = 2 * n
    return prefix_len + picked


def per_layer_compact(caches: list[torch.Tensor], prefix_len: int, src: torch.Tensor) -> None:
    n = src.numel()
    for cache in caches:
        cache[..., prefix_len : prefix_len + n, :].copy_(cache.index_select(-2, src))


def bench_rows(device: torch.device | str) -> list[dict]:
    """Two dicts per accepted length n; triton_ms and ratio are None where Triton is not timed."""
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    # the interpreter's timings say nothing about the kernel
    time_triton = on_cuda and triton_available() and not interpreting()
    dtype = torch.bfloat16 if on_cuda else torch.float32
    counts = {"warmup": 3, "reps": 20} if on_cuda else {"warmup": 1, "reps": 5}
    if time_triton:
        from . import triton as triton_impl
    planes = (LAYERS, 2, BATCH, KV_HEADS)
    slab = torch.randn(*planes, SEQ, HEAD_DIM, device=device, dtype=dtype)
    caches = [torch.randn(BATCH, KV_HEADS, SEQ, HEAD_DIM, device=device, dtype=dtype) for _ in range(2 * LAYERS)]
    generator = torch.Generator().manual_seed(0)
    prefix_len = SEQ // 2
    out = []
    for n in ACCEPTED:
        src = accepted_path(n, prefix_len, generator).to(device)
        shape = f"{'x'.join(map(str, planes))}x{SEQ}x{HEAD_DIM} n={n} {str(dtype).removeprefix('torch.')}"
        triton_ms = None
        if time_triton:
            triton_ms = median_ms(lambda: triton_impl.kv_compact(slab, prefix_len, src), device, **counts)
        references = {
            "kv_compact/per_layer": lambda: per_layer_compact(caches, prefix_len, src),
            "kv_compact/slab": lambda: reference.kv_compact(slab, prefix_len, src),
        }
        for kernel, fn in references.items():
            reference_ms = median_ms(fn, device, **counts)
            out.append({
                "kernel": kernel,
                "shape": shape,
                "reference_ms": reference_ms,
                "triton_ms": triton_ms,
                "ratio": reference_ms / triton_ms if triton_ms else None,
            })
    return out
