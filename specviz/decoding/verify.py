"""Verification: pick the accepted path and the bonus token from one tree pass.

Pure functions of the target's scores at every tree node. Row i of
`target_probs` / `target_logits` is the target's next-token distribution
*after* node i, so node i's own token is scored by its parent's row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..trace import ACCEPTED, BONUS, CORRECTION, REJECTED, ROOT, UNREACHED
from .sampling import sample


@dataclass
class Verdict:
    accepted_path: list  # node indices, root excluded, in depth order
    bonus_token: int
    bonus_kind: str
    status: np.ndarray  # [N] int8
    accept_probs: torch.Tensor  # [N] probability of accepting each node given its parent was accepted


def _children(parent: np.ndarray) -> list:
    kids = [[] for _ in range(parent.shape[0])]
    for i in range(1, parent.shape[0]):
        kids[parent[i]].append(i)
    return kids


def _statuses(parent: np.ndarray, path: list) -> np.ndarray:
    """Accepted nodes on the path; their other children rejected; the rest never reached."""
    status = np.full(parent.shape[0], UNREACHED, dtype=np.int8)
    status[0] = ROOT
    on_path = np.zeros(parent.shape[0], dtype=bool)
    on_path[0] = True
    on_path[path] = True
    reached = on_path[np.maximum(parent, 0)]
    reached[0] = False
    status[reached] = REJECTED
    status[path] = ACCEPTED
    return status


def greedy_verify(tree_tokens: torch.Tensor, parent: np.ndarray, target_logits: torch.Tensor) -> Verdict:
    """Longest root-to-node path whose every token is the target's argmax after its parent.

    At most one child of a node can match (siblings with equal tokens are
    duplicates; the first one wins). The bonus token is the argmax after the
    last accepted node. One host transfer of N ints.
    """
    target_next = target_logits.argmax(dim=-1)  # [N]
    parent_t = torch.from_numpy(np.maximum(parent, 0)).to(tree_tokens.device)
    match = tree_tokens == target_next[parent_t]
    match[0] = False
    host = torch.stack([target_next, match.long()]).cpu().numpy()
    target_next_h, match_h = host[0], host[1].astype(bool)

    kids = _children(parent)
    node, path = 0, []
    while True:
        hit = next((c for c in kids[node] if match_h[c]), None)
        if hit is None:
            break
        path.append(hit)
        node = hit
    status = _statuses(parent, path)
    kind = CORRECTION if np.any(status == REJECTED) else BONUS
    accept_probs = match.float()
    accept_probs[0] = 1.0
    return Verdict(path, int(target_next_h[node]), kind, status, accept_probs)


def stochastic_tree_verify(
    tree_tokens: torch.Tensor,
    parent: np.ndarray,
    target_probs: torch.Tensor,
    proposals: torch.Tensor | None,
    generator: torch.Generator,
) -> Verdict:
    """Recursive rejection sampling over a tree (SpecInfer / SpecTr / RSD); exact for any tree.

    Starting at the root, the children of the current node are tested in order.
    Child x with proposal distribution q (`proposals[x]`; None or an all-zero
    row means a point mass, i.e. a token the drafter chose deterministically)
    is accepted with probability min(1, p(x) / q(x)), where p starts as the
    target's distribution after the node. On rejection p becomes the residual
    norm(max(p - q, 0)), which is zero at x, and the next sibling is tested
    against it. The first accepted child becomes the current node; if every
    child is rejected, the step ends with a draw from the residual (a
    correction), and at a leaf with a draw from the target (a bonus).

    Each test, with the draw that follows a rejection, emits exactly p, for any
    proposal q that the candidate really was drawn from given everything
    before it. So the emitted tokens follow the target exactly, whether
    siblings were sampled with replacement, without replacement (q renormalised
    over the tokens not yet drawn) or chosen deterministically. A chain is the
    one-child case: standard speculative sampling.
    """
    n = tree_tokens.shape[0]
    device = target_probs.device
    tokens_h = tree_tokens.tolist()
    kids = _children(parent)
    exact = None
    if proposals is not None:
        exact = (proposals.sum(dim=-1) > 0).tolist()
    accept_probs = torch.full((n,), float("nan"), device=device)
    accept_probs[0] = 1.0
    node, path = 0, []
    while True:
        p = target_probs[node].float()
        accepted = None
        for child in kids[node]:
            x = tokens_h[child]
            q = proposals[child].float() if exact is not None and exact[child] else None
            qx = q[x] if q is not None else torch.ones((), device=device)
            a = torch.clamp(p[x] / qx.clamp_min(1e-30), max=1.0)
            accept_probs[child] = a
            if torch.rand((), generator=generator, device=device) < a:
                accepted = child
                break
            residual = (p - q).clamp_min(0.0) if q is not None else p.clone().index_fill_(0, torch.tensor([x], device=device), 0.0)
            total = residual.sum()
            # an empty residual means rejection had probability 0; only rounding gets here
            p = residual / total if total > 0 else target_probs[node].float()
        if accepted is None:
            bonus = int(sample(p, generator))
            kind = CORRECTION if kids[node] else BONUS
            break
        path.append(accepted)
        node = accepted
    return Verdict(path, bonus, kind, _statuses(parent, path), accept_probs)
