"""Incremental view models: the UI keeps one per run in its session state and feeds it each step once.

Streaming a run used to re-render the whole run on every step (the text of every token, the strip of every
token, the summary over every step), so a long run slowed down step by step. A live view converts each
arriving record to its view data once (`add`), keeps running sums, and renders a streamed step (`live`) at a
cost that depends on the size of that step, not on how many came before. `full(k)` renders everything for
any recorded step k (scrubbing, the end of a run) and may cost O(steps).

    view = SpecLiveView(backend="triton (cuda)")
    for step in decoder.steps():
        view.add(step, node_labels, bonus_label, pieces, token_labels)
        yield view.live(tree_depth)
    done = view.full(k, tree_depth, speedup=..., finish="eos")
    card = view.node_card(k, node)

Neither view knows a tokenizer: the UI passes every display string in.
"""
from __future__ import annotations

import collections

import numpy as np

from ..trace import (ACCEPTED, PINNED_BY_USER, REJECTED, REMASKED, REVEALED, SENT_BACK_BY_USER, canvas_output,
                     commit_steps, step_committed_tokens)
from .confidence import running_strip_figure, step_confidence_figure
from .lattice import (
    MASKED_CELL_SPAN,
    CommitState,
    canvas_cell_span,
    canvas_spans_html,
    canvas_text_end,
    canvas_text_html,
    diffusion_metrics_html,
    empty_lattice_html,
    lattice_row,
    lattice_svg,
    progress_figure,
    schedule_figure,
    tokens_per_forward_figure,
)
from .node_card import empty_card_html, node_card_html, rejection_html
from .panels import depth_chart, generated_text_html, metrics_html, text_html, token_span
from .tree import BONUS_NODE, empty_figure, empty_tree_html, tree_html

STRIP_WINDOW = 64  # tokens in the streamed running strip (the full strip comes with `full`)
LATTICE_WINDOW = 24  # rows in the streamed lattice (the whole lattice comes with `full`)


def _empty_spec() -> dict:
    return {
        "text": generated_text_html([], []),
        "tree": empty_tree_html("Press Run or Step to draft and verify; the draft tree appears here."),
        "rejection": empty_card_html("The verification of the step shown appears here after a Run or Step."),
        "confidence": empty_figure("Per-position probabilities of the current step", height=220),
        "strip": empty_figure("No tokens yet", height=200),
        "metrics": "",
        "depth": empty_figure("Acceptance by depth appears once something is drafted", height=220),
        "n_steps": 0,
        "k": 0,
    }


class _RunningSums:
    """Per-step quantities summed in step order, exactly as `sum(...)` over the steps adds them."""

    SUMS: tuple = ()  # step attributes summed
    TIMES: tuple = ()  # the two per-step times (ms) whose sum over the steps is the decode time

    def __init__(self):
        self.steps = 0
        self.sums = dict.fromkeys(self.SUMS, 0)
        self.decode_ms = 0

    def add(self, s) -> None:
        self.steps += 1
        for name in self.SUMS:
            self.sums[name] += getattr(s, name)
        a, b = self.TIMES
        self.decode_ms += getattr(s, a) + getattr(s, b)

    def decode_s(self, wall_s: float) -> float:
        return wall_s if wall_s > 0 else self.decode_ms / 1000.0


