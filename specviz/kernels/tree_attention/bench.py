"""Tree attention timings: the Triton kernel, SDPA with an explicit mask (the reference), and the naive maths."""
from __future__ import annotations

import numpy as np
import torch

from ..backend import interpreting, triton_available
from ..timing import median_ms
from . import TreeMask
from .reference import tree_attention_naive, tree_attention_sdpa

NODES = (1, 16, 64, 128, 256)
CONTEXTS = (128, 512, 1024, 4096)


def bushy_parent(n: int) -> np.ndarray:
    """A tree like the ones drafters build: four children per node, breadth first."""
    return np.array([-1] + [(i - 1) // 4 for i in range(1, n)], dtype=np.int64)


def ancestors(parent: np.ndarray) -> np.ndarray:
    """[N, N] bool: node i sees j when j is i or one of its ancestors."""
    anc = np.eye(parent.shape[0], dtype=bool)
    for i in range(1, parent.shape[0]):
        anc[i] |= anc[parent[i]]
    return anc


def bench_rows(device: torch.device | str, heads=((9, 3, 64),)) -> list[dict]:
    """One dict per (heads, nodes, context); triton_ms is None where Triton is not timed."""
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    time_triton = on_cuda and triton_available() and not interpreting()
    dtype = torch.bfloat16 if on_cuda else torch.float32
    reps = 20 if on_cuda else 3
    out = []
    for hq, hkv, d in heads:
        for ctx in CONTEXTS:
            for n in NODES:
                mask = TreeMask.from_allowed(ancestors(bushy_parent(n)), device)
                g = torch.Generator(device=device).manual_seed(0)
                q = torch.randn(1, hq, n, d, generator=g, device=device, dtype=dtype)
                k = torch.randn(1, hkv, ctx + n, d, generator=g, device=device, dtype=dtype)
                v = torch.randn(1, hkv, ctx + n, d, generator=g, device=device, dtype=dtype)
                allowed = mask.dense(ctx + n, device)
                ref_ms = median_ms(lambda: tree_attention_sdpa(q, k, v, mask.bits, n, allowed=allowed), device, reps=reps)
                naive_ms = median_ms(lambda: tree_attention_naive(q, k, v, mask.bits, n), device, reps=reps)
                tri_ms = None
                if time_triton:
                    from .triton import tree_attention as triton_tree_attention

                    tri_ms = median_ms(lambda: triton_tree_attention(q, k, v, mask.bits, n), device, reps=reps)
                out.append({
                    "kernel": "tree_attention",
                    "shape": f"heads={hq}/{hkv} d={d} nodes={n} ctx={ctx} {str(dtype).replace('torch.', '')}",
                    "reference_ms": ref_ms,
                    "naive_ms": naive_ms,
                    "triton_ms": tri_ms,
                    "ratio": ref_ms / tri_ms if tri_ms else None,
                })
    return out
