"""The speculative decoding loop: propose → score → select → commit.

`SpeculativeDecoder` owns the target's KV cache and the committed tokens and
advances one target forward per `step()`. Plain autoregressive decoding is the
same loop with a drafter that proposes nothing, so every method, the baseline
included, goes through one code path.

Recording (`record=True`) only adds host copies of values the step computed
anyway plus the target's top-k for hover; it never touches the random stream
or the decisions, so the tokens are identical either way (tested).

Every decoder (this one, the diffusion decoder, Jacobi's lattice view) follows
the `Decoder` protocol: `step()`, `steps()`, `done`, and `trace()`, which builds
the run's `Trace` from the records it produced, so the CLI, the app and the
benchmarks record the same fields.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Iterator, Protocol, runtime_checkable

import numpy as np
import torch
from ..kernels.backend import backend_for
from ..kernels.logit_stats import logit_stats
from ..kernels.tree_attention import TreeMask
from ..models import attention
from ..models.cache import SlabCache
from ..trace import SpecStep, DraftTree, Trace
from . import kv
from .drafters import Context, Draft, Drafter, FeatureTap
from .sampling import processed_probs
from .tree import ancestor_matrix, depths, is_chain, tree_attention_inputs
from .verify import verify_tree

TOPK_RECORDED = 5


@runtime_checkable
class Decoder(Protocol):
    """A run in progress: one record per `step()` (None once done), and the trace of the records so far."""

    @property
    def done(self) -> bool: ...

    def step(self): ...

    def steps(self) -> Iterator: ...

    def trace(self) -> Trace: ...


class SpeculativeDecoder:
    """`settings` is the run's `RunSettings` (anything with method, knobs, max_new_tokens, sampling and
    to_dict()); `target_id` / `draft_id` label the models in the trace."""

    def __init__(
        self,
        target,
        drafter: Drafter,
        prompt_ids,
        settings,
        eos_ids=(),
        record: bool = True,
        max_positions: int | None = None,
        target_id: str = "",
        draft_id: str | None = None,
    ):
        prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        if prompt.shape[0] == 0:
            raise ValueError("the prompt is empty")
        self.target = target
        self.drafter = drafter
        self.settings = settings
        self.sampling = settings.sampling
        self.target_id, self.draft_id = target_id, draft_id
        self.records: list = []
        self.wall_s = 0.0
        self.eos_ids = frozenset(int(e) for e in eos_ids)
        self.record = record
        self.max_positions = max_positions or getattr(target.config, "max_position_embeddings", None) or 1 << 30
        if prompt.shape[0] + settings.max_new_tokens > self.max_positions:
            raise ValueError(
                f"the prompt is {prompt.shape[0]} tokens; with max_new_tokens={settings.max_new_tokens} it exceeds "
                f"the model's context of {self.max_positions} tokens"
            )
        self.device = next(target.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(self.sampling.seed)
        self.prompt_ids = prompt
        self.ids_host = prompt.copy()
        self.n_new = 0
        self.n_steps = 0
        self.finish_reason = ""
        self.cache = None
        self.prefill_ms = 0.0
        self.lossless = True
        # trained drafters (Medusa, EAGLE) read the target's final features of the committed tokens
        self.tap = FeatureTap(target) if drafter.reads_target_features else None

    @property
    def backend(self) -> str:
        """Which kernels this run goes through, for the trace and the UI."""
        kernels = backend_for(self.device)
        if self.cache is not None and not isinstance(self.cache, SlabCache):
            return f"{kernels} verify; SDPA attention (model unsupported by the tree kernel)"
        return f"{kernels} ({self.device.type})"

    @property
    def done(self) -> bool:
        return bool(self.finish_reason)

    @property
    def output_ids(self) -> np.ndarray:
        return self.ids_host[self.prompt_ids.shape[0] :]

    @torch.inference_mode()
    def prefill(self) -> None:
        """Cache every prompt token but the last, which becomes the first root."""
        t0 = time.perf_counter()
        # room for the whole run plus the widest tree, so the slab never grows mid-run
        self.cache = attention.new_cache(self.target, self.prompt_ids.shape[0] + self.settings.max_new_tokens + 288)
        self.drafter.reset(self.prompt_ids)
        if self.prompt_ids.shape[0] > 1:
            ids = torch.from_numpy(self.prompt_ids[:-1]).to(self.device).unsqueeze(0)
            with self._tapped():
                self.target(input_ids=ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
            if self.tap is not None:
                self.drafter.on_target_features(self.tap.take()[0])
        self.prefill_ms = (time.perf_counter() - t0) * 1000

    def step(self) -> SpecStep | None:
        """One propose → score → select → commit iteration; None once the run is over."""
        if self.done:
            return None
        t0 = time.perf_counter()
        record = self._step()
        self.wall_s += time.perf_counter() - t0
        self.records.append(record)
        return record

    @torch.inference_mode()
    def _step(self) -> SpecStep:
        if self.cache is None:
            self.prefill()
        root_pos = self.ids_host.shape[0] - 1
        remaining = self.settings.max_new_tokens - self.n_new
        # a step commits accepted drafts + 1, so deeper drafts than this are wasted
        max_depth = min(remaining - 1, self.max_positions - root_pos - 1)

        t0 = time.perf_counter()
        ctx = Context(torch.from_numpy(self.ids_host).to(self.device), self.ids_host)
        draft = self.drafter.propose(ctx, max_depth, self.generator)
        t1 = time.perf_counter()

        root = ctx.ids[-1:]
        tokens = torch.cat([root, draft.token_ids])
        parent = np.concatenate([[-1], draft.parent]).astype(np.int64)
        with self._tapped():
            logits = self._score(tokens, parent, root_pos)
        verdict, target_probs = self._select(tokens, parent, logits, draft)
        kv.keep_path(self.cache, root_pos, verdict.accepted_path)
        if self.tap is not None:
            # the root's and the accepted nodes' features: the positions this step commits before the bonus
            self.drafter.on_target_features(self.tap.take()[0, [0, *verdict.accepted_path]])
        # drafters that reuse the target's own predictions (Jacobi) read them here
        self.drafter.on_scored(logits, verdict)

        committed = [int(t) for t in tokens[verdict.accepted_path].tolist()] + [verdict.bonus_token]
        committed = committed[:remaining]
        for i, t in enumerate(committed):
            if t in self.eos_ids:
                committed = committed[: i + 1]
                self.finish_reason = "eos"
                break
        self.ids_host = np.concatenate([self.ids_host, np.asarray(committed, dtype=np.int64)])
        self.n_new += len(committed)
        if not self.finish_reason and self.n_new >= self.settings.max_new_tokens:
            self.finish_reason = "length"
        self.drafter.commit(verdict.accepted_path, len(committed))
        t2 = time.perf_counter()

        record = self._record(root_pos, tokens, parent, draft, logits, target_probs, verdict, committed, t1 - t0, t2 - t1)
        self.n_steps += 1
        return record

    def _tapped(self):
        return self.tap if self.tap is not None else contextlib.nullcontext()

    def _score(self, tokens: torch.Tensor, parent: np.ndarray, prefix_len: int) -> torch.Tensor:
        """One target forward over the whole tree; returns [N, V] logits."""
        if is_chain(parent):
            # a chain's ancestor mask is the causal mask, so the model's own causal path serves
            out = self.target(input_ids=tokens.unsqueeze(0), past_key_values=self.cache, use_cache=True)
        elif isinstance(self.cache, SlabCache):
            # our tree-attention kernel reads the bit-packed ancestor mask in every layer
            positions = torch.from_numpy(prefix_len + depths(parent)).to(self.device).unsqueeze(0)
            out = self.target(
                input_ids=tokens.unsqueeze(0),
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
                tree_mask=TreeMask.from_allowed(ancestor_matrix(parent), self.device),
            )
        else:
            mask, positions = tree_attention_inputs(parent, prefix_len, self.target.dtype, self.device)
            out = self.target(
                input_ids=tokens.unsqueeze(0),
                attention_mask=mask,
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
            )
        return out.logits[0]

    def _select(self, tokens, parent, logits, draft: Draft):
        proposals = None
        if not self.sampling.greedy and draft.dists is not None:
            # row i is the distribution node i was drawn from; the root row is never read
            proposals = torch.cat([torch.zeros_like(draft.dists[:1]), draft.dists])
        verdict = verify_tree(tokens, parent, logits, self.sampling, proposals, self.generator)
        # the full distributions are only needed for the recorded top-k hover
        target_probs = processed_probs(logits, self.sampling) if self.record else None
        return verdict, target_probs

    def update_shape(self, knobs: dict, settings=None) -> None:
        """Apply live knobs (tree shape, draft length, window) from the next step on; `settings`, when
        given, are the run's settings with those knobs changed, recorded in the trace from now on."""
        self.settings = settings or replace(self.settings, knobs={**self.settings.knobs, **knobs})
        self.drafter.set_shape(knobs)

    def _record(self, root_pos, tokens, parent, draft, logits, target_probs, verdict, committed, draft_s, verify_s):
        n = tokens.shape[0]
        if self.record:
            node_probs = verdict.target_probs
            topk = target_probs.topk(min(TOPK_RECORDED, target_probs.shape[-1]), dim=-1)
            bonus_row = verdict.accepted_path[-1] if verdict.accepted_path else 0
            bonus_prob = float(target_probs[bonus_row, verdict.bonus_token])
            node_probs_h = node_probs.float().cpu().numpy()
            topk_ids, topk_probs = topk.indices.cpu().numpy(), topk.values.float().cpu().numpy()
            accept_probs = verdict.accept_probs.float().cpu().numpy()
            stats = logit_stats(logits, temperature=self.sampling.temperature or 1.0)
            entropy, gap = stats.entropy.cpu().numpy(), stats.top2_gap.cpu().numpy()
        else:
            entropy = gap = np.zeros(0, np.float32)
            node_probs_h = np.full(n, np.nan, dtype=np.float32)
            topk_ids, topk_probs = np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
            accept_probs = np.full(n, np.nan, dtype=np.float32)
            bonus_prob = float("nan")
        draft_probs = np.concatenate([[1.0], draft.draft_probs.float().cpu().numpy()]).astype(np.float32)
        tree = DraftTree(
            token_ids=tokens.cpu().numpy().astype(np.int64),
            parent=parent,
            draft_probs=draft_probs,
            source=("root", *draft.source),
        )
        return SpecStep(
            step=self.n_steps,
            root_pos=root_pos,
            tree=tree,
            target_probs=node_probs_h.astype(np.float32),
            accept_probs=accept_probs.astype(np.float32),
            status=verdict.status,
            accepted_path=np.asarray(verdict.accepted_path, dtype=np.int64),
            bonus_token=verdict.bonus_token,
            bonus_prob=bonus_prob,
            bonus_kind=verdict.bonus_kind,
            committed_ids=np.asarray(committed, dtype=np.int64),
            target_topk_ids=topk_ids.astype(np.int64),
            target_topk_probs=topk_probs.astype(np.float32),
            draft_ms=draft_s * 1000,
            verify_ms=verify_s * 1000,
            target_forwards=1,
            draft_forwards=draft.forwards,
            lossless=self.lossless,
            target_entropy=entropy.astype(np.float32),
            target_top2_gap=gap.astype(np.float32),
        )

    def steps(self):
        """Yield one record per step until EOS or the token limit."""
        while not self.done:
            yield self.step()

    def trace(self) -> Trace:
        """The run so far: its settings (live knob changes included), every record, and its decode time."""
        return Trace(
            method=self.settings.method,
            settings=self.settings.to_dict(),
            target_id=self.target_id,
            draft_id=self.draft_id,
            prompt_ids=self.prompt_ids,
            steps=list(self.records),
            wall_s=self.wall_s,
            prefill_ms=self.prefill_ms,
            finish_reason=self.finish_reason,
            backend=self.backend,
            lossless=self.lossless,
        )


def decode(target, drafter, prompt_ids, settings, eos_ids=(), record=True, target_id="", draft_id=None) -> Trace:
    """Run to the end and return the whole trace."""
    dec = SpeculativeDecoder(target, drafter, prompt_ids, settings, eos_ids, record, target_id=target_id,
                             draft_id=draft_id)
    for _ in dec.steps():
        pass
    return dec.trace()
