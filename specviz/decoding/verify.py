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
                     generator: torch.Generator | None = None, uniforms: torch.Tensor | None = None) -> TreeVerdict:
    """Verify one tree (`parent`: [N] int64 on the logits' device); the kernel's verdict, nothing read back.
    `proposals` [N, V]: the distribution each node was drawn from (row 0 unused). `uniforms` [1, N + 1]: the
    draws that decide the tests (`draw_uniforms`), drawn here when not given."""
    n = tree_tokens.shape[0]
    device = target_logits.device
    if sampling.greedy:
        return tree_verify(target_logits[None], tree_tokens[None], parent[None], 0.0)
    if sampling.top_p < 1.0:
        # the kernel takes logits: log of the filtered distribution, at temperature 1, is that distribution
        logits, temperature = processed_probs(target_logits, sampling).log(), 1.0
    else:
        logits, temperature = target_logits, sampling.temperature
    if uniforms is None:
        uniforms = draw_uniforms(n, generator, device)
    return tree_verify(logits[None], tree_tokens[None], parent[None], temperature,
                       None if proposals is None else proposals[None].float(), uniforms)


def draw_uniforms(n_nodes: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """[1, N + 1] uniforms: entry i decides node i's test, the last one the bonus or correction draw."""
    return torch.rand((1, n_nodes + 1), generator=generator, device=device)


def residuals_after_rejection(probs: torch.Tensor, tokens: torch.Tensor, parent: np.ndarray,
                              proposals: torch.Tensor | None) -> torch.Tensor:
    """[N, V]: row i is the distribution left at node i's parent once node i is rejected, given that its
    earlier siblings were rejected too: what verification tests the next sibling against, or samples the
    correction from when no sibling is left. The same recursion as the kernel's sampled walk, done for every
    node at once (siblings one rank at a time), for the record only. `probs` [N, V]: the processed target rows;
    `proposals` [N, V] or None: each node's drafting distribution (an all-zero row, or None: a point mass)."""
    n = probs.shape[0]
    out = torch.zeros_like(probs, dtype=torch.float32)
    if n < 2:
        return out
    previous_sibling = np.full(n, -1, dtype=np.int64)
    last_child: dict = {}
    for i in range(1, n):
        previous_sibling[i] = last_child.get(int(parent[i]), -1)
        last_child[int(parent[i])] = i
    rank = np.zeros(n, dtype=np.int64)
    for i in range(1, n):
        rank[i] = rank[previous_sibling[i]] + 1 if previous_sibling[i] >= 0 else 0
    point_mass = torch.zeros_like(out[1:]).scatter_(1, tokens[1:, None], 1.0)
    if proposals is not None:
        drawn = proposals[1:].float()
        point_mass = torch.where(drawn.sum(-1, keepdim=True) > 0, drawn, point_mass)
    for r in range(int(rank[1:].max()) + 1):
        nodes = np.flatnonzero(rank == r)
        nodes = nodes[nodes > 0]
        index = torch.as_tensor(nodes, device=probs.device)
        before = torch.as_tensor(np.where(r == 0, parent[nodes], previous_sibling[nodes]), device=probs.device)
        current = probs[before].float() if r == 0 else out[before]
        left = (current - point_mass[index - 1]).clamp_min(0.0)
        total = left.sum(-1, keepdim=True)
        # an empty residual means the rejection had probability 0; the kernel then falls back to the parent's row
        out[index] = torch.where(total > 0, left / total.clamp_min(1e-30), probs[parent[nodes]].float())
    return out


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