class SpecSummary(_RunningSums):
    """`trace.summarize` kept up to date one step at a time: `add(step)` costs O(step size), `result(wall_s)`
    O(tree depth), and the result equals `summarize(steps, wall_s)` over the steps added."""

    SUMS = ("target_forwards", "draft_forwards", "n_drafted", "n_accepted", "draft_ms", "verify_ms")
    TIMES = ("draft_ms", "verify_ms")

    def __init__(self):
        super().__init__()
        self.new_tokens = 0
        self.reached = np.zeros(0, dtype=np.int64)  # per depth: nodes verification reached
        self.hit = np.zeros(0, dtype=np.int64)  # … of which accepted
        self.deep_enough = np.zeros(0, dtype=np.int64)  # per depth: steps that drafted this deep
        self.reached_path = np.zeros(0, dtype=np.int64)  # … whose accepted path got there

    def _grow(self, depth: int) -> None:
        if depth > self.reached.shape[0]:
            pad = depth - self.reached.shape[0]
            self.reached, self.hit, self.deep_enough, self.reached_path = (
                np.concatenate([a, np.zeros(pad, dtype=np.int64)])
                for a in (self.reached, self.hit, self.deep_enough, self.reached_path))

    def add(self, s) -> None:
        super().add(s)
        self.new_tokens += int(s.committed_ids.shape[0])
        if s.tree.size <= 1:
            return
        depth = s.tree.depth
        max_depth = int(depth.max())
        self._grow(max_depth)
        status = s.status[1:]
        tested = (status == ACCEPTED) | (status == REJECTED)
        d = depth[1:][tested] - 1
        self.reached += np.bincount(d, minlength=self.reached.shape[0])
        self.hit += np.bincount(d[status[tested] == ACCEPTED], minlength=self.hit.shape[0])
        self.deep_enough[:max_depth] += 1
        self.reached_path[: s.n_accepted] += 1

    def result(self, wall_s: float = 0.0) -> dict:
        sums = self.sums
        tf, drafted, accepted = int(sums["target_forwards"]), int(sums["n_drafted"]), int(sums["n_accepted"])
        decode_s = self.decode_s(wall_s)
        return {
            "new_tokens": self.new_tokens,
            "steps": self.steps,
            "target_forwards": tf,
            "draft_forwards": int(sums["draft_forwards"]),
            "tau": self.new_tokens / tf if tf else 0.0,
            "tau_drafts_only": accepted / tf if tf else 0.0,
            "drafted": drafted,
            "accepted": accepted,
            "acceptance_rate": accepted / drafted if drafted else None,
            "acceptance_by_depth": [float(h / r) if r else None for h, r in zip(self.hit, self.reached)],
            "path_reach_by_depth": [float(h / r) if r else None for h, r in zip(self.reached_path, self.deep_enough)],
            "draft_ms": float(sums["draft_ms"]),
            "verify_ms": float(sums["verify_ms"]),
            "wall_s": decode_s,
            "tok_per_s": self.new_tokens / decode_s if decode_s > 0 else 0.0,
        }


