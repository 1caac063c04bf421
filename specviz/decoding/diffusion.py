"""Masked and block diffusion decoding: propose → score → select → commit on a canvas.

The canvas holds `gen_length` cells after the prompt, all masked at first. Each
`step()` is one model forward:
- propose / score: the model gives every scored cell a distribution; the
  logit-statistics kernel turns it into proposal, confidence, top-2 gap and
  entropy;
- select: the schedule (decoding/schedules.py) picks cells of the active block
  to reveal, and may remask;
- commit: revealed cells take their proposals; when the block is full the next
  block starts (semi-autoregressive decoding).

Two ways to score:
- recompute: forward prompt + whole canvas every step under the family's
  attention rule. Exact for every family; the only exact way for fully
  bidirectional models (LLaDA, Dream, MDLM), whose early cells see later ones.
- block cache: for block-causal models (SDAR, Fast-dLLM v2, BD3-LM) nothing in a
  finished block attends to later cells, so its KV is final once the block is.
  Each step forwards only the active block on top of the cache; the step that
  starts a block also forwards the block just finished, so its KV enters the
  cache in that same forward (one forward per step either way).

AdaBlock-style adaptive blocks: when a block starts, the model scores a window
of a quarter of the canvas (at least one default block), and the block ends
after the most confident delimiter token (newline, period, …) proposed in that
window, if it passes the delimiter threshold; otherwise the block keeps its
default size.

Interventions (`pin`, `remask`): between steps the user may pin a token at a cell (a constraint, as in LLaDA's
demo: the cell holds it from then on and counts as committed) or send a committed cell back to the mask (the
schedule fills it again). They change the canvas at once and the next record carries them (`intervention`,
`pinned`). A cell of a finished block reopens that block: it becomes the active block again, the cache drops
everything from its start (so it never holds KV of a token that is no longer there), and the blocks after it
are passed again with the extents they had.

`DiffusionDecoder` is a decoder like the speculative engine: `step()` / `steps()` produce one
`DiffusionStep` record each (kept in `records`), `done` says it finished, and `trace()` is the
`Trace` of the steps so far, with the decoder's own wall time (prefill included).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..config import ConfigError
from ..kernels.backend import backend_for
from ..kernels.logit_stats import logit_stats
from ..models.diffusion import BLOCK_CAUSAL, DiffusionLM
from ..trace import (KEPT, MASKED, NO_INTERVENTION, PINNED_BY_USER, REMASKED, REVEALED, SENT_BACK_BY_USER,
                     DiffusionStep, Trace, canvas_output, first_eos)
from .engine import RecordingDecoder
from .kv import truncate
from .schedules import SCHEDULES, CellView, ScheduleParams, select

TOPK_RECORDED = 5


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "low_confidence"
    gen_length: int = 64
    block_size: int = 16
    steps: int = 64  # step budget of the fixed-count schedules over the whole canvas, split over blocks by length
    params: ScheduleParams = field(default_factory=ScheduleParams)
    adaptive_block: bool = False
    delimiter_threshold: float = 0.3
    use_cache: bool = True  # the exact block cache, where the model's attention allows it
    temperature: float = 0.0  # 0: each cell proposes its argmax; > 0: a sample at that temperature
    seed: int = 0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if self.gen_length < 1 or self.block_size < 1 or self.steps < 1:
            raise ValueError("gen_length, block_size and steps must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


class DiffusionDecoder(RecordingDecoder):
    """Decodes one prompt step by step. `settings` is the run's settings JSON that its trace records
    (default: the config's own fields)."""

    def __init__(self, lm: DiffusionLM, prompt_ids, config: DiffusionConfig, delimiter_ids=(), record: bool = True,
                 *, settings: dict | None = None):
        prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        if prompt.shape[0] == 0:
            raise ConfigError("the prompt is empty")
        if prompt.shape[0] + config.gen_length > lm.max_positions:
            raise ConfigError(f"the prompt is {prompt.shape[0]} tokens; with a canvas of {config.gen_length} it "
                             f"exceeds the model's context of {lm.max_positions} tokens")
        if np.any(prompt == lm.mask_id):
            raise ConfigError("the prompt contains the mask token itself; remove it")
        self.lm = lm
        self.config = config
        self.settings = dict(settings) if settings is not None else config.to_dict()
        self.record = record
        self.prompt_ids = prompt
        self.device = lm.device
        self.delimiters = np.asarray(sorted({int(d) for d in delimiter_ids}), dtype=np.int64)
        self.eos_ids = tuple(sorted({int(e) for e in lm.eos_ids}))
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        L = config.gen_length
        self.canvas = np.full(L, -1, dtype=np.int64)
        self.commit_conf = np.full(L, np.nan, dtype=np.float32)  # each revealed cell's confidence when committed
        self.block, self.start = 0, 0
        self.end = min(L, config.block_size)
        self.block_started = True  # the active block has not been scored yet
        self.block_steps = 0
        self.spans = []  # finished blocks' [start, end)
        self.upcoming = []  # blocks laid out before a reopen, [start, end): the run passes them again as they were
        self.cached = config.use_cache and lm.can_cache
        self.cache = None
        self.cache_len = 0  # sequence positions held in the cache
        # shifted models read cell i from position i - 1: the logits at the last position of every cached length
        # that ends a block (a reopen cuts the cache back to one of them)
        self.boundary_logits: dict = {}
        self.pinned = np.zeros(L, dtype=bool)  # cells a user's pin holds
        self.intervened = np.zeros(L, dtype=np.int8)  # what the user did since the last step; the next record has it
        self.n_steps = 0
        self.finish_reason = ""
        self.prefill_ms = 0.0
        self._prefilled = False
        self.records: list[DiffusionStep] = []  # every step produced so far
        self.wall_s = 0.0  # decode wall time of those steps, prefill included

    # state -----------------------------------------------------------------
    @property
    def backend(self) -> str:
        return f"{backend_for(self.device)} ({self.device.type})"

    @property
    def mode(self) -> str:
        return "block cache" if self.cached else "recompute"

    def _budget(self) -> int:
        """This block's share of the step budget, in proportion to its length."""
        return max(1, round(self.config.steps * (self.end - self.start) / self.config.gen_length))

    # scoring ---------------------------------------------------------------
    def _prefill(self) -> None:
        t0 = time.perf_counter()
        if self.cached:
            P = self.prompt_ids.shape[0]
            self.cache = self.lm.new_cache()
            ids = torch.from_numpy(self.prompt_ids).to(self.device)
            causal = torch.ones(P, P, dtype=torch.bool, device=self.device).tril()
            logits = self.lm.forward(ids, torch.arange(P, device=self.device), causal, self.cache)
            self.cache_len = P
            self.boundary_logits = {P: logits[-1:]}
        self.prefill_ms = (time.perf_counter() - t0) * 1000
        self._prefilled = True

    def _device_canvas(self, lo: int, hi: int) -> torch.Tensor:
        cells = self.canvas[lo:hi].copy()
        cells[cells < 0] = self.lm.mask_id
        return torch.from_numpy(cells).to(self.device)

    def _block_ids(self) -> np.ndarray:
        """Block index of every canvas cell: finished spans, the active block, then default-size blocks."""
        L, B = self.config.gen_length, self.config.block_size
        ids = np.empty(L, dtype=np.int64)
        for b, (lo, hi) in enumerate([*self.spans, (self.start, self.end), *self.upcoming]):
            ids[lo:hi] = b
        rest = np.arange(L - hi)
        ids[hi:] = b + 1 + rest // B
        return ids

    def _score_recompute(self, window_end: int):
        """Forward prompt + the whole canvas; returns (scored cell indices, their logits)."""
        P, L = self.prompt_ids.shape[0], self.config.gen_length
        ids = torch.cat([torch.from_numpy(self.prompt_ids).to(self.device), self._device_canvas(0, L)])
        allowed = None
        if self.lm.attention == BLOCK_CAUSAL:
            # the prompt is causal; a canvas cell sees the prompt and every cell of its own and earlier blocks
            blocks = np.concatenate([-(P - np.arange(P)), self._block_ids()])  # prompt tokens: one block each
            b = torch.from_numpy(blocks).to(self.device)
            allowed = b[None, :] <= b[:, None]
        logits = self.lm.forward(ids, torch.arange(P + L, device=self.device), allowed)
        rows = P + np.arange(L) - (1 if self.lm.shift else 0)
        return np.arange(L), logits[torch.from_numpy(rows).to(self.device)]

    def _score_cached(self, window_end: int):
        """Forward the block just finished (if any, it joins the cache) and the active window."""
        P = self.prompt_ids.shape[0]
        pend_lo = self.cache_len - P  # canvas cells finished but not yet cached
        n_pend, n_win = self.start - pend_lo, window_end - self.start
        ids = self._device_canvas(pend_lo, window_end)
        positions = torch.arange(self.cache_len, P + window_end, device=self.device)
        S = n_pend + n_win
        allowed = torch.ones(S, self.cache_len + S, dtype=torch.bool, device=self.device)
        # finished cells see their own and earlier blocks (after a reopen or an all-in, several blocks may wait
        # to be cached), never the window
        pend_blocks = torch.from_numpy(self._block_ids()[pend_lo:self.start]).to(self.device)
        allowed[:n_pend, self.cache_len:self.cache_len + n_pend] = pend_blocks[None, :] <= pend_blocks[:, None]
        allowed[:n_pend, self.cache_len + n_pend:] = False
        logits = self.lm.forward(ids, positions, allowed, self.cache)
        # keep the finished blocks' KV, drop the window's (it changes every step)
        truncate(self.cache, self.cache_len + n_pend)
        if self.lm.shift:
            for lo, hi in self.spans:
                if pend_lo < hi <= self.start:
                    self.boundary_logits[P + hi] = logits[hi - pend_lo - 1 : hi - pend_lo]
        self.cache_len += n_pend
        win = logits[n_pend:]
        if self.lm.shift:
            win = torch.cat([self.boundary_logits[self.cache_len], win[:-1]])
        return np.arange(self.start, window_end), win

    # one step (`step()` times it and keeps the record, see RecordingDecoder) ---------
    @torch.inference_mode()
    def _step(self) -> DiffusionStep:
        """One forward and its selection."""
        if not self._prefilled:
            self._prefill()
        cfg, L = self.config, self.config.gen_length
        adapting = cfg.adaptive_block and self.block_started and len(self.delimiters) > 0
        window_end = min(L, self.start + self._window()) if adapting else self.end
        cached_cells = self.cache_len - self.prompt_ids.shape[0] if self.cached else 0

        t0 = time.perf_counter()
        cells, logits = (self._score_cached if self.cached else self._score_recompute)(window_end)
        # the mask is never a proposal: writing it would leave the cell masked while counting it revealed
        logits = logits.float()
        logits[:, self.lm.mask_id] = float("-inf")
        temperature = cfg.temperature if cfg.temperature > 0 else 1.0
        stats = logit_stats(logits, temperature)
        if cfg.temperature > 0:
            gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=self.generator, device=logits.device)
                                           .clamp_(1e-20, 1.0)))
            proposal = (logits.float() / temperature + gumbel).argmax(-1)
        else:
            proposal = stats.argmax
        log_norm = stats.logsumexp
        scaled = logits.float() / temperature
        prop_prob = (scaled.gather(1, proposal[:, None])[:, 0] - log_norm).exp()
        if self.record:
            top = (scaled - log_norm[:, None]).exp().topk(min(TOPK_RECORDED, logits.shape[-1]), dim=-1)
        # one transfer of everything the schedule and the record need
        host = [t.cpu().numpy() for t in (proposal, prop_prob, stats.top2_gap, stats.entropy)]
        t1 = time.perf_counter()

        proposal_c = np.full(L, -1, dtype=np.int64)
        conf, gap, ent = (np.full(L, np.nan, dtype=np.float32) for _ in range(3))
        proposal_c[cells], conf[cells], gap[cells], ent[cells] = host
        rule_prefix = ""
        if adapting:
            self.end = self._adapt_block(proposal_c, conf)
            rule_prefix = f"block size {self.end - self.start}; "
        self.block_started = False
        masked = self.canvas < 0
        in_block = np.zeros(L, dtype=bool)
        in_block[self.start:self.end] = True
        scored = proposal_c >= 0
        view = CellView(
            masked=masked, eligible=masked & in_block & scored, proposal=proposal_c, confidence=conf,
            top2_gap=gap, entropy=ent, commit_conf=self.commit_conf.copy(),
            revisable=~masked & in_block & ~self.pinned,
            steps_left=max(1, self._budget() - self.block_steps), progress=float(np.mean(~masked)),
        )
        sel = select(cfg.schedule, view, cfg.params, self.rng)
        before = self.canvas.copy()
        self.canvas[sel.reveal] = proposal_c[sel.reveal]
        self.canvas[sel.remask] = -1
        self.commit_conf[sel.reveal] = conf[sel.reveal]
        self.commit_conf[sel.remask] = np.nan
        state = np.where(before >= 0, KEPT, MASKED).astype(np.int8)
        state[sel.reveal] = REVEALED
        state[sel.remask] = REMASKED
        self.block_steps += 1
        eos_at = self._eos_at()
        record = DiffusionStep(
            step=self.n_steps, block=self.block, block_start=self.start, block_end=self.end,
            canvas=self.canvas.copy(), cell_state=state, proposal=proposal_c, confidence=conf, top2_gap=gap,
            entropy=ent, topk_ids=self._topk(top.indices, cells) if self.record else np.zeros((L, 0), np.int64),
            topk_probs=self._topk(top.values, cells, np.float32) if self.record else np.zeros((L, 0), np.float32),
            rule=rule_prefix + sel.rule, threshold=float(sel.threshold), signal=float(sel.signal), forwards=1,
            cached=cached_cells, eos_at=eos_at, forward_ms=(t1 - t0) * 1000,
            select_ms=(time.perf_counter() - t1) * 1000, all_in=sel.all_in, pinned=self.pinned.copy(),
            intervention=self.intervened.copy(),
        )
        self.intervened[:] = NO_INTERVENTION
        self.n_steps += 1
        self._advance_blocks(eos_at)
        return record

    def _topk(self, values: torch.Tensor, cells: np.ndarray, dtype=np.int64) -> np.ndarray:
        out = np.zeros((self.config.gen_length, values.shape[1]), dtype=dtype)
        out[cells] = values.cpu().numpy()
        return out

    def _adapt_block(self, proposal: np.ndarray, conf: np.ndarray) -> int:
        """End the new block after the most confident delimiter proposed in the window, if one is sure enough."""
        lo, hi = self.start, min(self.config.gen_length, self.start + self._window())
        cand = np.arange(lo, hi)
        ok = np.isin(proposal[cand], self.delimiters) & (conf[cand] >= self.config.delimiter_threshold)
        if not ok.any():
            return min(self.config.gen_length, self.start + self.config.block_size)
        best = cand[ok][np.argmax(conf[cand][ok])]
        return int(best) + 1

    def _window(self) -> int:
        """AdaBlock's look-ahead: a quarter of the canvas, and never less than one default block."""
        return max(self.config.block_size, self.config.gen_length // 4)

    def _eos_at(self) -> int:
        return first_eos(self.canvas, self.eos_ids)

    def _advance_blocks(self, eos_at: int) -> None:
        """Move past every full block; finish at the canvas end, or once the text up to an EOS is complete."""
        L, B = self.config.gen_length, self.config.block_size
        while not np.any(self.canvas[self.start:self.end] < 0):
            self.spans.append((self.start, self.end))
            if eos_at >= 0 and not np.any(self.canvas[: eos_at + 1] < 0):
                self.finish_reason = "eos"
                return
            if self.end >= L:
                self.finish_reason = "length"
                return
            self.block += 1
            if self.upcoming:  # a block laid out before a reopen: its extent is decided already
                (self.start, self.end), self.block_started = self.upcoming.pop(0), False
            else:
                self.start, self.end, self.block_started = self.end, min(L, self.end + B), True
            self.block_steps = 0

    # interventions ---------------------------------------------------------------------
    def pin(self, position: int, token_id: int) -> None:
        """Hold `token_id` at canvas cell `position` from the next step on (before the first step: from step 0).

        The cell counts as committed: no schedule reveals or remasks it, and every later record marks it
        `pinned` until `remask` sends it back. Pinning a pinned cell replaces its token. A pin that would leave
        the model nothing to fill is refused: the run would end with no step to record it."""
        pos, token = self._cell(position), self._pin_token(token_id)
        after = self.canvas.copy()
        after[pos] = token
        # the active block as it will be: the finished block holding the cell reopens
        if not self._work_left(after, *(self._span_of(pos) or (self.start, self.end))):
            raise ConfigError(f"a pin at {pos} would leave the model nothing to fill (the text up to its end would be "
                              "complete), so the run would end without a step to record it: send a cell back to the "
                              "mask first, or pin fewer cells")
        self._reopen(pos)
        self.canvas[pos], self.commit_conf[pos] = token, np.nan
        self.pinned[pos] = True
        self.intervened[pos] = PINNED_BY_USER
        self._advance_blocks(self._eos_at())  # a pin may fill the active block: move on as a step would

    def remask(self, position: int) -> None:
        """Send committed cell `position` back to the mask from the next step on; the schedule fills it again.

        Sending a pinned cell back also takes its pin off (that is how a pin is removed). A finished run carries
        on until the cell is filled again."""
        pos = self._cell(position)
        if self.canvas[pos] < 0:
            raise ConfigError(f"cell {pos} is masked already: only a committed cell can be sent back to the mask")
        last_recorded = int(self.records[-1].canvas[pos]) if self.records else -1
        self._reopen(pos)
        self.canvas[pos], self.commit_conf[pos] = -1, np.nan
        self.pinned[pos] = False
        # a cell pinned and sent back between the same two steps: the records saw neither
        self.intervened[pos] = SENT_BACK_BY_USER if last_recorded >= 0 else NO_INTERVENTION

    def _cell(self, position) -> int:
        L = self.config.gen_length
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise ConfigError(f"a cell position is a whole number, not {type(position).__name__}")
        if not 0 <= position < L:
            raise ConfigError(f"position {position} is off the canvas: its cells are 0 to {L - 1}")
        return int(position)

    def _pin_token(self, token_id) -> int:
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
            raise ConfigError(f"a token id is a whole number, not {type(token_id).__name__}")
        if not 0 <= token_id < self.lm.vocab_size:
            raise ConfigError(f"token id {token_id} is outside the model's vocabulary (0 to {self.lm.vocab_size - 1})")
        if token_id == self.lm.mask_id:
            raise ConfigError("the mask token cannot be pinned: send the cell back to the mask instead")
        if not self.lm.knows(int(token_id)):
            raise ConfigError(f"token id {token_id} is not one {self.lm.model_id} knows (it was trained on a smaller "
                              "vocabulary and would read it as unknown): pin another token")
        return int(token_id)

    def _span_of(self, position: int) -> tuple | None:
        """The finished block holding `position`, or None (the active block, or one not yet reached)."""
        return next(((lo, hi) for lo, hi in self.spans if lo <= position < hi), None)

    def _work_left(self, canvas: np.ndarray, start: int, end: int) -> bool:
        """Whether a run with this canvas and active block [start, end) still needs the model: it walks past full
        blocks (`_advance_blocks`) and stops at the first masked cell, unless the text up to an EOS is complete
        first. Every cell before `start` is committed."""
        masked = np.flatnonzero(canvas[start:] < 0)
        if masked.size == 0:
            return False
        first_masked = start + int(masked[0])
        eos = first_eos(canvas, self.eos_ids)
        return first_masked < end or not 0 <= eos < first_masked

    def _reopen(self, position: int) -> None:
        """Make the finished block holding `position` the active block again; nothing to do for a cell of the
        active block or a later one. The blocks after it keep their extents (`upcoming`), the cache keeps only
        what comes before it, and a finished run is running again."""
        span = self._span_of(position)
        if span is None:
            return
        b = self.spans.index(span)
        scored_active = [] if self.done or self.block_started else [(self.start, self.end)]
        self.upcoming = self.spans[b + 1:] + scored_active + self.upcoming
        self.spans = self.spans[:b]
        (self.start, self.end), self.block = span, b
        self.block_started, self.block_steps, self.finish_reason = False, 0, ""
        keep = self.prompt_ids.shape[0] + self.start
        if self.cache is not None and self.cache_len > keep:
            truncate(self.cache, keep)
            self.cache_len = keep
            self.boundary_logits = {n: v for n, v in self.boundary_logits.items() if n <= keep}

    @property
    def output_ids(self) -> np.ndarray:
        """The canvas up to its first masked cell, cut after the first EOS (as `Trace.output_ids`)."""
        return canvas_output(self.canvas, self._eos_at())

    def trace(self) -> Trace:
        """The run so far: every step produced, the decoder's own wall time, the settings it was given."""
        settings = {**self.settings, "mode": self.mode, "family": self.lm.family.name, "mask_id": self.lm.mask_id}
        return self._trace(f"diffusion:{self.config.schedule}", settings, self.lm.model_id, None, lossless=False)


def diffuse(lm: DiffusionLM, prompt_ids, config: DiffusionConfig, delimiter_ids=(), record=True, *,
            settings: dict | None = None) -> Trace:
    """Run to the end and return the whole trace."""
    dec = DiffusionDecoder(lm, prompt_ids, config, delimiter_ids, record, settings=settings)
    for _ in dec.steps():
        pass
    return dec.trace()
