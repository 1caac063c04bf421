"""Per-row softmax statistics in Triton: one program per row, two passes over the vocabulary."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import interpreting
from .reference import LogitStats, check_args


@triton.jit
def logit_stats_kernel(
    x_ptr,
    max_prob_ptr,
    argmax_ptr,
    gap_ptr,
    entropy_ptr,
    lse_ptr,
    stride_r,
    V,
    inv_temperature,
    BLOCK_V: tl.constexpr,
):
    i_r = tl.program_id(0).to(tl.int64)
    p_row = x_ptr + i_r * stride_r
    o_lane = tl.arange(0, BLOCK_V)

    # pass 1: every lane keeps its own best value, its index and its runner-up, so the
    # loop is elementwise and the row is reduced once at the end
    b_m1 = tl.full([BLOCK_V], float("-inf"), tl.float32)
    b_m2 = tl.full([BLOCK_V], float("-inf"), tl.float32)
    # a row of -inf never beats the start value; starting at each lane's first index makes
    # the final reduction pick index 0 then, as torch.argmax does
    b_i1 = o_lane
    for i_v in range(0, tl.cdiv(V, BLOCK_V)):
        o_v = i_v * BLOCK_V + o_lane
        m_v = o_v < V
        b_x = tl.load(p_row + o_v, mask=m_v, other=float("-inf")).to(tl.float32) * inv_temperature
        # strictly greater: a lane sees its indices in increasing order, so an equal later
        # value stays second and the lane keeps its lowest index
        m_new = b_x > b_m1
        b_m2 = tl.where(m_new, b_m1, tl.maximum(b_m2, b_x))
        b_i1 = tl.where(m_new, o_v, b_i1)
        b_m1 = tl.where(m_new, b_x, b_m1)

    b_max = tl.max(b_m1, axis=0)
    # ties across lanes go to the lowest index
    b_arg = tl.min(tl.where(b_m1 == b_max, b_i1, V), axis=0)
    # the runner-up is another lane's best or any lane's second; the winning lane's best is
    # excluded by index, so a tie across lanes gives a runner-up equal to the max
    b_second = tl.maximum(
        tl.max(b_m2, axis=0),
        tl.max(tl.where(b_i1 == b_arg, float("-inf"), b_m1), axis=0),
    )

    # pass 2: s = sum exp(x - max) and t = sum exp(x - max) * (x - max), so that
    # entropy = log s - t / s without a third pass
    b_s = tl.zeros([BLOCK_V], tl.float32)
    b_t = tl.zeros([BLOCK_V], tl.float32)
    for i_v in range(0, tl.cdiv(V, BLOCK_V)):
        o_v = i_v * BLOCK_V + o_lane
        m_v = o_v < V
        b_x = tl.load(p_row + o_v, mask=m_v, other=float("-inf")).to(tl.float32) * inv_temperature
        b_d = b_x - b_max
        b_e = tl.exp(b_d)
        b_s += b_e
        # masked lanes and -inf logits would give 0 * -inf = nan; they contribute nothing
        b_t += b_e * tl.where(b_e > 0, b_d, 0.0)
    b_sum = tl.sum(b_s, axis=0)
    b_tsum = tl.sum(b_t, axis=0)

    tl.store(max_prob_ptr + i_r, 1.0 / b_sum)
    tl.store(argmax_ptr + i_r, b_arg.to(tl.int64))
    # p1 - p2 = (1 - exp(second - max)) / s; with V == 1 the second is -inf and the gap is p1
    tl.store(gap_ptr + i_r, (1.0 - tl.exp(b_second - b_max)) / b_sum)
    tl.store(entropy_ptr + i_r, tl.log(b_sum) - b_tsum / b_sum)
    tl.store(lse_ptr + i_r, b_max + tl.log(b_sum))


def default_block_v(V: int) -> int:
    # the interpreter pays per step, not per element: one or two steps cover a 152k vocabulary
    cap = 65536 if interpreting() else 4096
    return min(cap, triton.next_power_of_2(V))


def logit_stats(
    logits: torch.Tensor,
    temperature: float = 1.0,
    out: LogitStats | None = None,
    block_v: int | None = None,
) -> LogitStats:
    """Triton launch; `out` supplies the five [R] buffers, `block_v` overrides the block along V."""
    temperature = check_args(logits, temperature)
    R, V = logits.shape
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    if out is None:
        stats = torch.empty((4, R), dtype=torch.float32, device=logits.device)
        argmax = torch.empty(R, dtype=torch.int64, device=logits.device)
        out = LogitStats(stats[0], argmax, stats[1], stats[2], stats[3])
    if R == 0:
        return out
    BLOCK_V = block_v or default_block_v(V)
    logit_stats_kernel[(R,)](
        logits,
        out.max_prob,
        out.argmax,
        out.top2_gap,
        out.entropy,
        out.logsumexp,
        logits.stride(0),
        V,
        1.0 / temperature,
        BLOCK_V=BLOCK_V,
        num_warps=8 if BLOCK_V >= 2048 else 4,
    )
    return out
