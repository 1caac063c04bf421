"""The speculative decoding loop: propose → score → select → commit.

`SpeculativeDecoder` owns the target's KV cache and the committed tokens and
advances one target forward per `step()`. Plain autoregressive decoding is the
same loop with a drafter that proposes nothing, so every method, the baseline
included, goes through one code path.

Recording (`record=True`) only adds host copies of values the step computed
anyway plus the target's top-k for hover; it never touches the random stream
or the decisions, so the tokens are identical either way (tested).

The hot path reads the device back once per step: the verdict, with the tree's
tokens and (when recording) every recorded value riding along in the same
transfer (`verify.read_verdict`). The committed tokens live in a device buffer
that grows in place, mirrored on the host from that same read; nothing is
re-uploaded. Model drafters add one read per tree level they grow
(tests/decoding/test_host_syncs.py counts them).

A draft past the end of sequence is meaningless: verification never accepts a
node below an EOS node, the record drops those nodes, and a step whose
accepted path ends in EOS adds nothing after it (`bonus_kind` NO_BONUS).

Every decoder (this one, the diffusion decoder, Jacobi's lattice view) follows
the `Decoder` protocol: `step()`, `steps()`, `done`, and `trace()`, which builds
the run's `Trace` from the records it produced, so the CLI, the app and the
benchmarks record the same fields.
"""
from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Iterator, Protocol, runtime_checkable

import numpy as np
import torch
from ..config import ConfigError
from ..kernels.backend import backend_for
from ..kernels.logit_stats import logit_stats
from ..kernels.tree_attention import TreeMask
from ..models import attention
from ..models.cache import SlabCache
from ..trace import NO_BONUS, DraftTree, SpecStep, Trace, first_eos, is_chain
from . import kv
from .drafters import Context, Draft, Drafter, FeatureTap
from .intervene import DraftEdit, edited_draft
from .sampling import processed_probs
from .tree import ancestor_matrix, depths, tree_attention_inputs, upload
from .verify import Verdict, draw_uniforms, read_verdict, residuals_after_rejection, verify_on_device

TOPK_RECORDED = 5
# the record of a sampled step's tests (SpecStep fields of the same names), absent under greedy
_SAMPLED_RECORD = ("uniforms", "draft_topk_ids", "draft_topk_probs", "residual_topk_ids", "residual_topk_probs")


@runtime_checkable
class Decoder(Protocol):
    """A run in progress: one record per `step()` (None once done), and the trace of the records so far."""

    @property
    def done(self) -> bool: ...

    def step(self): ...

    def steps(self) -> Iterator: ...

    def trace(self) -> Trace: ...


@runtime_checkable
class Intervenable(Protocol):
    """A decoder the user may change between steps (the diffusion decoder): pin a token at a canvas cell, or send
    a committed cell back to the mask. Both take effect from the next step, whose record carries them."""

    def pin(self, position: int, token_id: int) -> None: ...

    def remask(self, position: int) -> None: ...


class RecordingDecoder(ABC):
    """What every decoder's `step()` shares: time `_step()`, keep its record, stop once finished.

    A subclass sets `records = []`, `wall_s = 0.0` and `finish_reason = ""` when it starts, and
    implements `_step()` (one record; sets `finish_reason` when the run is over) and `trace()`."""

    records: list
    wall_s: float  # decode wall time of the steps so far, prefill included
    finish_reason: str

    @property
    def done(self) -> bool:
        return bool(self.finish_reason)

    def step(self):
        """One step and its record; None once the run is over."""
        if self.done:
            return None
        t0 = time.perf_counter()
        record = self._step()
        self.wall_s += time.perf_counter() - t0
        self.records.append(record)
        return record

    def steps(self) -> Iterator:
        """Yield one record per step until the run is over."""
        while not self.done:
            yield self.step()

    @abstractmethod
    def _step(self):
        """Advance one step and return its record."""

    @abstractmethod
    def trace(self) -> Trace:
        """The run so far as a `Trace`."""

    def _trace(self, method: str, settings: dict, target_id: str, draft_id: str | None, lossless: bool) -> Trace:
        """A Trace of the records so far; the decoder's own state fills every field these arguments do not."""
        return Trace(method=method, settings=settings, target_id=target_id, draft_id=draft_id,
                     prompt_ids=self.prompt_ids, steps=list(self.records), wall_s=self.wall_s,
                     prefill_ms=self.prefill_ms, finish_reason=self.finish_reason, backend=self.backend,
                     lossless=lossless)


