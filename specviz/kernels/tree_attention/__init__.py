"""Tree attention: one forward scores every node of a draft tree.

`TreeMask` describes the visibility rule once per forward and is shared by all
layers: the bit-packed ancestor mask the Triton kernel reads, and (built on
first use) the boolean mask the reference hands to SDPA.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..backend import backend_for
from .reference import tree_attention_naive, tree_attention_sdpa, visible


def pack_bits(allowed: np.ndarray) -> np.ndarray:
    """[Q, T] bool -> [Q, ceil(T / 32)] int32; bit j % 32 of word j // 32 is key j."""
    q, t = allowed.shape
    words = (t + 31) // 32
    padded = np.zeros((q, words * 32), dtype=np.uint64)
    padded[:, :t] = allowed
    weights = np.left_shift(np.uint64(1), np.arange(32, dtype=np.uint64))
    packed = (padded.reshape(q, words, 32) * weights).sum(axis=-1)
    return packed.astype(np.uint32).view(np.int32)


@dataclass
class TreeMask:
    """Which tree-block keys each query sees; the prefix before the block is always visible.

    `allowed[i, j]`: query i (the i-th of the last Q positions) may attend to
    tree-block key j, where the block is the last `tree_len` keys.
    """

    bits: torch.Tensor  # [Q, W] int32
    q_len: int
    tree_len: int
    _dense: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_allowed(cls, allowed: np.ndarray, device) -> "TreeMask":
        allowed = np.asarray(allowed, dtype=bool)
        bits = torch.from_numpy(pack_bits(allowed)).to(device)
        return cls(bits, allowed.shape[0], allowed.shape[1])

    def dense(self, kv_len: int, device) -> torch.Tensor:
        """[Q, K] bool for SDPA, built once per key length and reused by every layer."""
        if kv_len not in self._dense:
            self._dense[kv_len] = visible(self.bits, self.q_len, kv_len, self.tree_len, device)
        return self._dense[kv_len]


def tree_attention(q, k, v, mask: TreeMask | None = None, scale: float | None = None) -> torch.Tensor:
    """[B, Hq, Q, D] attention of the last Q positions over k, v [B, Hkv, K, D].

    With no mask the rule is causal. The Triton kernel runs on CUDA, SDPA with
    an explicit mask elsewhere (or when the reference is forced).
    """
    if backend_for(q.device) == "triton":
        from .triton import tree_attention as triton_tree_attention

        bits = mask.bits if mask is not None else None
        tree_len = mask.tree_len if mask is not None else None
        return triton_tree_attention(q, k, v, bits, tree_len, scale)
    if mask is not None:
        return tree_attention_sdpa(q, k, v, mask.bits, mask.tree_len, scale, allowed=mask.dense(k.shape[2], q.device))
    allowed = causal_mask(q.shape[2], k.shape[2], q.device) if q.shape[2] > 1 else None
    return tree_attention_sdpa(q, k, v, scale=scale, allowed=allowed)


_CAUSAL: dict = {}


def causal_mask(q_len: int, kv_len: int, device) -> torch.Tensor:
    """[Q, K] bool causal mask of the last Q positions, built once per shape (a chain's forward asks for the
    same one in every layer) and kept for the next forwards of that shape (a few dozen shapes at most)."""
    key = (q_len, kv_len, str(device))
    mask = _CAUSAL.get(key)
    if mask is None:
        if len(_CAUSAL) >= 64:
            _CAUSAL.clear()
        with torch.inference_mode(False):  # a plain tensor, usable under autograd too
            mask = _CAUSAL[key] = visible(None, q_len, kv_len, q_len, device)
    return mask


__all__ = ["TreeMask", "causal_mask", "pack_bits", "tree_attention", "tree_attention_naive", "tree_attention_sdpa", "visible"]
