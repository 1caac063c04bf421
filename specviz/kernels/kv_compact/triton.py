"""KV-cache compaction in Triton: every layer, k and v, batch and head in one launch."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import interpreting
from .reference import check_args


@triton.jit
def kv_compact_kernel(
    slab_ptr,
    src_ptr,
    prefix_len,
    n,
    S,
    D,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i_p = tl.program_id(0).to(tl.int64)
    i_d = tl.program_id(1).to(tl.int64)
    p_plane = slab_ptr + i_p * S * D
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < D
    # chunks go in increasing i: chunk j reads rows src[i] > prefix_len + i', past every row
    # an earlier chunk wrote, so only the reads and writes inside one chunk can collide
    for i_n in range(0, tl.cdiv(n, BLOCK_N)):
        o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_n = o_n < n
        b_src = tl.load(src_ptr + o_n, mask=m_n, other=0)
        b_dst = (prefix_len + o_n).to(tl.int64)
        # a row already in place needs neither read nor write; an accept-all step moves nothing
        m_rows = (m_n & (b_src != b_dst))[:, None] & m_d[None, :]
        b_rows = tl.load(p_plane + b_src[:, None] * D + o_d[None, :], mask=m_rows)
        # a destination row may be another thread's source row in this chunk: every thread
        # finishes its loads before any thread stores
        tl.debug_barrier()
        tl.store(p_plane + b_dst[:, None] * D + o_d[None, :], b_rows, mask=m_rows)


def block_sizes(n: int, D: int) -> tuple[int, int]:
    BLOCK_D = min(256, triton.next_power_of_2(D))
    # the interpreter pays per step: one chunk holds every row
    if interpreting():
        return triton.next_power_of_2(n), BLOCK_D
    # about 4096 elements per chunk keeps a chunk in registers at 4 warps
    return max(1, min(triton.next_power_of_2(n), 4096 // BLOCK_D)), BLOCK_D


def kv_compact(
    slab: torch.Tensor, prefix_len: int, src: torch.Tensor, block_n: int | None = None
) -> None:
    """Triton launch over P = prod(slab.shape[:-2]) planes; `block_n` overrides the row chunk."""
    check_args(slab, prefix_len, src)
    if not slab.is_contiguous():
        raise ValueError("the Triton kv_compact needs a contiguous slab")
    n = src.numel()
    S, D = slab.shape[-2:]
    P = slab.numel() // (S * D) if S * D else 0
    if n == 0 or P == 0 or D == 0:
        return
    src = src.to(slab.device).contiguous()
    BLOCK_N, BLOCK_D = block_sizes(n, D)
    if block_n is not None:
        BLOCK_N = block_n
    grid = (P, triton.cdiv(D, BLOCK_D))
    kv_compact_kernel[grid](slab, src, prefix_len, n, S, D, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D)