class SpeculativeDecoder(RecordingDecoder):
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
            raise ConfigError("the prompt is empty")
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
            raise ConfigError(
                f"the prompt is {prompt.shape[0]} tokens; with max_new_tokens={settings.max_new_tokens} it exceeds "
                f"the model's context of {self.max_positions} tokens"
            )
        self.device = next(target.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(self.sampling.seed)
        self.prompt_ids = prompt
        # the committed tokens, root included: a device buffer written in place, and its host mirror
        self.n_ids = 0
        self._ids = torch.zeros(0, dtype=torch.long, device=self.device)
        self._ids_host = np.zeros(0, dtype=np.int64)
        self._reserve(prompt.shape[0] + settings.max_new_tokens + 1)
        self.n_ids = prompt.shape[0]
        self._ids_host[: self.n_ids] = prompt
        self._ids[: self.n_ids] = upload(prompt, self.device)
        self._eos = upload(sorted(self.eos_ids), self.device) if self.eos_ids else None
        self.n_new = 0
        self.n_steps = 0
        self.finish_reason = ""
        self.cache = None
        self.prefill_ms = 0.0
        self.lossless = True
        # trained drafters (Medusa, EAGLE) read the target's final features of the committed tokens
        self.tap = FeatureTap(target) if drafter.reads_target_features else None
        # a fork's first step: (the edited draft, its Intervention record), verified instead of a proposal
        self._forced = None

    @property
    def backend(self) -> str:
        """Which kernels this run goes through, for the trace and the UI."""
        kernels = backend_for(self.device)
        if self.cache is not None and not isinstance(self.cache, SlabCache):
            return f"{kernels} verify; SDPA attention (model unsupported by the tree kernel)"
        return f"{kernels} ({self.device.type})"

    @property
    def ids_host(self) -> np.ndarray:
        """The committed tokens so far, prompt included (a view: read it, do not keep it across steps)."""
        return self._ids_host[: self.n_ids]

    @property
    def output_ids(self) -> np.ndarray:
        return self._ids_host[self.prompt_ids.shape[0] : self.n_ids]

    def _reserve(self, length: int) -> None:
        """Room for `length` committed tokens in both buffers (grown by doubling if settings change mid-run)."""
        if length <= self._ids_host.shape[0]:
            return
        length = max(length, 2 * self._ids_host.shape[0])
        ids = torch.zeros(length, dtype=torch.long, device=self.device)
        ids[: self.n_ids] = self._ids[: self.n_ids]
        host = np.zeros(length, dtype=np.int64)
        host[: self._ids_host.shape[0]] = self._ids_host
        self._ids, self._ids_host = ids, host

    @torch.inference_mode()
    def prefill(self) -> None:
        """Cache every committed token but the last, which becomes the first root: the prompt, or for a
        fork the prompt and the text committed before the forked step."""
        t0 = time.perf_counter()
        # room for the whole run plus the widest tree, so the slab never grows mid-run
        self.cache = attention.new_cache(self.target, self.prompt_ids.shape[0] + self.settings.max_new_tokens + 288)
        self.drafter.reset(self.ids_host.copy())
        if self.n_ids > 1:
            ids = self._ids[: self.n_ids - 1].unsqueeze(0)
            with self._tapped():
                self.target(input_ids=ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
            if self.tap is not None:
                self.drafter.on_target_features(self.tap.take()[0])
        self.prefill_ms = (time.perf_counter() - t0) * 1000

    @torch.inference_mode()
    def _step(self) -> SpecStep:
        """One propose → score → select → commit iteration."""
        if self.cache is None:
            self.prefill()
        root_pos = self.n_ids - 1
        remaining = self.settings.max_new_tokens - self.n_new
        self._reserve(self.n_ids + remaining)
        # a step commits accepted drafts + 1, so deeper drafts than this are wasted
        max_depth = min(remaining - 1, self.max_positions - root_pos - 1)

        t0 = time.perf_counter()
        ctx = Context(self._ids[: self.n_ids], self.ids_host)
        forced, self._forced = self._forced, None
        # a fork's first step verifies the user's edited tree; the drafter proposes from the next step on
        draft, intervention = forced if forced is not None else (self.drafter.propose(ctx, max_depth, self.generator),
                                                                 None)
        t1 = time.perf_counter()

        tokens = torch.cat([ctx.ids[-1:], draft.token_ids])
        parent = np.concatenate([[-1], draft.parent]).astype(np.int64)
        parent_t = upload(parent, self.device)
        with self._tapped():
            logits = self._score(tokens, parent, root_pos)
        out, proposals, uniforms = self._verify(tokens, parent_t, logits, draft)
        # the step's one read: the verdict, the tree's tokens and draft probabilities, and the record
        recorded = self._recorded(logits, out, tokens, parent, proposals, uniforms) if self.record else ()
        verdict, (tokens_h, draft_probs_h, *recorded) = read_verdict(out, tokens, draft.draft_probs, *recorded)

        path = verdict.accepted_path
        if path and int(tokens_h[path[-1]]) in self.eos_ids:
            # the path ended the sequence: nothing follows it
            verdict = replace(verdict, bonus_token=-1, bonus_kind=NO_BONUS)
        bonus = [] if verdict.bonus_kind == NO_BONUS else [verdict.bonus_token]
        committed = np.concatenate([tokens_h[path], np.asarray(bonus, dtype=np.int64)])[:remaining]
        eos_at = first_eos(committed, self.eos_ids)
        if eos_at >= 0:
            committed = committed[: eos_at + 1]
            self.finish_reason = "eos"

        kv.keep_path(self.cache, root_pos, path)
        # the root and the accepted nodes, as device indices into this step's tree
        kept = torch.cat([out.path.new_zeros(1), out.path[0, : len(path)]])
        if self.tap is not None:
            # the root's and the accepted nodes' features: the positions this step commits before the bonus
            self.drafter.on_target_features(self.tap.take()[0].index_select(0, kept))
        # drafters that reuse the target's own predictions (Jacobi) read them here
        self.drafter.on_scored(logits, verdict)

        # commit: the device buffer takes the tokens from the device, the host mirror from the read
        c = committed.shape[0]
        self._ids[self.n_ids : self.n_ids + c] = torch.cat([tokens.index_select(0, kept[1:]), out.bonus])[:c]
        self._ids_host[self.n_ids : self.n_ids + c] = committed
        self.n_ids += c
        self.n_new += c
        if not self.finish_reason and self.n_new >= self.settings.max_new_tokens:
            self.finish_reason = "length"
        self.drafter.commit(path, c)
        t2 = time.perf_counter()

        record = self._record(root_pos, tokens_h, parent, draft, draft_probs_h, recorded, verdict, committed,
                              t1 - t0, t2 - t1, intervention)
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
            positions = upload(prefix_len + depths(parent), self.device).unsqueeze(0)
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

    def _verify(self, tokens, parent_t, logits, draft: Draft) -> tuple:
        """(the kernel's verdict on the device, with every node below an EOS node out of reach; the proposal
        rows; the uniforms that decided the tests), the last two None under greedy or without proposals."""
        proposals = uniforms = None
        if not self.sampling.greedy:
            uniforms = draw_uniforms(tokens.shape[0], self.generator, logits.device)
            if draft.dists is not None:
                # row i is the distribution node i was drawn from; the root row is never read
                proposals = torch.cat([torch.zeros_like(draft.dists[:1]), draft.dists])
        if self._eos is not None and tokens.shape[0] > 1:
            # a draft past the end of sequence is meaningless: in the rows verification reads, an EOS node
            # gives its children probability 0, so none is accepted (and the bonus after an EOS is dropped)
            below_eos = torch.isin(tokens, self._eos)
            below_eos[0] = False  # the root is committed text, its row scores real drafts
            rows, cols = parent_t[1:], tokens[1:]
            logits = logits.clone()
            logits[rows, cols] = logits[rows, cols].masked_fill(below_eos[rows], float("-inf"))
        out = verify_on_device(tokens, parent_t, logits, self.sampling, proposals, self.generator, uniforms)
        return out, proposals, uniforms

    def _recorded(self, logits, out, tokens, parent: np.ndarray, proposals, uniforms) -> tuple:
        """The record's device tensors, read back with the verdict: each node's target probability and
        acceptance chance, the target's top-k and uncertainty after it, the bonus token's probability, and
        under sampling what the tests saw (each node's uniform, its drafting distribution's top, the residual
        left after its rejection)."""
        probs = processed_probs(logits, self.sampling)
        k = min(TOPK_RECORDED, probs.shape[-1])
        topk = probs.topk(k, dim=-1)
        last = out.path[0].gather(0, (out.n_accepted - 1).clamp_min(0))
        bonus_row = torch.where(out.n_accepted > 0, last, torch.zeros_like(last))
        stats = logit_stats(logits, temperature=self.sampling.temperature or 1.0)
        n = tokens.shape[0]
        empty = probs.new_zeros((0,))
        tested_uniforms, draft_top, residual_top = empty, (empty, empty), (empty, empty)
        if uniforms is not None:
            accept = out.accept_prob[0]
            tested = ~torch.isnan(accept)
            tested[0] = False  # the root is never tested
            tested_uniforms = torch.where(tested, uniforms[0, :n], torch.full_like(accept, float("nan")))
            if proposals is not None:
                top = proposals.float().topk(k, dim=-1)
                draft_top = (top.indices, top.values)
            top = residuals_after_rejection(probs, tokens, parent, proposals).topk(k, dim=-1)
            residual_top = (top.indices, top.values)
        return (out.target_prob[0], out.accept_prob[0], topk.indices, topk.values, stats.entropy, stats.top2_gap,
                probs[bonus_row, out.bonus.clamp_min(0)], tested_uniforms, *draft_top, *residual_top)

    def update_shape(self, knobs: dict, settings=None) -> None:
        """Apply live knobs (tree shape, draft length, window) from the next step on; `settings`, when
        given, are the run's settings with those knobs changed, recorded in the trace from now on."""
        self.settings = settings or replace(self.settings, knobs={**self.settings.knobs, **knobs})
        self.drafter.set_shape(knobs)

    def _past_eos(self, tokens_h: np.ndarray, parent: np.ndarray) -> np.ndarray | None:
        """[N] bool: the nodes below an EOS node, which verification never reached; None if there are none."""
        if not self.eos_ids:
            return None
        is_eos = np.isin(tokens_h, list(self.eos_ids))
        is_eos[0] = False
        if not is_eos.any():
            return None
        below = ancestor_matrix(parent)[:, is_eos].sum(axis=1) > is_eos  # an EOS among the strict ancestors
        return below if below.any() else None

    def _record(self, root_pos, tokens_h, parent, draft, draft_probs_h, recorded, verdict: Verdict, committed,
                draft_s, verify_s, intervention=None) -> SpecStep:
        n = tokens_h.shape[0]
        if self.record:
            (node_probs, accept_probs, topk_ids, topk_probs, entropy, gap, bonus_prob, uniforms,
             draft_topk_ids, draft_topk_probs, residual_topk_ids, residual_topk_probs) = recorded
            bonus_prob = float("nan") if verdict.bonus_kind == NO_BONUS else float(bonus_prob[0])
        else:
            entropy = gap = np.zeros(0, np.float32)
            node_probs = np.full(n, np.nan, dtype=np.float32)
            topk_ids, topk_probs = np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
            accept_probs = np.full(n, np.nan, dtype=np.float32)
            bonus_prob = float("nan")
        per_node = {
            "token_ids": tokens_h, "draft_probs": np.concatenate([[1.0], draft_probs_h]).astype(np.float32),
            "source": np.asarray(("root", *draft.source), dtype=object), "status": verdict.status,
            "target_probs": node_probs, "accept_probs": accept_probs, "topk_ids": topk_ids, "topk_probs": topk_probs,
            # K = 0 until a sampled step fills them: the shape a trace read back gives them too
            "draft_topk_ids": np.zeros((n, 0), np.int64), "draft_topk_probs": np.zeros((n, 0), np.float32),
            "residual_topk_ids": np.zeros((n, 0), np.int64), "residual_topk_probs": np.zeros((n, 0), np.float32),
        }
        if self.record:
            per_node.update(entropy=entropy, gap=gap)
            if uniforms.size:  # sampled: what each test saw
                per_node.update(uniforms=uniforms)
                if draft_topk_ids.size:
                    per_node.update(draft_topk_ids=draft_topk_ids, draft_topk_probs=draft_topk_probs)
                per_node.update(residual_topk_ids=residual_topk_ids, residual_topk_probs=residual_topk_probs)
        path = np.asarray(verdict.accepted_path, dtype=np.int64)
        below = self._past_eos(tokens_h, parent)
        if below is not None:
            # the record holds no node after an end of sequence: keep the rest, renumbered
            keep = ~below
            index = np.cumsum(keep) - 1
            per_node = {k: v[keep] for k, v in per_node.items()}
            parent = np.where(parent[keep] < 0, -1, index[np.maximum(parent[keep], 0)])
            path = index[path]
            if intervention is not None:  # the edited node is never below an EOS the edit did not put in
                intervention = replace(intervention, node=int(index[intervention.node]))
        tree = DraftTree(
            token_ids=per_node["token_ids"].astype(np.int64),
            parent=parent.astype(np.int64),
            draft_probs=per_node["draft_probs"],
            source=tuple(per_node["source"]),
        )
        return SpecStep(
            step=self.n_steps,
            root_pos=root_pos,
            tree=tree,
            target_probs=per_node["target_probs"].astype(np.float32),
            accept_probs=per_node["accept_probs"].astype(np.float32),
            status=per_node["status"].astype(np.int8),
            accepted_path=path,
            bonus_token=verdict.bonus_token,
            bonus_prob=bonus_prob,
            bonus_kind=verdict.bonus_kind,
            committed_ids=committed,
            target_topk_ids=per_node["topk_ids"].astype(np.int64),
            target_topk_probs=per_node["topk_probs"].astype(np.float32),
            draft_ms=draft_s * 1000,
            verify_ms=verify_s * 1000,
            target_forwards=1,
            draft_forwards=draft.forwards,
            lossless=self.lossless,
            target_entropy=per_node.get("entropy", entropy).astype(np.float32),
            target_top2_gap=per_node.get("gap", gap).astype(np.float32),
            **{name: per_node[name] for name in _SAMPLED_RECORD if name in per_node},
            intervention=intervention,
        )

    def fork(self, edit: DraftEdit, drafter: Drafter) -> "SpeculativeDecoder":
        """A new branch of this run at recorded step `edit.step`, with `drafter` (a fresh one of the same
        method): it keeps the records and the committed text before that step, and its first step verifies
        that step's recorded tree with the user's edit (`intervene.edited_draft`); the drafter proposes from
        the step after. This run is left as it is, so the two can be compared.

        The fork's decode time starts at this run's time up to the forked step (prefill plus the steps'
        recorded drafting and verifying), so its tok/s reads like one run's; re-reading the committed text
        into the fork's cache is the cost of forking, not of decoding, and is not counted."""
        if not 0 <= edit.step < len(self.records):
            raise ConfigError(f"step {edit.step} is not a recorded step of this run (it has {len(self.records)})")
        step = self.records[edit.step]
        vocab = int(getattr(self.target.config, "vocab_size", 0) or self.target.get_output_embeddings().weight.shape[0])
        forced = edited_draft(step, edit, vocab, self.device)
        fork = SpeculativeDecoder(self.target, drafter, self.prompt_ids, self.settings, self.eos_ids, self.record,
                                  self.max_positions, self.target_id, self.draft_id)
        kept = self.records[: edit.step]
        n = self.prompt_ids.shape[0] + sum(int(r.committed_ids.shape[0]) for r in kept)
        fork._ids_host[:n] = self._ids_host[:n]
        fork._ids[:n] = self._ids[:n]
        fork.n_ids, fork.n_new, fork.n_steps = n, n - self.prompt_ids.shape[0], edit.step
        fork.records = list(kept)
        fork.prefill()
        fork.prefill_ms = self.prefill_ms
        fork.wall_s = (self.prefill_ms + sum(r.draft_ms + r.verify_ms for r in kept)) / 1000
        fork._forced = forced
        return fork

    def trace(self) -> Trace:
        """The run so far: its settings (live knob changes included), every record, and its decode time."""
        return self._trace(self.settings.method, self.settings.to_dict(), self.target_id, self.draft_id,
                           self.lossless)


def decode(target, drafter, prompt_ids, settings, eos_ids=(), record=True, target_id="", draft_id=None) -> Trace:
    """Run to the end and return the whole trace."""
    dec = SpeculativeDecoder(target, drafter, prompt_ids, settings, eos_ids, record, target_id=target_id,
                             draft_id=draft_id)
    for _ in dec.steps():
        pass
    return dec.trace()