class SpecLiveView:
    """The Speculative tab's view of one run, built up step by step.

    `add(step, node_labels, bonus_label, pieces)` once per arriving `SpecStep`: `node_labels[i]` is the display
    text of tree node i, `bonus_label` that of the bonus token (ignored when the step has none), `pieces` the
    text of the tokens the step committed (one per `step.committed_ids`, as the UI's piece decoder gives them).

    `token_labels` (optional) maps the other token ids the step's cards name (`node_card.card_token_ids`: the
    target's, drafter's and residual's top candidates) to their text; an id missing from it shows as its number.

    `live(...)` renders the latest step; `full(k, ...)` any recorded step, with the whole-run charts. Both
    return a dict with keys text, tree, rejection, confidence, strip, metrics, depth (HTML strings and plotly
    figures), n_steps and k (for the step slider). `node_card(k, node)` is the card of one node of step k.
    """

    def __init__(self, backend: str = "", strip_window: int = STRIP_WINDOW):
        self.backend = backend
        self.strip_window = strip_window
        self.steps: list = []
        self.node_labels: list = []  # per step
        self.bonus_labels: list = []  # per step
        self.token_labels: list = []  # per step: id -> text of the other tokens its cards name
        self.tokens: list = []  # every committed token (trace.CommittedToken)
        self.pieces: list = []  # the display text of every committed token
        self.spans: list = []  # the text span of every committed token, not outlined
        self.outlined: list = []  # per step: its tokens' spans, outlined (the current step)
        self.token_start: list = []  # per step: index of its first token
        self.lossless = True
        self.edited = False  # a step of this run was edited by its user (a fork: trace.Intervention)
        self._summary = SpecSummary()

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step, node_labels: list, bonus_label: str, pieces: list, token_labels: dict | None = None) -> None:
        tokens = step_committed_tokens(step)
        if len(pieces) != len(tokens):
            raise ValueError(f"step {step.step}: {len(pieces)} text pieces for {len(tokens)} committed tokens")
        if len(node_labels) != step.tree.size:
            raise ValueError(f"step {step.step}: {len(node_labels)} node labels for {step.tree.size} nodes")
        self.token_start.append(len(self.tokens))
        self.steps.append(step)
        self.node_labels.append(list(node_labels))
        self.bonus_labels.append(bonus_label)
        self.token_labels.append(dict(token_labels or {}))
        self.tokens += tokens
        self.pieces += pieces
        edited = step.intervention is not None
        self.edited = self.edited or edited
        self.spans += [token_span(p, t, edited=edited) for p, t in zip(pieces, tokens)]
        self.outlined.append([token_span(p, t, outlined=True, edited=edited) for p, t in zip(pieces, tokens)])
        self.lossless = self.lossless and bool(step.lossless)
        self._summary.add(step)

    def summary(self, wall_s: float = 0.0) -> dict:
        """`trace.summarize(steps, wall_s)` of the steps added, from running sums."""
        return self._summary.result(wall_s)

    def _k(self, k) -> int:
        n = len(self.steps)
        return n - 1 if k is None else max(0, min(int(k), n - 1))

    def text_html(self, k: int | None = None) -> str:
        """Every generated token's span, step k's outlined: two joins of prebuilt strings."""
        k = self._k(k)
        a = self.token_start[k]
        b = a + len(self.outlined[k])
        return text_html(self.spans[:a] + self.outlined[k] + self.spans[b:], self.edited)

    def _step_views(self, k: int, tree_depth, speedup, finish: str, wall_s: float) -> dict:
        step, labels = self.steps[k], self.node_labels[k]
        summary = self.summary(wall_s)
        return {
            "text": self.text_html(k),
            "tree": tree_html(step, labels, self.bonus_labels[k], max_depth=tree_depth,
                              token_labels=self.token_labels[k]),
            "rejection": rejection_html(step, labels, self.bonus_labels[k], self.token_labels[k]),
            "confidence": step_confidence_figure(step, labels),
            "metrics": metrics_html(summary, speedup, self.backend, self.lossless, finish),
            "depth": depth_chart(summary),
            "n_steps": len(self.steps),
            "k": k,
        }

    def node_card(self, k, node) -> str:
        """The card of node `node` (an index, or "bonus") of recorded step `k`. Both come from a click in the
        browser, so anything else (a step or node that does not exist, junk) gets a message, never an error."""
        try:
            k = int(k)
            node = node if node == BONUS_NODE else int(node)
        except (TypeError, ValueError, OverflowError):
            return empty_card_html("That is not a node of a recorded step.")
        if not 0 <= k < len(self.steps):
            return empty_card_html(f"Step {k} is not recorded in this run; click a node of the tree shown.")
        step = self.steps[k]
        if node != BONUS_NODE and not 0 <= node < step.tree.size:
            return empty_card_html(f"Step {k} has no node {node}.")
        return node_card_html(step, node, self.node_labels[k], self.bonus_labels[k], self.token_labels[k])

    def live(self, tree_depth: int | None = None, speedup: dict | None = None, finish: str = "",
             wall_s: float = 0.0) -> dict:
        """The latest step, for streaming: O(size of that step) plus joining the prebuilt token spans. The
        strip shows the last `strip_window` tokens (the whole generation is in `full`)."""
        if not self.steps:
            return _empty_spec()
        k = len(self.steps) - 1
        out = self._step_views(k, tree_depth, speedup, finish, wall_s)
        first = max(0, len(self.tokens) - self.strip_window)
        window = len(self.tokens) - first
        out["strip"] = running_strip_figure(
            self.tokens[first:], self.pieces[first:], current_step=k, first=first,
            title=f"Last {window} generated tokens: target probability of each committed token")
        return out

    def full(self, k: int | None = None, tree_depth: int | None = None, speedup: dict | None = None,
             finish: str = "", wall_s: float = 0.0) -> dict:
        """Everything for recorded step k (default: the latest), the strip over the whole generation."""
        if not self.steps:
            return _empty_spec()
        k = self._k(k)
        out = self._step_views(k, tree_depth, speedup, finish, wall_s)
        out["strip"] = running_strip_figure(self.tokens, self.pieces, current_step=k)
        return out


