"""What-if: replay a finished greedy run under other tree shapes, without the target.

In greedy decoding the output does not depend on the drafter, and a draft is
accepted exactly as far as it spells the target's own continuation. So the
recorded output alone decides, for any drafter, how many tokens each step
would have accepted:

- a model drafter filling a static shape accepts as far as the ranks of the
  true tokens (under the drafter, on the true prefix) stay inside the shape;
  one teacher-forced drafter pass over the output gives every rank at once;
- a deterministic builder (n-gram, retrieval) is simply re-run on each true
  prefix that the replayed run would have reached.

Stepping from position 0, each step commits accepted + 1 tokens, so the
replayed τ is exact (up to float ties between the batched and incremental
drafter passes) and the shapes can be compared on equal terms.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .drafters import Context
from .shapes import PRESETS, accepted_length, best_static_tree, chain, describe, shape_depth

MAX_RANK = 16  # ranks beyond this count as "not in any shape"


@dataclass
class WhatIfRow:
    name: str
    family: str  # "model chain", "model static tree", "fitted to this run", "model-free"
    nodes: float  # drafted nodes per step, i.e. what the target verifies besides the root
    steps: int  # target forwards
    tokens: int
    tau: float
    detail: str
    depth: float = 0.0  # deepest drafted level of the shape (a model drafter's forwards per step)
    own_setting: bool = False  # the run's own setting, replayed
    own_drafter: bool = False  # drafted by the run's own model drafter (so its drafting time applies)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def true_token_ranks(model, prompt_ids, output_ids) -> np.ndarray:
    """ranks[t]: how many tokens the drafter scores above output token t, given the true prefix."""
    ids = np.concatenate([np.asarray(prompt_ids), np.asarray(output_ids)]).astype(np.int64)
    device = next(model.parameters()).device
    n_out = len(output_ids)
    logits = model(input_ids=torch.from_numpy(ids).to(device).unsqueeze(0), logits_to_keep=n_out + 1).logits[0]
    logits = logits[:n_out].float()  # row j predicts output token j
    true = torch.from_numpy(np.asarray(output_ids, dtype=np.int64)).to(device)
    true_score = logits.gather(1, true[:, None])
    ranks = (logits > true_score).sum(dim=1)
    return ranks.clamp(max=MAX_RANK).cpu().numpy()


def replay_static(paths, ranks: np.ndarray) -> tuple:
    """(steps, mean drafted nodes per step) for a static shape, from the true-token ranks."""
    shape, n = set(paths), len(ranks)
    t, steps, nodes = 0, 0, 0
    while t < n:
        room = n - t - 1  # drafts past the end could never be committed
        usable = [p for p in paths if len(p) <= room]
        accepted = accepted_length(shape, ranks[: t + room], t)
        nodes += len(usable)
        t += accepted + 1
        steps += 1
    return steps, nodes / max(steps, 1)


def replay_builder(drafter, prompt_ids, output_ids, features: torch.Tensor | None = None,
                   accepted_lengths: list | None = None) -> tuple:
    """(steps, mean drafted nodes per step) for a drafter re-run on each true prefix; each step's
    accepted length is appended to `accepted_lengths` when given.

    Stateful drafters (a model tree's cache, a feature drafter) are told what each replayed step
    committed, as the engine would tell them; feature-reading drafters also get the target's
    `features` [len(prompt) + len(output), H] of the committed positions (one target forward over
    prompt + output gives them all, equal to the tree passes' up to float rounding)."""
    ids = np.concatenate([np.asarray(prompt_ids), np.asarray(output_ids)]).astype(np.int64)
    p, n = len(prompt_ids), len(output_ids)
    device = features.device if features is not None else torch.device("cpu")
    drafter.reset(ids[:p])
    if features is not None:
        drafter.on_target_features(features[: p - 1])
    t, steps, nodes = 0, 0, 0
    while t < n:
        host = ids[: p + t]
        draft = drafter.propose(Context(torch.from_numpy(host).to(device), host), n - t - 1, None)
        tokens, parent = draft.token_ids.tolist(), draft.parent.tolist()
        children: dict = {}
        for i, (tok, par) in enumerate(zip(tokens, parent)):
            children.setdefault((par, tok), i + 1)
        node, path = 0, []
        while t + len(path) < n and (node, int(ids[p + t + len(path)])) in children:
            node = children[(node, int(ids[p + t + len(path)]))]
            path.append(node)
        accepted = len(path)
        if accepted_lengths is not None:
            accepted_lengths.append(accepted)
        if features is not None:
            root = p + t - 1
            drafter.on_target_features(features[root : root + accepted + 1])
        drafter.commit(path, accepted + 1)
        nodes += len(tokens)
        t += accepted + 1
        steps += 1
    return steps, nodes / max(steps, 1)


def rank_accuracy(ranks: np.ndarray, top: int = 6) -> list:
    counts = Counter(int(r) for r in ranks)
    return [counts.get(r, 0) / max(len(ranks), 1) for r in range(top)]


def what_if(drafting_model, drafter_label: str, builders: dict, prompt_ids, output_ids) -> list:
    """Rows for the model drafter under chains, presets and shapes fitted to this run, then model-free builders.

    `builders` maps a display name to a fresh deterministic drafter."""
    n = len(output_ids)
    rows = []
    if drafting_model is not None and n:
        ranks = true_token_ranks(drafting_model, prompt_ids, output_ids)
        shapes = [(f"chain-{k}", "model chain", chain(k)) for k in (1, 2, 3, 4, 6, 8)]
        shapes += [(name, "model static tree", paths) for name, paths in PRESETS.items() if not name.startswith("chain")]
        acc = rank_accuracy(ranks)
        for size in (16, 32, 64):
            shapes.append((f"fitted-{size}", "fitted to this run", best_static_tree(acc, size, max_depth=12)))
        for name, family, paths in shapes:
            steps, nodes = replay_static(paths, ranks)
            rows.append(WhatIfRow(name, family, nodes, steps, n, n / steps, f"{drafter_label}: {describe(paths)}",
                                  depth=shape_depth(paths)))
    for name, drafter in builders.items():
        steps, nodes = replay_builder(drafter, prompt_ids, output_ids)
        rows.append(WhatIfRow(name, "model-free", nodes, steps, n, n / max(steps, 1), drafter.__class__.__name__))
    return rows
