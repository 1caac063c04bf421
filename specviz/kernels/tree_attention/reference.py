"""Tree attention in plain PyTorch: the specification of the Triton kernel.

Queries are the last Q entries of the key sequence (the tokens being scored
this pass). Keys are the cached prefix followed by a "tree block" of the last
`tree_len` entries (tree_len >= Q). Every query sees the whole prefix; inside
the tree block it sees exactly the keys whose bit is set in its row of the
ancestor mask. Without a mask, the tree block is the Q queries themselves and
the rule is causal.

Reads: Q·D + 2·K·D per head (plus Q·W mask words); writes Q·D per head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def visible(mask_bits: torch.Tensor | None, q_len: int, kv_len: int, tree_len: int, device) -> torch.Tensor:
    """[Q, K] bool: which key each query may attend to."""
    if mask_bits is None:
        # causal: query i sits at key index kv_len - q_len + i
        rows = torch.arange(q_len, device=device).unsqueeze(1) + (kv_len - q_len)
        return torch.arange(kv_len, device=device).unsqueeze(0) <= rows
    prefix = kv_len - tree_len
    cols = torch.arange(tree_len, device=device)
    words = mask_bits[:, cols // 32]  # [Q, tree_len]
    in_tree = ((words >> (cols % 32)) & 1).bool()
    out = torch.ones((q_len, kv_len), dtype=torch.bool, device=device)
    out[:, prefix:] = in_tree
    return out


def tree_attention_naive(q, k, v, mask_bits=None, tree_len=None, scale=None):
    """Softmax(q·kᵀ·scale + mask)·v, written out; [B, Hq, Q, D] from k, v [B, Hkv, K, D]."""
    b, hq, q_len, d = q.shape
    hkv, kv_len = k.shape[1], k.shape[2]
    tree_len = q_len if tree_len is None else tree_len
    scale = d**-0.5 if scale is None else scale
    group = hq // hkv
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), kf) * scale
    allowed = visible(mask_bits, q_len, kv_len, tree_len, q.device)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhqk,bhkd->bhqd", torch.softmax(scores, dim=-1), vf).to(q.dtype)


def tree_attention_sdpa(q, k, v, mask_bits=None, tree_len=None, scale=None, allowed=None):
    """The same through torch's SDPA with an explicit boolean mask (what runs off-GPU).

    `allowed` lets a caller build the [Q, K] mask once and reuse it across layers.
    """
    q_len, kv_len = q.shape[2], k.shape[2]
    tree_len = q_len if tree_len is None else tree_len
    if allowed is None and not (mask_bits is None and q_len == 1):
        allowed = visible(mask_bits, q_len, kv_len, tree_len, q.device)
    # grouped-query heads read their shared key/value head in place (no repeat_interleave copy of the cache):
    # the same kernel and the same numbers, ~70 us a layer less on the CPU
    gqa = q.shape[1] != k.shape[1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=gqa)
