"""Tree attention in Triton: flash attention over prefix + tree block, with a bit-packed ancestor mask.

One program owns a block of query rows of one KV head and, optionally, one
split of the key range. Rows pack (query, head-in-group) pairs, so the heads
that share a KV head (grouped-query attention) read each key block once. When
there are too few programs to fill the GPU (short trees over long contexts),
the key range is split and the partial results are merged by their
log-sum-exp, as in flash-decoding.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..backend import interpreting

LOG2E = 1.4426950408889634


@triton.jit
def tree_attention_kernel(
    q, k, v, o, lse, bits,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_os, stride_ob, stride_oh, stride_om, stride_od,
    n_kv_heads, q_len, kv_len, tree_len, n_words, keys_per_split, qk_scale,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HAS_TREE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
):
    i_m = tl.program_id(0).to(tl.int64)
    i_bh = tl.program_id(1).to(tl.int64)
    i_s = tl.program_id(2).to(tl.int64)
    i_b = i_bh // n_kv_heads
    i_kvh = i_bh % n_kv_heads

    # row r is query r // GROUP of head i_kvh * GROUP + r % GROUP
    o_r = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_r = o_r < q_len * GROUP
    i_q = o_r // GROUP
    i_h = i_kvh * GROUP + o_r % GROUP
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < HEAD_DIM

    p_q = q + i_b * stride_qb + i_h[:, None] * stride_qh + i_q[:, None] * stride_qm + o_d[None, :] * stride_qd
    b_q = tl.load(p_q, mask=m_r[:, None] & m_d[None, :], other=0.0)
    if UPCAST:
        b_q = b_q.to(tl.float32)

    # causal rows never need keys past the last row's own position
    last_row = kv_len - q_len + tl.max(tl.where(m_r, i_q, 0), axis=0)
    start = i_s * keys_per_split
    end = tl.minimum(start + keys_per_split, kv_len)
    if not HAS_TREE:
        end = tl.minimum(end, last_row + 1)
    tree_start = kv_len - tree_len

    b_m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([BLOCK_M], dtype=tl.float32)
    b_acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for n0 in range(start, end, BLOCK_N):
        o_n = n0 + tl.arange(0, BLOCK_N)
        m_n = o_n < end
        p_k = k + i_b * stride_kb + i_kvh * stride_kh + o_n[None, :] * stride_kn + o_d[:, None] * stride_kd
        b_k = tl.load(p_k, mask=m_d[:, None] & m_n[None, :], other=0.0)
        if UPCAST:
            b_k = b_k.to(tl.float32)
        if IEEE:
            b_s = tl.dot(b_q, b_k, input_precision="ieee") * qk_scale
        else:
            b_s = tl.dot(b_q, b_k) * qk_scale
        if HAS_TREE:
            # prefix keys are visible to every query; tree keys only where the row's ancestor bit is set
            i_t = o_n - tree_start
            m_t = (i_t >= 0) & m_n
            i_t = tl.maximum(i_t, 0)
            p_w = bits + i_q[:, None] * n_words + (i_t // 32)[None, :]
            b_w = tl.load(p_w, mask=m_r[:, None] & m_t[None, :], other=0)
            b_bit = (b_w >> (i_t % 32).to(tl.int32)[None, :]) & 1
            m_ok = ((~m_t)[None, :] | (b_bit != 0)) & m_n[None, :]
        else:
            m_ok = (o_n[None, :] <= (kv_len - q_len + i_q)[:, None]) & m_n[None, :]
        b_s = tl.where(m_ok, b_s, float("-inf"))
        b_m_new = tl.maximum(b_m, tl.max(b_s, axis=1))
        # a row with nothing visible yet keeps m = -inf; shift by 0 so exp2 gives 0, not nan
        b_shift = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
        b_alpha = tl.exp2(b_m - b_shift)
        b_p = tl.exp2(b_s - b_shift[:, None])
        b_l = b_l * b_alpha + tl.sum(b_p, axis=1)
        p_v = v + i_b * stride_vb + i_kvh * stride_vh + o_n[:, None] * stride_vn + o_d[None, :] * stride_vd
        b_v = tl.load(p_v, mask=m_n[:, None] & m_d[None, :], other=0.0)
        if UPCAST:
            b_v = b_v.to(tl.float32)
        if IEEE:
            b_acc = b_acc * b_alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision="ieee")
        else:
            b_acc = b_acc * b_alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v)
        b_m = b_m_new

    b_out = b_acc / tl.where(b_l > 0, b_l, 1.0)[:, None]
    p_o = o + i_s * stride_os + i_b * stride_ob + i_h[:, None] * stride_oh + i_q[:, None] * stride_om + o_d[None, :] * stride_od
    tl.store(p_o, b_out.to(o.dtype.element_ty), mask=m_r[:, None] & m_d[None, :])
    if lse is not None:
        # base-2 log-sum-exp of the split, -inf where it saw no visible key
        b_lse = tl.where(b_l > 0, b_m + tl.log2(tl.where(b_l > 0, b_l, 1.0)), float("-inf"))
        # lse is a contiguous [splits, batch, heads, Q]; batch * kv heads programs run on axis 1
        p_lse = lse + ((i_s * tl.num_programs(1) + i_b * n_kv_heads) * GROUP + i_h) * q_len + i_q
        tl.store(p_lse, b_lse, mask=m_r)


def default_splits(n_programs: int, kv_len: int, device: torch.device) -> int:
    """Split the keys when the row blocks alone would leave most of the GPU idle."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    if n_programs >= sms:
        return 1
    return max(1, min(triton.cdiv(2 * sms, n_programs), kv_len // 256, 32))


def tree_attention(q, k, v, mask_bits=None, tree_len=None, scale=None, splits=None, buffers=None):
    """[B, Hq, Q, D] attention output; see reference.tree_attention_naive for the rule.

    `buffers(shape, dtype)` allocates the kernel's output buffers (default: uninitialised memory); the
    tests pass one that fills them with NaN, so any element the kernel fails to write shows up."""
    alloc = buffers or (lambda shape, dtype: torch.empty(shape, dtype=dtype, device=q.device))
    b, hq, q_len, d = q.shape
    _, hkv, kv_len, _ = k.shape
    if hq % hkv:
        raise ValueError(f"{hq} query heads do not group over {hkv} KV heads")
    tree_len = q_len if tree_len is None else int(tree_len)
    if mask_bits is not None:
        mask_bits = mask_bits.contiguous()
        if mask_bits.shape[0] != q_len or mask_bits.shape[1] * 32 < tree_len:
            raise ValueError(f"mask of shape {tuple(mask_bits.shape)} does not cover {q_len} queries x {tree_len} keys")
    group = hq // hkv
    scale = d**-0.5 if scale is None else scale
    block_d = max(16, triton.next_power_of_2(d))
    block_m = 16 if q_len * group <= 16 else 64
    block_n = 64 if block_d <= 64 else 32
    n_row_blocks = triton.cdiv(q_len * group, block_m)
    if splits is None:
        splits = default_splits(n_row_blocks * b * hkv, kv_len, q.device)
    keys_per_split = triton.cdiv(triton.cdiv(kv_len, splits), block_n) * block_n
    splits = triton.cdiv(kv_len, keys_per_split)
    if splits == 1:
        out = alloc(q.shape, q.dtype)
        lse = None
        strides = (0, *out.stride())
    else:
        out = alloc((splits, b, hq, q_len, d), torch.float32)
        lse = alloc((splits, b, hq, q_len), torch.float32)
        strides = out.stride()
    grid = (n_row_blocks, b * hkv, splits)
    tree_attention_kernel[grid](
        q, k, v, out, lse, mask_bits,
        *q.stride(), *k.stride(), *v.stride(), *strides,
        hkv, q_len, kv_len, tree_len,
        mask_bits.shape[1] if mask_bits is not None else 0,
        keys_per_split, scale * LOG2E,
        GROUP=group, HEAD_DIM=d, HAS_TREE=mask_bits is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        IEEE=q.dtype == torch.float32,
        # triton's interpreter computes bf16 dots wrongly (3.9), so it gets fp32 operands there
        UPCAST=interpreting() and q.dtype == torch.bfloat16,
    )
    if lse is None:
        return out
    # merge the splits by their share of the softmax mass
    top = lse.amax(dim=0, keepdim=True)
    weight = torch.exp2(lse - torch.where(torch.isinf(top), torch.zeros_like(top), top))
    total = weight.sum(dim=0)
    merged = (out * weight.unsqueeze(-1)).sum(dim=0) / torch.where(total > 0, total, torch.ones_like(total)).unsqueeze(-1)
    return merged.to(q.dtype)
