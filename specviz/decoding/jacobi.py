"""Jacobi decoding: an AR model refines a window of guesses in parallel until they converge.

Each step feeds the last committed token plus the current guesses for the next
`window` positions through the target in one causal forward. Position i's
prediction is exact as soon as every guess before it was right, so the guesses
that match the predictions, plus the first prediction after them, have
converged (fixed-point iteration). The predictions after that become the next
guesses.

That is speculative decoding with a chain drafted by the previous iteration, so
Jacobi runs through the speculative engine: the same verification (greedy, or
lossless rejection sampling with the guesses as point masses), the same slab
cache and kernels. Its greedy output equals plain greedy decoding by
construction, and the tests check it token for token.

`JacobiLattice` re-expresses each step as a `DiffusionStep`, so an AR model
fills the same lattice of steps × positions as a diffusion LM: unconverged
guesses are masked cells whose proposal is the current guess.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..trace import KEPT, MASKED, REVEALED, DiffusionStep, SpecStep, Trace, first_eos
from .drafters import Context, Draft, DrafterBase


class JacobiDrafter(DrafterBase):
    """Proposes the previous iteration's predictions for the positions after the new root."""

    name = "jacobi"

    def __init__(self, window: int):
        self.window = window
        self.guess = None  # [n] long, the next guesses (device)
        self._pred = None

    def reset(self, prompt_ids: np.ndarray) -> None:
        self.guess = None
        self._pred = None

    def set_shape(self, knobs: dict) -> None:
        self.window = int(knobs.get("window", self.window))

    def propose(self, ctx: Context, max_depth: int, generator: torch.Generator) -> Draft:
        n = min(self.window, max_depth)
        if n <= 0:
            return Draft.empty(ctx.ids.device)
        # the first window (and any tail the last step could not predict) starts as copies of the root
        filler = ctx.ids[-1:] if self.guess is None or self.guess.numel() == 0 else self.guess[-1:]
        guess = self.guess[:n] if self.guess is not None else ctx.ids[:0]
        guess = torch.cat([guess, filler.expand(n - guess.shape[0])])
        return Draft(
            token_ids=guess,
            parent=np.arange(n, dtype=np.int64),  # a chain: node j's parent is node j - 1 (0 = root)
            draft_probs=torch.ones(n, device=ctx.ids.device),
            dists=None,  # guesses are point masses, which keeps sampled verification lossless
            source=("jacobi",) * n,
        )

    def on_scored(self, logits: torch.Tensor, verdict) -> None:
        # row i predicts the position after node i: the new guess for that position
        self._pred = logits.argmax(-1)

    def commit(self, accepted_path: list, n_committed: int) -> None:
        # rows 0..a produced the committed tokens; rows after them guess the positions that follow
        self.guess = self._pred[len(accepted_path) + 1:]


class JacobiLattice:
    """Runs a speculative decoder whose drafter is a `JacobiDrafter` and records `DiffusionStep`s.

    The canvas has `max_new_tokens` cells; the decoder must record (top-k and statistics per node)."""

    def __init__(self, decoder, eos_ids=(), settings: dict | None = None):
        if not isinstance(decoder.drafter, JacobiDrafter):
            raise TypeError("JacobiLattice needs a decoder drafting with JacobiDrafter")
        if not decoder.record:
            raise ValueError("JacobiLattice needs a recording decoder")
        self.decoder = decoder
        self.length = decoder.settings.max_new_tokens
        # the lattice run's own settings (LatticeSettings.to_dict()) for the trace; default: the engine's
        self.settings = settings if settings is not None else {**decoder.settings.to_dict(), "mode": "jacobi"}
        self.records: list = []
        self.canvas = np.full(self.length, -1, dtype=np.int64)
        self.eos_ids = np.asarray(sorted({int(e) for e in eos_ids or decoder.eos_ids}), dtype=np.int64)
        self.spec_steps = []
        self.wall_s = 0.0

    # the run's state is the speculative decoder's
    done = property(lambda self: self.decoder.done)
    finish_reason = property(lambda self: self.decoder.finish_reason)
    prompt_ids = property(lambda self: self.decoder.prompt_ids)

    @property
    def backend(self) -> str:
        return self.decoder.backend

    def update_shape(self, knobs: dict, settings=None) -> None:
        """A new window applies from the next step (the lattice run's settings, when given, go in the trace)."""
        self.decoder.update_shape(knobs)
        if settings is not None:
            self.settings = settings.to_dict()

    def step(self) -> DiffusionStep | None:
        c0 = self.decoder.n_new
        t0 = time.perf_counter()
        s = self.decoder.step()
        self.wall_s += time.perf_counter() - t0
        if s is None:
            return None
        self.spec_steps.append(s)
        record = self._as_lattice_step(s, c0)
        self.records.append(record)
        return record

    def steps(self):
        while not self.done:
            yield self.step()

    def _as_lattice_step(self, s: SpecStep, c0: int) -> DiffusionStep:
        L = self.length
        rows = min(s.tree.size, L - c0)  # row i scores cell c0 + i
        k = s.target_topk_ids.shape[1]
        proposal = np.full(L, -1, dtype=np.int64)
        conf, gap, ent = (np.full(L, np.nan, dtype=np.float32) for _ in range(3))
        topk_ids, topk_probs = np.zeros((L, k), np.int64), np.zeros((L, k), np.float32)
        cells = c0 + np.arange(rows)
        proposal[cells] = s.target_topk_ids[:rows, 0]
        conf[cells] = s.target_topk_probs[:rows, 0]
        gap[cells], ent[cells] = s.target_top2_gap[:rows], s.target_entropy[:rows]
        topk_ids[cells], topk_probs[cells] = s.target_topk_ids[:rows], s.target_topk_probs[:rows]
        # converged cells hold what was committed (under sampling not always the argmax), at its probability
        committed = s.committed_ids
        done_cells = c0 + np.arange(committed.shape[0])
        proposal[done_cells] = committed
        conf[done_cells] = [float(s.target_probs[node]) for node in s.accepted_path[: committed.shape[0]]] + (
            [float(s.bonus_prob)] if committed.shape[0] > s.n_accepted else [])
        state = np.where(self.canvas >= 0, KEPT, MASKED).astype(np.int8)
        self.canvas[done_cells] = committed
        state[done_cells] = REVEALED
        eos_at = first_eos(self.canvas, self.eos_ids)
        return DiffusionStep(
            step=s.step, block=s.step, block_start=c0, block_end=c0 + rows,
            canvas=self.canvas.copy(), cell_state=state, proposal=proposal, confidence=conf, top2_gap=gap,
            entropy=ent, topk_ids=topk_ids, topk_probs=topk_probs,
            rule=f"converged {committed.shape[0]} of {rows} guessed positions", threshold=float("nan"),
            signal=float("nan"), forwards=s.target_forwards, cached=c0, eos_at=eos_at,
            forward_ms=s.verify_ms, select_ms=s.draft_ms, lossless=s.lossless,
        )

    def trace(self) -> Trace:
        d = self.decoder
        return Trace(method="jacobi", settings=dict(self.settings), target_id=d.target_id, draft_id=None,
                     prompt_ids=d.prompt_ids, steps=list(self.records), wall_s=self.wall_s, prefill_ms=d.prefill_ms,
                     finish_reason=d.finish_reason, backend=d.backend, lossless=d.lossless)
