"""Verify draft trees against the target: greedy matching or recursive rejection sampling.

`tree_verify(logits, tokens, parent, temperature, proposals=None, uniforms=None)` checks
B independent trees of N nodes in one call and returns a `TreeVerdict` of device tensors:

- logits [B, N, V] float32/float16/bfloat16: row i scores the token after node i, so node
  i's own token is scored by its parent's row; top-p filtering is already applied as -inf.
- tokens, parent [B, N] int64: node 0 is the root (token ignored, parent -1), parent[i] < i;
  children are tested in increasing index order.
- temperature: 0 is greedy; otherwise p = softmax(logits / temperature) in float32.
- proposals [B, N, V] float32 or None: the distribution each node was drawn from; a zero
  row (or None) means the node is a point mass, a token the drafter chose deterministically.
- uniforms [B, N + 1] float32, needed when temperature > 0: uniforms[:, i] decides node i's
  test and uniforms[:, N] the final draw.

Greedy takes, from the root down, the first child whose token is the argmax of the current
node's row; the bonus is the argmax after the last accepted node. Sampled verification tests
children in order, accepting x with probability min(1, p(x) / q(x)) and replacing p by the
residual norm(max(p - q, 0)) after each rejection; the bonus is an inverse-CDF draw from the
final distribution. The emitted tokens then follow the target exactly, for siblings drafted
with or without replacement or deterministically.

The verdict: target_prob (p of each node's token; root 1), accept_prob (greedy: 1 or 0 for
every node; sampled: the ratio as tested, NaN where never tested), status (ROOT, ACCEPTED,
REJECTED, UNREACHED from `specviz.trace`), path (accepted nodes in depth order, -1 padded),
n_accepted, bonus, and corrected (the last accepted node has children, so the bonus follows
rejections). CUDA tensors run the Triton kernels, anything else the PyTorch reference
(see `specviz.kernels.backend`).
"""
from __future__ import annotations

import torch

from ..backend import backend_for
from . import reference
from .reference import TreeVerdict


def tree_verify(logits: torch.Tensor, tokens: torch.Tensor, parent: torch.Tensor, temperature: float,
                proposals: torch.Tensor | None = None, uniforms: torch.Tensor | None = None) -> TreeVerdict:
    """Verify B draft trees at once; see the module docstring for the contract."""
    if backend_for(logits.device) == "triton":
        # imported here so that the package imports without triton installed
        from . import triton as triton_impl

        return triton_impl.tree_verify(logits, tokens, parent, temperature, proposals, uniforms)
    return reference.tree_verify(logits, tokens, parent, temperature, proposals, uniforms)


__all__ = ["TreeVerdict", "tree_verify"]
