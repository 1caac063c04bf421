"""A user's edit of a recorded step's draft tree, for a fork of the run (`SpeculativeDecoder.fork`).

The fork verifies the recorded tree of the edited step again, with the edit, on the same
committed text. Two edits:
- replace a drafted token with another (typed, or picked from the candidates on show);
- cut a node: it and everything drafted below it leave the tree, which is what forcing its
  rejection means without lying about the target. The target then picks the token at that
  position itself (under greedy its argmax, often the very token cut), so the output is
  unchanged and only the accepted length moves.

Why this stays lossless: the edited tree is fixed before the fork draws any randomness, and
it is verified as point masses (no proposal distributions). Verification of any fixed tree of
point masses commits exactly what the target would: under greedy its argmax chain, under
sampling a draw from its distribution (tests/decoding/test_intervene.py checks both). The
tree is the recorded one rather than a fresh proposal, so the user edits what they saw.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import ConfigError
from ..trace import CUT, INTERVENTION_KINDS, REPLACE, USER_SOURCE, Intervention, SpecStep, ancestor_matrix
from .drafters import Draft


@dataclass(frozen=True)
class DraftEdit:
    """Edit node `node` (1..N-1; 0 is the root, committed text) of recorded step `step`."""

    step: int
    node: int
    kind: str  # REPLACE or CUT
    token: int = -1  # REPLACE: the token to put in

    def __post_init__(self):
        if self.kind not in INTERVENTION_KINDS:
            raise ConfigError(f"unknown edit {self.kind!r}: use one of {', '.join(INTERVENTION_KINDS)}")


def edited_draft(step: SpecStep, edit: DraftEdit, vocab_size: int, device) -> tuple:
    """(the Draft to verify again, its Intervention record) for `edit` applied to the recorded `step`."""
    tree = step.tree
    n = tree.size
    if n < 2:
        raise ConfigError(f"step {step.step} drafted nothing, so there is no draft token to edit")
    if not 1 <= edit.node < n:
        raise ConfigError(f"node {edit.node} is not a drafted node of step {step.step}: pick one of 1..{n - 1} "
                          "(node 0 is the root, text already committed)")
    tokens = tree.token_ids.copy()
    probs = tree.draft_probs.astype(np.float32).copy()
    source = list(tree.source)
    parent = tree.parent.copy()
    if edit.kind == REPLACE:
        if not 0 <= edit.token < vocab_size:
            raise ConfigError(f"token id {edit.token} is outside the target's vocabulary of {vocab_size}")
        was = int(tokens[edit.node])
        if edit.token == was:
            raise ConfigError("that is the token already drafted there: pick another one")
        tokens[edit.node], probs[edit.node], source[edit.node] = edit.token, 1.0, USER_SOURCE
        record = Intervention(REPLACE, edit.node, edit.token, was, 0, step.n_accepted)
    else:
        # the node and its descendants go; the rest keep their order, renumbered
        gone = ancestor_matrix(parent)[:, edit.node]
        keep = ~gone
        index = np.cumsum(keep) - 1
        record = Intervention(CUT, int(index[parent[edit.node]]), int(tokens[edit.node]), -1, int(gone.sum()),
                              step.n_accepted)
        tokens, probs = tokens[keep], probs[keep]
        source = [s for s, k in zip(source, keep) if k]
        parent = np.where(parent[keep] < 0, -1, index[np.maximum(parent[keep], 0)])
    m = tokens.shape[0] - 1
    draft = Draft(
        token_ids=torch.as_tensor(tokens[1:], dtype=torch.long, device=device),
        parent=parent[1:].astype(np.int64),
        draft_probs=torch.as_tensor(probs[1:], dtype=torch.float32, device=device),
        dists=None,  # point masses: a fixed tree verified this way commits what the target would
        source=tuple(source[1:]) if m else (),
        forwards=0,
    )
    return draft, record
