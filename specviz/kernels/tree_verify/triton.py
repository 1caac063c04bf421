"""Tree verification in Triton: a parallel pass over every row, then one walk per tree.

`tree_rows_kernel` reads each of the B * N logit rows twice (max and argmax, then
the float64 sum of exp(z - max)) and each proposal row once (its sum). The walk,
`tree_walk_kernel`, needs no further row statistics: target probabilities and
greedy matches are gathers, and only a rejection or the final draw reads a full
vocabulary row (logits or the residual scratch, plus the proposal row), writing the
residual back to a float32 [B, V] scratch. Nothing waits for the host.

A walk program takes BLOCK_B trees at once, every scalar of the walk a vector over
them. On a GPU BLOCK_B is 1, one program per tree; the interpreter pays per step,
so there it takes thousands of small trees in one program.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...trace import ACCEPTED, REJECTED, ROOT, UNREACHED
from ..backend import interpreting
from .reference import TreeVerdict, check_args


@triton.jit
def tree_rows_kernel(
    logits_ptr,
    proposals_ptr,
    row_max_ptr,
    row_sum_ptr,
    row_arg_ptr,
    q_sum_ptr,
    R,
    V,
    temperature,
    HAS_Q: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    i_r = tl.program_id(0).to(tl.int64)
    o_r = i_r * BLOCK_R + tl.arange(0, BLOCK_R)
    m_r = o_r < R
    o_lane = tl.arange(0, BLOCK_V)

    b_max = tl.full([BLOCK_R], float("-inf"), tl.float32)
    # a row of -inf never beats the start value and keeps index 0, as torch.argmax does
    b_arg = tl.zeros([BLOCK_R], tl.int64)
    for i_v in range(0, V, BLOCK_V):
        o_v = i_v + o_lane
        m_rv = m_r[:, None] & (o_v < V)[None, :]
        b_z = tl.load(logits_ptr + o_r[:, None] * V + o_v[None, :], mask=m_rv, other=float("-inf")).to(tl.float32)
        b_z = tl.math.div_rn(b_z, temperature)
        b_bmax = tl.max(b_z, axis=1)
        # strictly greater: an equal maximum in a later block keeps the lower index
        m_new = b_bmax > b_max
        b_arg = tl.where(m_new, (i_v + tl.argmax(b_z, axis=1, tie_break_left=True)).to(tl.int64), b_arg)
        b_max = tl.where(m_new, b_bmax, b_max)

    # padding rows (and rows of -inf) would give -inf - -inf; their sum is never read
    b_shift = tl.where(b_max > float("-inf"), b_max, 0.0)
    # float64 sums make the total independent of the summation order to within float32 rounding
    b_sum = tl.zeros([BLOCK_R], tl.float64)
    b_q = tl.zeros([BLOCK_R], tl.float32)
    for i_v in range(0, V, BLOCK_V):
        o_v = i_v + o_lane
        m_rv = m_r[:, None] & (o_v < V)[None, :]
        b_z = tl.load(logits_ptr + o_r[:, None] * V + o_v[None, :], mask=m_rv, other=float("-inf")).to(tl.float32)
        b_w = tl.exp(tl.math.div_rn(b_z, temperature) - b_shift[:, None])
        b_sum += tl.sum(b_w.to(tl.float64), axis=1)
        if HAS_Q:
            b_q += tl.sum(tl.load(proposals_ptr + o_r[:, None] * V + o_v[None, :], mask=m_rv, other=0.0), axis=1)

    tl.store(row_max_ptr + o_r, b_max, mask=m_r)
    tl.store(row_sum_ptr + o_r, b_sum, mask=m_r)
    tl.store(row_arg_ptr + o_r, b_arg, mask=m_r)
    if HAS_Q:
        tl.store(q_sum_ptr + o_r, b_q, mask=m_r)


@triton.jit
def tree_walk_kernel(
    logits_ptr,
    tokens_ptr,
    parent_ptr,
    proposals_ptr,
    uniforms_ptr,
    row_max_ptr,
    row_sum_ptr,
    row_arg_ptr,
    q_sum_ptr,
    scratch_ptr,
    target_prob_ptr,
    accept_prob_ptr,
    status_ptr,
    path_ptr,
    n_accepted_ptr,
    bonus_ptr,
    corrected_ptr,
    B,
    N,
    V,
    temperature,
    GREEDY: tl.constexpr,
    HAS_Q: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    S_ROOT: tl.constexpr,
    S_ACCEPTED: tl.constexpr,
    S_REJECTED: tl.constexpr,
    S_UNREACHED: tl.constexpr,
):
    # one program verifies BLOCK_B trees: rows are trees, columns their nodes
    o_n = tl.arange(0, BLOCK_N)
    o_lane = tl.arange(0, BLOCK_V)
    o_b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    m_b = o_b < B
    m_bn = m_b[:, None] & (o_n < N)[None, :]
    o_bn = o_b[:, None] * N + o_n[None, :]

    # padding nodes get parent -2, which no node index matches
    b_par = tl.load(parent_ptr + o_bn, mask=m_bn, other=-2)
    b_tok = tl.load(tokens_ptr + o_bn, mask=m_bn, other=0)

    # every node's probability under its parent's row; the root's row index is only a placeholder
    m_node = m_bn & (o_n > 0)[None, :] & (b_tok >= 0) & (b_tok < V)
    o_prow = o_b[:, None] * N + tl.maximum(b_par, 0)
    b_l = tl.load(logits_ptr + o_prow * V + b_tok, mask=m_node, other=float("-inf")).to(tl.float32)
    b_pmax = tl.load(row_max_ptr + o_prow, mask=m_node, other=0.0)
    b_psum = tl.load(row_sum_ptr + o_prow, mask=m_node, other=1.0)
    b_tp = (tl.exp(tl.math.div_rn(b_l, temperature) - b_pmax).to(tl.float64) * (1.0 / b_psum)).to(tl.float32)
    tl.store(target_prob_ptr + o_bn, tl.where(o_n[None, :] == 0, 1.0, b_tp), mask=m_bn)

    if GREEDY:
        # every node's match is known up front: its token against the argmax of its parent's row
        b_parg = tl.load(row_arg_ptr + o_prow, mask=m_node, other=-1)
        b_acc = tl.where(b_tok == b_parg, 1.0, 0.0)
    else:
        # sampled acceptance depends on the walk; untested nodes stay NaN
        b_acc = tl.full([BLOCK_B, BLOCK_N], float("nan"), tl.float32)
    tl.store(accept_prob_ptr + o_bn, tl.where(o_n[None, :] == 0, 1.0, b_acc), mask=m_bn)

    # the walk state, one entry per tree: the current node, the last child tested there,
    # whether the distribution is the node's own target row (fresh) or the residual in
    # scratch, and that distribution's float64 total
    node = tl.zeros([BLOCK_B], tl.int64)
    last = tl.zeros([BLOCK_B], tl.int64)
    depth = tl.zeros([BLOCK_B], tl.int64)
    active = m_b
    fresh = o_b >= 0
    total = tl.load(row_sum_ptr + o_b * N, mask=m_b, other=1.0)
    b_status = tl.where(o_n[None, :] == 0, S_ROOT, S_UNREACHED)
    b_status = tl.where(b_par == 0, S_REJECTED, b_status)
    b_path = tl.full([BLOCK_B, BLOCK_N], -1, tl.int64)

    while tl.max(active.to(tl.int32), axis=0) > 0:
        # the next child of the current node: children follow their parent in index order
        m_kid = (b_par == node[:, None]) & (o_n[None, :] > last[:, None])
        child = tl.min(tl.where(m_kid, o_n[None, :], BLOCK_N), axis=1).to(tl.int64)
        has = active & (child < N)
        active = has
        o_row = o_b * N + node
        x = tl.load(tokens_ptr + o_b * N + child, mask=has, other=0)
        # a token outside the vocabulary reads nothing (probability 0) instead of overrunning the row
        m_x = has & (x >= 0) & (x < V)
        if GREEDY:
            acc = has & (x == tl.load(row_arg_ptr + o_row, mask=has, other=-1))
        else:
            inv = 1.0 / total
            r_max = tl.load(row_max_ptr + o_row, mask=has, other=0.0)
            l_x = tl.load(logits_ptr + o_row * V + x, mask=m_x & fresh, other=float("-inf")).to(tl.float32)
            w_fresh = tl.exp(tl.math.div_rn(l_x, temperature) - r_max)
            w_res = tl.load(scratch_ptr + o_b * V + x, mask=m_x & ~fresh, other=0.0)
            p_x = (tl.where(fresh, w_fresh, w_res).to(tl.float64) * inv).to(tl.float32)
            if HAS_Q:
                exact = has & (tl.load(q_sum_ptr + o_b * N + child, mask=has, other=0.0) > 0)
            else:
                # no proposals at all: every node is a point mass
                exact = has & (child < 0)
            q_x = tl.load(proposals_ptr + (o_b * N + child) * V + x, mask=exact & m_x, other=1.0)
            ratio = tl.minimum(tl.math.div_rn(p_x, tl.maximum(q_x, 1e-30)), 1.0)
            tl.store(accept_prob_ptr + o_b * N + child, ratio, mask=has)
            u = tl.load(uniforms_ptr + o_b * (N + 1) + child, mask=has, other=1.0)
            acc = has & (u < ratio)
            rej = has & ~acc

            # on rejection the distribution becomes max(p - q, 0), renormalised lazily
            r_sum = tl.zeros([BLOCK_B], tl.float64)
            if tl.max(rej.to(tl.int32), axis=0) > 0:
                for i_v in range(0, V, BLOCK_V):
                    o_v = i_v + o_lane
                    m_v = rej[:, None] & (o_v < V)[None, :]
                    b_z = tl.load(
                        logits_ptr + o_row[:, None] * V + o_v[None, :], mask=m_v & fresh[:, None], other=float("-inf")
                    ).to(tl.float32)
                    b_wf = tl.exp(tl.math.div_rn(b_z, temperature) - r_max[:, None])
                    b_ws = tl.load(scratch_ptr + o_b[:, None] * V + o_v[None, :], mask=m_v & ~fresh[:, None], other=0.0)
                    b_p = (tl.where(fresh[:, None], b_wf, b_ws).to(tl.float64) * inv[:, None]).to(tl.float32)
                    b_q = tl.load(
                        proposals_ptr + (o_b[:, None] * N + child[:, None]) * V + o_v[None, :],
                        mask=m_v & exact[:, None],
                        other=0.0,
                    )
                    # a point mass at x removes p(x) and leaves the rest as it is
                    b_q = tl.where(exact[:, None], b_q, tl.where(o_v[None, :] == x[:, None], 1.0, 0.0))
                    b_r = tl.where(m_v, tl.maximum(b_p - b_q, 0.0), 0.0)
                    tl.store(scratch_ptr + o_b[:, None] * V + o_v[None, :], b_r, mask=m_v)
                    r_sum += tl.sum(b_r.to(tl.float64), axis=1)
                # the next test may read an entry another thread wrote
                tl.debug_barrier()
            # an empty residual means rejection had probability 0; only rounding gets here,
            # and the node's own target row stands in
            fresh = tl.where(rej, r_sum == 0, fresh)
            r_node = tl.load(row_sum_ptr + o_row, mask=rej, other=1.0)
            total = tl.where(rej, tl.where(r_sum > 0, r_sum, r_node), total)

        last = tl.where(has, child, last)
        # an accepted child becomes the current node, its children the next candidates
        b_status = tl.where((o_n[None, :] == child[:, None]) & acc[:, None], S_ACCEPTED, b_status)
        b_status = tl.where((b_par == child[:, None]) & acc[:, None], S_REJECTED, b_status)
        b_path = tl.where((o_n[None, :] == depth[:, None]) & acc[:, None], child[:, None], b_path)
        depth += acc.to(tl.int64)
        node = tl.where(acc, child, node)
        fresh = fresh | acc
        total = tl.where(acc, tl.load(row_sum_ptr + o_b * N + child, mask=acc, other=1.0), total)

    o_row = o_b * N + node
    if GREEDY:
        bonus = tl.load(row_arg_ptr + o_row, mask=m_b, other=0)
    else:
        # inverse CDF: the smallest token whose float64 running sum exceeds u * total,
        # never a zero weight; stops once every tree has found its token
        r_max = tl.load(row_max_ptr + o_row, mask=m_b, other=0.0)
        u = tl.load(uniforms_ptr + o_b * (N + 1) + N, mask=m_b, other=0.0)
        threshold = u.to(tl.float64) * total
        carry = tl.zeros([BLOCK_B], tl.float64)
        found = ~m_b
        pick = tl.full([BLOCK_B], -1, tl.int64)
        last_pos = tl.full([BLOCK_B], -1, tl.int64)
        i_v = 0
        while (i_v < V) & (tl.min(found.to(tl.int32), axis=0) == 0):
            o_v = i_v + o_lane
            m_v = (m_b & ~found)[:, None] & (o_v < V)[None, :]
            b_z = tl.load(
                logits_ptr + o_row[:, None] * V + o_v[None, :], mask=m_v & fresh[:, None], other=float("-inf")
            ).to(tl.float32)
            b_wf = tl.exp(tl.math.div_rn(b_z, temperature) - r_max[:, None])
            b_ws = tl.load(scratch_ptr + o_b[:, None] * V + o_v[None, :], mask=m_v & ~fresh[:, None], other=0.0)
            b_w = tl.where(m_v, tl.where(fresh[:, None], b_wf, b_ws), 0.0)
            b_w64 = b_w.to(tl.float64)
            b_cdf = carry[:, None] + tl.cumsum(b_w64, axis=1)
            m_hit = (b_cdf > threshold[:, None]) & (b_w > 0)
            first = tl.min(tl.where(m_hit, o_v[None, :], V), axis=1).to(tl.int64)
            m_new = ~found & (first < V)
            pick = tl.where(m_new, first, pick)
            found = found | m_new
            # the running sum can end a rounding below u * total; then the last positive weight wins
            last_pos = tl.maximum(last_pos, tl.max(tl.where(b_w > 0, o_v[None, :], -1), axis=1).to(tl.int64))
            carry += tl.sum(b_w64, axis=1)
            i_v += BLOCK_V
        bonus = tl.where(pick >= 0, pick, last_pos)

    m_leaf = tl.max(tl.where(b_par == node[:, None], 1, 0), axis=1) == 0
    tl.store(status_ptr + o_bn, b_status.to(tl.int8), mask=m_bn)
    tl.store(path_ptr + o_bn, b_path, mask=m_bn)
    tl.store(n_accepted_ptr + o_b, depth, mask=m_b)
    tl.store(bonus_ptr + o_b, bonus, mask=m_b)
    tl.store(corrected_ptr + o_b, tl.where(m_leaf, 0, 1).to(tl.int8), mask=m_b)


def block_sizes(B: int, N: int, V: int) -> tuple[int, int, int, int]:
    """(BLOCK_R, BLOCK_B, BLOCK_N, BLOCK_V): rows per row program, trees per walk program, and the tiles."""
    block_n = triton.next_power_of_2(N)
    if not interpreting():
        return 1, 1, block_n, min(triton.next_power_of_2(V), 4096)
    # the interpreter pays per step, not per element: take many rows and trees per step
    budget = 1 << 16
    block_v = min(triton.next_power_of_2(V), budget)
    block_r = min(triton.next_power_of_2(B * N), max(1, budget // block_v))
    block_b = min(triton.next_power_of_2(B), max(1, budget // max(block_v, block_n)))
    return block_r, block_b, block_n, block_v


def tree_verify(logits, tokens, parent, temperature: float, proposals=None, uniforms=None,
                out: TreeVerdict | None = None) -> TreeVerdict:
    """Triton launch of the same contract as `reference.tree_verify`; `out` supplies the output buffers."""
    B, N, V = check_args(logits, tokens, parent, temperature, proposals, uniforms)
    device = logits.device
    greedy = temperature == 0
    scale = 1.0 if greedy else float(temperature)
    logits, tokens, parent = logits.contiguous(), tokens.contiguous(), parent.contiguous()
    has_q = proposals is not None
    if has_q:
        proposals = proposals.float().contiguous()
    if not greedy:
        uniforms = uniforms.float().contiguous()
    if out is None:
        out = TreeVerdict(
            torch.empty((B, N), dtype=torch.float32, device=device),
            torch.empty((B, N), dtype=torch.float32, device=device),
            torch.empty((B, N), dtype=torch.int8, device=device),
            torch.empty((B, N), dtype=torch.int64, device=device),
            torch.empty(B, dtype=torch.int64, device=device),
            torch.empty(B, dtype=torch.int64, device=device),
            torch.empty(B, dtype=torch.bool, device=device),
        )
    if B == 0:
        return out

    R = B * N
    row_max = torch.empty(R, dtype=torch.float32, device=device)
    row_sum = torch.empty(R, dtype=torch.float64, device=device)
    row_arg = torch.empty(R, dtype=torch.int64, device=device)
    q_sum = torch.empty(R if has_q else 1, dtype=torch.float32, device=device)
    scratch = torch.empty((B, V) if not greedy else (1,), dtype=torch.float32, device=device)
    BLOCK_R, BLOCK_B, BLOCK_N, BLOCK_V = block_sizes(B, N, V)
    num_warps = 8 if BLOCK_V >= 2048 else 4

    tree_rows_kernel[(triton.cdiv(R, BLOCK_R),)](
        logits,
        proposals if has_q else row_max,
        row_max,
        row_sum,
        row_arg,
        q_sum,
        R,
        V,
        scale,
        HAS_Q=has_q,
        BLOCK_R=BLOCK_R,
        BLOCK_V=BLOCK_V,
        num_warps=num_warps,
    )
    tree_walk_kernel[(triton.cdiv(B, BLOCK_B),)](
        logits,
        tokens,
        parent,
        proposals if has_q else row_max,
        uniforms if not greedy else row_max,
        row_max,
        row_sum,
        row_arg,
        q_sum,
        scratch,
        out.target_prob,
        out.accept_prob,
        out.status,
        out.path,
        out.n_accepted,
        out.bonus,
        out.corrected.view(torch.int8),
        B,
        N,
        V,
        scale,
        GREEDY=greedy,
        HAS_Q=has_q,
        BLOCK_B=BLOCK_B,
        BLOCK_N=BLOCK_N,
        BLOCK_V=BLOCK_V,
        S_ROOT=ROOT,
        S_ACCEPTED=ACCEPTED,
        S_REJECTED=REJECTED,
        S_UNREACHED=UNREACHED,
        num_warps=num_warps,
    )
    return out