class DiffusionSummary(_RunningSums):
    """`trace.summarize_diffusion` kept up to date one step at a time (O(canvas) a step)."""

    SUMS = ("forwards", "n_revealed", "n_remasked", "n_sent_back", "forward_ms", "select_ms")
    TIMES = ("forward_ms", "select_ms")

    def __init__(self):
        super().__init__()
        self.blocks: set = set()
        self.length = 0
        self.new_tokens = 0
        self.pinned = 0

    def add(self, s) -> None:
        super().add(s)
        self.pinned = s.n_pinned
        self.blocks.add(s.block)
        self.length = self.length or s.length
        self.new_tokens = int(canvas_output(s.canvas, s.eos_at).shape[0])

    def result(self, wall_s: float = 0.0) -> dict:
        sums, n = self.sums, self.new_tokens
        fw, cells = int(sums["forwards"]), int(sums["n_revealed"])
        decode_s = self.decode_s(wall_s)
        return {
            "new_tokens": n,
            "steps": self.steps,
            "forwards": fw,
            "target_forwards": fw,
            "tokens_per_forward": n / fw if fw else 0.0,
            "cells_per_forward": cells / fw if fw else 0.0,
            "cells_revealed": cells,
            "remasked": int(sums["n_remasked"]),
            "pinned": self.pinned,
            "sent_back": int(sums["n_sent_back"]),
            "blocks": len(self.blocks),
            "canvas_length": self.length,
            "forward_ms": float(sums["forward_ms"]),
            "select_ms": float(sums["select_ms"]),
            "wall_s": decode_s,
            "tok_per_s": n / decode_s if decode_s > 0 else 0.0,
        }


def _empty_lattice() -> dict:
    return {
        "text": canvas_spans_html(None),
        "lattice": empty_lattice_html("Press Run or Step to fill the canvas: the lattice grows one row per step"),
        "schedule": empty_figure("What the schedule compared, per step", height=220),
        "tpf": empty_figure("Tokens per forward", height=220),
        "progress": empty_figure("Steps against length", height=220),
        "metrics": "",
        "n_steps": 0,
        "k": 0,
    }


