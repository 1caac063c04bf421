"""Drafters driven by trained heads that read the target's own features.

- `MedusaDrafter`: the K heads read the feature of the last token the target scored (the one
  before the root) and fill a static tree: the node with rank path (r1, .., rd) holds head d's
  r_d-th most likely token. The heads are independent of each other, so every node's token is a
  fixed function of one feature: verification treats them as point masses (lossless under
  sampling too).
- `FeatureTreeDrafter`: the EAGLE-style drafter predicts the next feature from (token, feature)
  pairs and grows an EAGLE-2 dynamic tree (or any shape) through the same expansion loop as the
  model drafters; only the cache differs (`FeatureDraftKV`).

Both receive the target's features through `on_target_features` (the engine's `FeatureTap`):
after prefill the prompt's (all but the root), after each step the root's and the accepted
nodes'. So the store always covers every committed position before the current root.
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import SamplingConfig
from ..models.trained_heads import DraftKVCache, FeatureDrafter, MedusaHeads
from .drafters import Context, Draft, DrafterBase
from .sampling import processed_probs
from .tree import upload
from .tree_drafters import Expansion, ModelTreeDrafter, StaticShape, slot_mask

CAPACITY = 1024  # the feature drafter's cache and feature store start this long and double when outgrown


class MedusaDrafter(DrafterBase):
    reads_target_features = True

    def __init__(self, heads: MedusaHeads, lm_head, shape: StaticShape, sampling: SamplingConfig, name: str = "medusa"):
        self.heads, self.lm_head, self.shape, self.sampling, self.name = heads, lm_head, shape, sampling, name
        self.last_feature = None

    def set_shape(self, knobs: dict) -> None:
        self.shape.set_knobs(knobs)

    def reset(self, prompt_ids: np.ndarray) -> None:
        self.last_feature = None

    def on_target_features(self, features: torch.Tensor) -> None:
        if features.shape[0]:
            self.last_feature = features[-1]

    @torch.inference_mode()
    def propose(self, ctx: Context, max_depth: int, generator) -> Draft:
        depth = min(self.heads.n_heads, max_depth)
        paths = [p for p in self.shape.paths if len(p) <= depth]
        if self.last_feature is None or not paths:
            return Draft.empty(ctx.ids.device)
        probs = processed_probs(self.heads(self.last_feature.to(self.heads_dtype), self.lm_head), self.sampling)  # [K, V]
        # node (r1, .., rd) holds head d's r_d-th most likely token: gathered on the device, no host read
        top = probs[:depth].topk(min(max(p[-1] for p in paths) + 1, probs.shape[-1]), dim=-1)
        k = top.indices.shape[-1]
        at = upload([(len(p) - 1) * k + p[-1] for p in paths], ctx.ids.device)
        index = {(): 0}
        parent = []
        for p in paths:  # normalised: parents come first
            parent.append(index[p[:-1]])
            index[p] = len(parent)
        return Draft(top.indices.reshape(-1)[at], np.asarray(parent, dtype=np.int64), top.values.reshape(-1)[at],
                     None, (self.name,) * len(paths), forwards=1)

    @property
    def heads_dtype(self):
        return next(self.heads.parameters()).dtype


class FeatureDraftKV:
    """The feature drafter's cache, with the interface of `DraftKV` so the expansion loop drives it.

    Committed entry j is (embed(token_{j+1}), feature_j) with the target's true feature, at
    position j; entry context_len - 1 pairs the feature before the root with the root. Tree
    nodes ("slots") follow, each paired with its parent's *predicted* feature. After a step the
    slots are dropped rather than kept: the accepted tokens are re-entered with the target's true
    features by the next catch-up (as EAGLE does), in the same forward as the bonus token."""

    def __init__(self, drafter: FeatureDrafter, embed, lm_head, draft_vocab: int = 0):
        self.drafter, self.embed, self.lm_head = drafter, embed, lm_head
        self.set_draft_vocab(draft_vocab)
        self.reset()

    def set_draft_vocab(self, n: int) -> None:
        """Draft from the first n tokens of the drafter's frequency-ranked vocabulary (FR-Spec):
        the LM head shrinks from the whole vocabulary to those rows. Tokens outside get probability
        0, so the draft distribution is still exactly what drafts are sampled from (lossless)."""
        ranked = getattr(self.drafter, "draft_vocab", None)
        if not n or ranked is None:
            self.vocab_ids = self.sub_weight = self.sub_bias = None
            return
        self.vocab_ids = ranked[: int(n)].to(self.lm_head.weight.device)
        self.sub_weight = self.lm_head.weight[self.vocab_ids]
        bias = getattr(self.lm_head, "bias", None)
        self.sub_bias = bias[self.vocab_ids] if bias is not None else None

    def reset(self) -> None:
        self.cache = DraftKVCache(capacity=CAPACITY)
        # the target's features of committed positions 0..n_features-1: a buffer written in place
        self._features = None
        self.n_features = 0
        self.n_cached = self.context_len = 0
        self.slot_parent, self.slot_depth, self.slot_feature = [], [], []
        self.root_feature = None

    def add_features(self, features: torch.Tensor) -> None:
        n = features.shape[0]
        end = self.n_features + n
        if self._features is None or end > self._features.shape[0]:
            grown = features.new_zeros((max(end, CAPACITY, 2 * self.n_features), features.shape[-1]), dtype=self.dtype)
            if self.n_features:
                grown[: self.n_features] = self.features
            self._features = grown
        self._features[self.n_features : end] = features
        self.n_features = end

    @property
    def features(self) -> torch.Tensor | None:
        """[n, H] the target's features of the committed positions so far."""
        return None if self._features is None else self._features[: self.n_features]

    @property
    def dtype(self):
        return next(self.drafter.parameters()).dtype

    def _run(self, tokens, feats, positions, allowed):
        return self.drafter(self.embed(tokens).to(self.dtype)[None], feats[None], positions[None], allowed, self.cache)[0]

    def _logits(self, out):
        out = out.to(self.lm_head.weight.dtype)
        if self.vocab_ids is None:
            return self.lm_head(out)
        full = out.new_full((out.shape[0], self.lm_head.weight.shape[0]), float("-inf"))
        full[:, self.vocab_ids] = torch.nn.functional.linear(out, self.sub_weight, self.sub_bias)
        return full

    def catch_up(self, ids: torch.Tensor) -> torch.Tensor:
        n_entries = int(ids.shape[0]) - 1
        if self.n_features < n_entries:
            raise RuntimeError(f"the feature drafter has {self.n_features} target features for {n_entries} entries")
        self.cache.truncate(self.n_cached)  # drop last step's slots
        new = torch.arange(self.n_cached, n_entries, device=ids.device)
        q = new.shape[0]
        allowed = torch.ones((q, self.n_cached + q), dtype=torch.bool, device=ids.device)
        allowed[:, self.n_cached :] = torch.tril(allowed[:, self.n_cached :])
        out = self._run(ids[new + 1], self.features[new], new, allowed)
        self.root_feature = out[-1]
        self.context_len = self.n_cached = n_entries
        self.slot_parent, self.slot_depth, self.slot_feature = [], [], []
        # only the root's logits are drafted from; the LM head over a whole long prompt would cost more than the target
        return self._logits(out[-1:])[0]

    def forward(self, tokens: torch.Tensor, parent_slots: list) -> torch.Tensor:
        depths = [1 if p < 0 else self.slot_depth[p] + 1 for p in parent_slots]
        allowed = upload(slot_mask(self.context_len, self.slot_parent, parent_slots), tokens.device, torch.bool)
        feats = torch.stack([self.root_feature if p < 0 else self.slot_feature[p] for p in parent_slots])
        positions = upload([self.context_len - 1 + d for d in depths], tokens.device)
        out = self._run(tokens, feats, positions, allowed)
        self.slot_parent += list(parent_slots)
        self.slot_depth += depths
        self.slot_feature += list(out)
        return self._logits(out)

    def keep(self, accepted_slots: list) -> None:
        # committed entries only; see the class doc
        self.cache.truncate(self.n_cached)


class FeatureTreeDrafter(ModelTreeDrafter):
    reads_target_features = True

    def __init__(self, drafter: FeatureDrafter, embed, lm_head, shape, sampling: SamplingConfig, source: str = "eagle",
                 draft_vocab: int = 0):
        super().__init__(drafter, shape, sampling, source)
        self.kv = FeatureDraftKV(drafter, embed, lm_head, draft_vocab)

    def set_shape(self, knobs: dict) -> None:
        super().set_shape(knobs)
        if "draft_vocab" in knobs:
            self.kv.set_draft_vocab(knobs["draft_vocab"])

    def on_target_features(self, features: torch.Tensor) -> None:
        self.kv.add_features(features)

    def propose(self, ctx: Context, max_depth: int, generator) -> Draft:
        if ctx.ids.shape[0] < 2:  # a one-token prompt: no (feature, token) pair to start from yet
            return self.adopt(Expansion(), [], ctx.ids.device)
        return super().propose(ctx, max_depth, generator)
