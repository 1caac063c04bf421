"""Verification: pick the accepted path and the bonus token from one tree pass.

The algorithm lives in one place, the fused kernel `kernels.tree_verify`
(Triton on CUDA, its PyTorch reference elsewhere). This module adapts the
decoder's single tree to it and reads the verdict back to the host in one
transfer (`to_host`), the step's only sync after the target forward: the engine
hands `read_verdict` whatever else the step needs on the host (the tree's tokens,
the record), so they ride along in that same transfer.

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
from ..kernels.tree_verify import TreeVerdict, tree_verify
from ..trace import BONUS, CORRECTION
from .sampling import processed_probs


@dataclass
class Verdict:
    accepted_path: list  # node indices, root excluded, in depth order
    bonus_token: int  # -1 when nothing follows the path (it ended at end of sequence)
    bonus_kind: str  # BONUS, CORRECTION or NO_BONUS
    status: np.ndarray  # [N] int8
    accept_probs: torch.Tensor  # [N] probability of accepting each node given its parent was accepted (NaN: untested)
    target_probs: torch.Tensor  # [N] target probability of each node's token after its parent (root 1)


def to_host(*tensors: torch.Tensor) -> list:
    """Device tensors as numpy arrays of the same shapes, in ONE device→host transfer.

    Everything travels as int64 (float32 bit patterns for floating tensors, so no value changes);
    floating tensors come back as float32, bools as bool, integers as int64."""
    if not tensors:
        return []
    parts = [t.reshape(-1).float().view(torch.int32).long() if t.is_floating_point() else t.reshape(-1).long()
             for t in tensors]
    flat = torch.cat(parts).cpu().numpy()
    out, at = [], 0
    for t in tensors:
        chunk, at = flat[at : at + t.numel()], at + t.numel()
        if t.is_floating_point():
            chunk = chunk.astype(np.int32).view(np.float32)
        elif t.dtype == torch.bool:
            chunk = chunk.astype(bool)
        out.append(chunk.reshape(tuple(t.shape)))
    return out


def verify_on_device(tree_tokens: torch.Tensor, parent: torch.Tensor, target_logits: torch.Tensor,
                     sampling: SamplingConfig, proposals: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> TreeVerdict:
    """Verify one tree (`parent`: [N] int64 on the logits' device); the kernel's verdict, nothing read back.
    `proposals` [N, V]: the distribution each node was drawn from (row 0 unused)."""
    n = tree_tokens.shape[0]
    device = target_logits.device
    if sampling.greedy:
        return tree_verify(target_logits[None], tree_tokens[None], parent[None], 0.0)
    if sampling.top_p < 1.0:
        # the kernel takes logits: log of the filtered distribution, at temperature 1, is that distribution
        logits, temperature = processed_probs(target_logits, sampling).log(), 1.0
    else:
        logits, temperature = target_logits, sampling.temperature
    uniforms = torch.rand((1, n + 1), generator=generator, device=device)
    return tree_verify(logits[None], tree_tokens[None], parent[None], temperature,
                       None if proposals is None else proposals[None].float(), uniforms)


def read_verdict(out: TreeVerdict, *extra: torch.Tensor) -> tuple:
    """(the verdict on the host, [each of `extra` as numpy]) in one transfer."""
    n_acc, bonus, corrected, path, status, *rest = to_host(out.n_accepted, out.bonus, out.corrected, out.path[0],
                                                           out.status[0], *extra)
    verdict = Verdict(path[: int(n_acc[0])].tolist(), int(bonus[0]), CORRECTION if corrected[0] else BONUS,
                      status.astype(np.int8), out.accept_prob[0], out.target_prob[0])
    return verdict, rest


def verify_tree(tree_tokens: torch.Tensor, parent: np.ndarray, target_logits: torch.Tensor, sampling: SamplingConfig,
                proposals: torch.Tensor | None = None, generator: torch.Generator | None = None) -> Verdict:
    """Verify one tree and read the verdict back. `proposals` [N, V]: the distribution each node was drawn from."""
    parent_t = torch.from_numpy(np.asarray(parent, dtype=np.int64)).to(target_logits.device)
    return read_verdict(verify_on_device(tree_tokens, parent_t, target_logits, sampling, proposals, generator))[0]


def stochastic_tree_verify(tree_tokens, parent, target_probs, proposals, generator) -> Verdict:
    """Recursive rejection sampling against given target probability rows [N, V]."""
    # log p at temperature 1 is p again, and zero-probability tokens stay impossible
    return verify_tree(tree_tokens, parent, target_probs.float().log(), SamplingConfig(temperature=1.0, top_p=1.0),
                       proposals, generator)
