"""Verification: pick the accepted path and the bonus token from one tree pass.

The algorithm lives in one place, the fused kernel `kernels.tree_verify`
(Triton on CUDA, its PyTorch reference elsewhere). This module adapts the
decoder's single tree to it and reads the verdict back to the host in one
transfer, the step's only sync after the target forward.

Row i of the target's logits is its next-token distribution *after* node i,
so node i's own token is scored by its parent's row.

Sampled verification is recursive rejection sampling over the tree
(SpecInfer / SpecTr / RSD), exact for any tree: children are tested in order,
child x with proposal q accepted with probability min(1, p(x) / q(x)); on
rejection p becomes the residual norm(max(p - q, 0)) and the next sibling is
tested against it. If every child is rejected the step ends with a draw from
the residual (a correction); at a leaf, with a draw from the target (a bonus).
Each test emits exactly p for any proposal the candidate really was drawn
from, so siblings drawn with or without replacement or chosen
deterministically (an all-zero proposal row: a point mass) all keep the
target's distribution. A chain is the one-child case.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import SamplingConfig
from ..kernels.tree_verify import tree_verify
from ..trace import BONUS, CORRECTION
from .sampling import processed_probs


@dataclass
class Verdict:
    accepted_path: list  # node indices, root excluded, in depth order
    bonus_token: int
    bonus_kind: str
    status: np.ndarray  # [N] int8
    accept_probs: torch.Tensor  # [N] probability of accepting each node given its parent was accepted (NaN: untested)
    target_probs: torch.Tensor  # [N] target probability of each node's token after its parent (root 1)


def verify_tree(tree_tokens: torch.Tensor, parent: np.ndarray, target_logits: torch.Tensor, sampling: SamplingConfig,
                proposals: torch.Tensor | None = None, generator: torch.Generator | None = None) -> Verdict:
    """Verify one tree. `proposals` [N, V]: the distribution each node was drawn from (row 0 unused)."""
    n = tree_tokens.shape[0]
    device = target_logits.device
    parent_t = torch.from_numpy(np.asarray(parent, dtype=np.int64)).to(device)
    if sampling.greedy:
        out = tree_verify(target_logits[None], tree_tokens[None], parent_t[None], 0.0)
    else:
        if sampling.top_p < 1.0:
            # the kernel takes logits: log of the filtered distribution, at temperature 1, is that distribution
            logits, temperature = processed_probs(target_logits, sampling).log(), 1.0
        else:
            logits, temperature = target_logits, sampling.temperature
        uniforms = torch.rand((1, n + 1), generator=generator, device=device)
        out = tree_verify(logits[None], tree_tokens[None], parent_t[None], temperature,
                          None if proposals is None else proposals[None].float(), uniforms)
    host = torch.cat([out.n_accepted, out.bonus, out.corrected.long(), out.path[0], out.status[0].long()]).cpu().numpy()
    n_acc = int(host[0])
    path = [int(i) for i in host[3 : 3 + n_acc]]
    return Verdict(path, int(host[1]), CORRECTION if host[2] else BONUS, host[3 + n :].astype(np.int8),
                   out.accept_prob[0], out.target_prob[0])


def greedy_verify(tree_tokens: torch.Tensor, parent: np.ndarray, target_logits: torch.Tensor) -> Verdict:
    """Longest root-to-node path whose every token is the target's argmax after its parent."""
    return verify_tree(tree_tokens, parent, target_logits, SamplingConfig())


def stochastic_tree_verify(tree_tokens, parent, target_probs, proposals, generator) -> Verdict:
    """Recursive rejection sampling against given target probability rows [N, V]."""
    # log p at temperature 1 is p again, and zero-probability tokens stay impossible
    return verify_tree(tree_tokens, parent, target_probs.float().log(), SamplingConfig(temperature=1.0, top_p=1.0),
                       proposals, generator)
