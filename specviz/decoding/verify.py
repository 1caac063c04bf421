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


def stochastic_chain_verify(
    chain_tokens: torch.Tensor,
    target_probs: torch.Tensor,
    draft_dists: torch.Tensor | None,
    generator: torch.Generator,
) -> Verdict:
    """Speculative sampling over a chain (Leviathan et al. / Chen et al.).

    Node i (i >= 1) was drawn from the drafter's distribution draft_dists[i]
    (None: a deterministic drafter, i.e. a point mass on the drafted token).
    Accept it with probability min(1, p_target / p_draft). At the first
    rejection draw the replacement from the normalised residual
    max(p_target - p_draft, 0); if all pass, draw the bonus from the target
    after the last node. The emitted tokens then follow the target exactly.
    """
    n = chain_tokens.shape[0]
    device = chain_tokens.device
    idx = torch.arange(1, n, device=device)
    tokens = chain_tokens[1:]
    p_target = target_probs[idx - 1, tokens]
    p_draft = draft_dists[idx, tokens] if draft_dists is not None else torch.ones_like(p_target)
    ratio = torch.where(p_draft > 0, p_target / p_draft.clamp_min(1e-30), torch.ones_like(p_target))
    accept_prob = ratio.clamp(max=1.0)
    # one uniform per drafted node, drawn up front so the random stream does not depend on outcomes
    u = torch.rand(n - 1, generator=generator, device=device)
    accepted = (u < accept_prob).cpu().numpy()
    n_acc = int(np.argmin(accepted)) if not accepted.all() else n - 1
    path = list(range(1, n_acc + 1))

    if n_acc == n - 1:
        bonus = sample(target_probs[n - 1], generator)
        kind = BONUS
    else:
        rejected = n_acc + 1
        if draft_dists is not None:
            residual = (target_probs[n_acc] - draft_dists[rejected]).clamp_min(0.0)
        else:
            residual = target_probs[n_acc].clone()
            residual[chain_tokens[rejected]] = 0.0
        total = residual.sum()
        # the residual is empty only when the draft matched the target exactly, where rejection cannot happen
        residual = residual / total if total > 0 else target_probs[n_acc]
        bonus = sample(residual, generator)
        kind = CORRECTION
    parent = np.arange(-1, n - 1)
    status = _statuses(parent, path)
    accept_probs = torch.cat([torch.ones(1, device=device), accept_prob])
    return Verdict(path, int(bonus), kind, status, accept_probs)
