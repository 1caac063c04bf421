"""Tree verification in plain PyTorch: the specification the Triton kernel is tested against.

B independent draft trees of N nodes are verified against the target's logits at
every node. Greedy runs accept the longest path of argmax matches; sampled runs
use recursive rejection sampling (SpecInfer / SpecTr / RSD), exact for any tree
and any way the siblings were drafted, driven by caller-supplied uniforms so that
the reference and the kernel make the same draws.

The row statistics are vectorised over all B * N rows: one read of the logits and
one float32 [B, N, V] temporary. The walk is a Python loop over trees and tested
children, each rejection reading and writing one vocabulary row.

The arithmetic is fixed so that two implementations agree decision for decision:
- z = logits / temperature in float32 (temperature 1 when greedy), w = exp(z - max z)
  the unnormalised target row, and sums of weights accumulated in float64;
- a probability is float32(float64(w) * (1 / total)), with the reciprocal in float64;
- the accept ratio is min(1, p(x) / max(q(x), 1e-30)) in float32, accepted when u < ratio;
- a residual is max(p - q, 0) in float32, kept unnormalised with its float64 total;
- the final draw takes the smallest token whose float64 running sum of weights exceeds
  u * total, skipping zero weights, and falls back to the last positive weight.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ...trace import ACCEPTED, REJECTED, ROOT, UNREACHED


class TreeVerdict(NamedTuple):
    """The outcome of verifying B trees; device tensors, nothing copied to the host."""

    target_prob: torch.Tensor  # [B, N] float32
    accept_prob: torch.Tensor  # [B, N] float32
    status: torch.Tensor  # [B, N] int8
    path: torch.Tensor  # [B, N] int64
    n_accepted: torch.Tensor  # [B] int64
    bonus: torch.Tensor  # [B] int64
    corrected: torch.Tensor  # [B] bool


def check_args(logits, tokens, parent, temperature, proposals, uniforms) -> tuple[int, int, int]:
    """Shapes and dtypes the implementations rely on; returns (B, N, V)."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, N, V], got {tuple(logits.shape)}")
    B, N, V = logits.shape
    if N < 1 or V < 1:
        raise ValueError("a tree has at least its root and the vocabulary at least one token")
    if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"logits must be float32, float16 or bfloat16, got {logits.dtype}")
    for name, t in (("tokens", tokens), ("parent", parent)):
        if tuple(t.shape) != (B, N) or t.dtype != torch.int64:
            raise ValueError(f"{name} must be int64 [{B}, {N}], got {t.dtype} {tuple(t.shape)}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if proposals is not None and tuple(proposals.shape) != (B, N, V):
        raise ValueError(f"proposals must be [{B}, {N}, {V}], got {tuple(proposals.shape)}")
    if temperature > 0:
        if uniforms is None:
            raise ValueError("sampled verification needs uniforms [B, N + 1]")
        if tuple(uniforms.shape) != (B, N + 1):
            raise ValueError(f"uniforms must be [{B}, {N + 1}], got {tuple(uniforms.shape)}")
    return B, N, V


def statuses(parent: np.ndarray, on_path: np.ndarray) -> np.ndarray:
    """[B, N] int8 statuses from parents and the accepted nodes (root included in on_path)."""
    B, N = parent.shape
    reached = np.take_along_axis(on_path, np.maximum(parent, 0), axis=1)
    status = np.where(on_path, ACCEPTED, np.where(reached, REJECTED, UNREACHED)).astype(np.int8)
    status[:, 0] = ROOT
    return status


def tree_verify(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    parent: torch.Tensor,
    temperature: float,
    proposals: torch.Tensor | None = None,
    uniforms: torch.Tensor | None = None,
) -> TreeVerdict:
    """Verify B draft trees; see the package docstring for the arguments and outputs."""
    B, N, V = check_args(logits, tokens, parent, temperature, proposals, uniforms)
    device = logits.device
    greedy = temperature == 0
    scale = 1.0 if greedy else float(temperature)

    # w = exp(z - max z), built in place in one float32 [B, N, V] buffer
    weights = logits.float() / scale
    row_max = weights.amax(dim=-1, keepdim=True)
    target_next = weights.argmax(dim=-1)  # [B, N]
    weights.sub_(row_max).exp_()
    row_sum = weights.double().sum(dim=-1)  # [B, N]
    inv_sum = 1.0 / row_sum

    # node i's token is scored by its parent's row
    par = parent.clamp_min(0)
    w_tok = weights.reshape(B, N * V).gather(1, par * V + tokens)
    target_prob = (w_tok.double() * inv_sum.gather(1, par)).float()
    target_prob[:, 0] = 1.0

    parent_h = parent.cpu().numpy()
    tokens_h = tokens.cpu().numpy()
    on_path = np.zeros((B, N), dtype=bool)
    on_path[:, 0] = True
    path = np.full((B, N), -1, dtype=np.int64)
    n_accepted = np.zeros(B, dtype=np.int64)
    bonus = np.zeros(B, dtype=np.int64)
    corrected = np.zeros(B, dtype=bool)

    if greedy:
        accept_prob = (tokens == target_next.gather(1, par)).float()
        accept_prob[:, 0] = 1.0
        match_h = accept_prob.cpu().numpy() > 0
        target_next_h = target_next.cpu().numpy()
    else:
        accept_h = np.full((B, N), np.nan, dtype=np.float32)
        accept_h[:, 0] = 1.0
        uniforms_h = uniforms.float().cpu().numpy()
        row_sum_h = row_sum.cpu().numpy()
        exact_h = np.zeros((B, N), dtype=bool)
        if proposals is not None:
            proposals = proposals.float()
            exact_h = (proposals.sum(dim=-1) > 0).cpu().numpy()

    for b in range(B):
        kids = [[] for _ in range(N)]
        for i in range(1, N):
            kids[parent_h[b, i]].append(i)
        node, depth = 0, 0
        if greedy:
            while True:
                hit = next((c for c in kids[node] if match_h[b, c]), None)
                if hit is None:
                    break
                path[b, depth] = node = hit
                depth += 1
            bonus[b] = target_next_h[b, node]
        else:
            bonus[b] = _sampled_walk(
                b, kids, tokens_h[b], uniforms_h[b], exact_h[b], weights[b], row_sum_h[b], proposals, accept_h, path
            )
            depth = int((path[b] >= 0).sum())
            node = path[b, depth - 1] if depth else 0
        on_path[b, path[b, :depth]] = True
        n_accepted[b] = depth
        corrected[b] = bool(kids[node])

    if not greedy:
        accept_prob = torch.from_numpy(accept_h).to(device)
    return TreeVerdict(
        target_prob,
        accept_prob,
        torch.from_numpy(statuses(parent_h, on_path)).to(device),
        torch.from_numpy(path).to(device),
        torch.from_numpy(n_accepted).to(device),
        torch.from_numpy(bonus).to(device),
        torch.from_numpy(corrected).to(device),
    )


def _sampled_walk(b, kids, tokens, uniforms, exact, weights, row_sum, proposals, accept_prob, path) -> int:
    """Recursive rejection sampling down tree b; fills accept_prob[b] and path[b], returns the bonus.

    The current distribution is (w, total): float32 weights and their float64 sum. It
    starts as the node's target row; each rejected child replaces it by the residual.
    """
    N = len(kids)
    one, tiny = np.float32(1.0), np.float32(1e-30)
    node, depth = 0, 0
    w, total = weights[0], float(row_sum[0])
    while True:
        accepted = None
        for child in kids[node]:
            x = int(tokens[child])
            inv = 1.0 / total
            p_x = np.float32(w[x].item() * inv)
            q_x = np.float32(proposals[b, child, x].item()) if exact[child] else one
            ratio = min(one, p_x / max(q_x, tiny))
            accept_prob[b, child] = ratio
            if uniforms[child] < ratio:
                accepted = child
                break
            p = (w.double() * inv).float()
            if exact[child]:
                residual = (p - proposals[b, child]).clamp_min_(0.0)
            else:
                # p - (point mass at x), clamped: p itself with p(x) removed
                residual = p.index_fill_(0, torch.tensor([x], device=p.device), 0.0)
            residual_sum = float(residual.double().sum())
            # an empty residual means rejection had probability 0; only rounding gets here
            if residual_sum > 0:
                w, total = residual, residual_sum
            else:
                w, total = weights[node], float(row_sum[node])
        if accepted is None:
            break
        path[b, depth] = node = accepted
        depth += 1
        w, total = weights[node], float(row_sum[node])
    return inverse_cdf(w, float(uniforms[N]) * total)


def inverse_cdf(w: torch.Tensor, threshold: float) -> int:
    """The smallest token whose float64 running sum of w exceeds threshold, never a zero weight."""
    positive = w > 0
    hits = (w.double().cumsum(dim=0) > threshold) & positive
    if bool(hits.any()):
        return int(hits.int().argmax())
    # the running sum can end a rounding below u * total; the last possible token is the answer
    last = positive.nonzero()
    return int(last[-1, 0]) if last.numel() else -1