class LatticeLiveView:
    """The Diffusion tab's view of one diffusion or Jacobi run, built up step by step.

    `add(step, canvas_labels, proposal_labels, pieces=None)` once per arriving `DiffusionStep`:
    `canvas_labels[j]` / `proposal_labels[j]` are the display text of `step.canvas[j]` / `step.proposal[j]`
    (any string where the id is -1), `pieces[j]` the text of `step.canvas[j]` in the generated-text panel
    (default: the canvas labels).

    `live(...)` renders the latest step with a lattice of the last `window` rows; `full(k, ...)` any recorded
    step with the whole lattice and the whole-run charts. Both return a dict with keys text, lattice (HTML with an
    SVG grid, see `lattice_svg`), metrics, n_steps, k; `full` adds schedule, tpf (tokens per forward) and progress.
    """

    def __init__(self, label: str = "", backend: str = "", window: int = LATTICE_WINDOW):
        self.label = label
        self.backend = backend
        self.window = window
        self.steps: list = []
        self.canvas_labels: list = []  # per step
        self.proposal_labels: list = []  # per step
        self.pieces: list = []  # per step
        self._summary = DiffusionSummary()
        self._head: CommitState | None = None  # after the last step
        self._before: collections.deque = collections.deque()  # CommitState before each windowed row
        self._rows: dict = {}  # (step, signal) -> (z row, customdata row) of the windowed rows
        self._commit = np.zeros(0, dtype=np.int64)  # the step that committed each cell (-1: masked)
        self._spans: list = []  # the text span of every cell, as of the last step
        self._now: np.ndarray = np.zeros(0, dtype=np.int64)  # cells revealed by the last step

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step, canvas_labels: list, proposal_labels: list, pieces: list | None = None) -> None:
        length = step.length
        if len(canvas_labels) != length or len(proposal_labels) != length:
            raise ValueError(f"step {step.step}: labels for {len(canvas_labels)} / {len(proposal_labels)} cells "
                             f"on a canvas of {length}")
        pieces = canvas_labels if pieces is None else pieces
        if self._head is None:
            self._head = CommitState(length)
            self._commit = np.full(length, -1, dtype=np.int64)
            self._spans = [MASKED_CELL_SPAN] * length
        self._before.append(self._head.copy())
        self._head.advance(step)
        while len(self._before) > self.window:
            gone = self._before.popleft().steps
            for key in [key for key in self._rows if key[0] == gone]:
                del self._rows[key]
        self.steps.append(step)
        self.canvas_labels.append(canvas_labels)
        self.proposal_labels.append(proposal_labels)
        self.pieces.append(pieces)
        self._summary.add(step)
        # the text: cells committed by the previous step turn from "now" to "earlier"; this step's are "now"
        revealed = np.flatnonzero(step.cell_state == REVEALED)
        remasked = np.flatnonzero(step.cell_state == REMASKED)
        # the user's pins and send-backs came before the step's own commits
        pinned_now = np.flatnonzero(step.intervention == PINNED_BY_USER)
        sent_back = np.flatnonzero(step.intervention == SENT_BACK_BY_USER)
        self._commit[sent_back] = -1
        self._commit[pinned_now] = step.step
        self._commit[revealed] = step.step
        self._commit[remasked] = -1
        for j in self._now:
            if self._commit[j] >= 0 and self._commit[j] != step.step:
                self._spans[j] = canvas_cell_span(int(j), int(step.canvas[j]), str(pieces[j]), int(self._commit[j]),
                                                  False, bool(step.pinned[j]))
        for j in (*remasked, *sent_back):
            self._spans[j] = MASKED_CELL_SPAN
        for j in pinned_now:
            self._spans[j] = canvas_cell_span(int(j), int(step.canvas[j]), str(pieces[j]), step.step, True, True)
        for j in revealed:
            self._spans[j] = canvas_cell_span(int(j), int(step.canvas[j]), str(pieces[j]), step.step, True)
        self._now = revealed

    def summary(self, wall_s: float = 0.0) -> dict:
        """`trace.summarize_diffusion(steps, wall_s)` of the steps added, from running sums."""
        return self._summary.result(wall_s)

    def _k(self, k) -> int:
        n = len(self.steps)
        return n - 1 if k is None else max(0, min(int(k), n - 1))

    def _title(self, k: int, extra: str = "") -> str:
        return f"{self.label + ' · ' if self.label else ''}step {k} of {len(self.steps) - 1}{extra}"

    def _metrics(self, finish: str, wall_s: float, speedup: dict | None = None, ar_pending: bool = False) -> str:
        return diffusion_metrics_html(self.summary(wall_s), finish, self.backend, speedup, ar_pending)

    def live(self, signal: str = "confidence", overlays=("commit_order", "blocks", "threshold"), finish: str = "",
             wall_s: float = 0.0, speedup: dict | None = None, ar_pending: bool = False) -> dict:
        """The latest step, for streaming: the text (O(canvas)), a lattice of the last `window` rows (each row
        built once per signal and kept while it is in the window) and the metrics."""
        if not self.steps:
            return _empty_lattice()
        k = len(self.steps) - 1
        rows = self.steps[-len(self._before):]
        built = []
        for s, before in zip(rows, self._before):
            at = before.steps  # the row's index in the run
            if (at, signal) not in self._rows:
                self._rows[at, signal] = lattice_row(s, before, self.canvas_labels[at], self.proposal_labels[at], signal)
            built.append(self._rows[at, signal])
        cells = (np.stack([z for z, _ in built]), np.stack([d for _, d in built]))
        shown = f" · the last {len(rows)} steps of {len(self.steps)}" if len(rows) < len(self.steps) else ""
        lattice = lattice_svg(rows, None, None, current_step=k, signal=signal, overlays=overlays,
                              title=self._title(k, shown), start=self._before[0], cells=cells)
        end = canvas_text_end(self.steps[-1])
        return {"text": canvas_spans_html(self._spans[:end]), "lattice": lattice,
                "metrics": self._metrics(finish, wall_s, speedup, ar_pending), "n_steps": len(self.steps), "k": k}

    def text_html(self, k: int | None = None) -> str:
        """The canvas text after step k (O(k × canvas) unless k is the latest step)."""
        k = self._k(k)
        if k == len(self.steps) - 1:
            return canvas_spans_html(self._spans[: canvas_text_end(self.steps[k])])
        return canvas_text_html(self.steps[k], commit_steps(self.steps, k), self.pieces[k])

    def full(self, k: int | None = None, signal: str = "confidence",
             overlays=("commit_order", "blocks", "threshold"), finish: str = "", wall_s: float = 0.0,
             speedup: dict | None = None, ar_pending: bool = False) -> dict:
        """Everything for recorded step k (default: the latest): the whole lattice with row k outlined, the
        schedule, tokens-per-forward and progress charts, the text after step k and the run's metrics."""
        if not self.steps:
            return _empty_lattice()
        k = self._k(k)
        steps = self.steps
        lattice = lattice_svg(steps, self.canvas_labels, self.proposal_labels, current_step=k, signal=signal,
                              overlays=overlays, title=self._title(k))
        return {"text": self.text_html(k), "lattice": lattice, "schedule": schedule_figure(steps),
                "tpf": tokens_per_forward_figure(steps), "progress": progress_figure({self.label or "this run": steps}),
                "metrics": self._metrics(finish, wall_s, speedup, ar_pending), "n_steps": len(steps), "k": k}
