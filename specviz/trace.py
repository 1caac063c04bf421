"""The data contract between decoding and everything that shows it.

A speculative strategy yields one `SpecStep` per target forward; a diffusion or
Jacobi strategy yields one `DiffusionStep` per denoising step. Every view, the CLI's JSON
and the metrics are built from these records alone, so a run can be replayed,
scrubbed and exported without calling the model again.

Records hold host-side numpy arrays and token ids only: no text, no colours and
no torch tensors, so this module imports neither torch nor a tokenizer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

import numpy as np

# node status inside a draft tree
ROOT, ACCEPTED, REJECTED, UNREACHED = 0, 1, 2, 3
STATUS_NAMES = ("root", "accepted", "rejected", "never-reached")

# how the one token the target adds at the end of a step came about
BONUS = "bonus"  # every draft on the path was accepted (or nothing was drafted)
CORRECTION = "correction"  # drawn after a rejection (residual sample or target argmax)
NO_BONUS = "none"  # the accepted path ended at end of sequence, so nothing was added after it (bonus_token -1)

# what a user did to a step's draft before the target verified it again (`Intervention.kind`)
REPLACE = "replace"  # a drafted token was swapped for another
CUT = "cut"  # a node and everything drafted below it were taken out: the user forced its rejection
INTERVENTION_KINDS = (REPLACE, CUT)
USER_SOURCE = "you"  # the drafter name of a node whose token a user put in


def ancestor_matrix(parent) -> np.ndarray:
    """[N, N] bool: anc[i, j] is True when j is i or an ancestor of i. Nodes with a negative parent are roots.

    Pointer jumping: after round k every row holds the ancestors less than 2^k away and `jump` the
    2^k-th ancestor (or the root), so a row gathers its jump's row to double its reach. O(log depth)
    numpy operations on the [N, N] matrix; no loop over nodes."""
    parent = np.asarray(parent, dtype=np.int64).reshape(-1)
    n = parent.shape[0]
    nodes = np.arange(n)
    jump = np.where(parent < 0, nodes, parent)
    anc = np.eye(n, dtype=bool)
    anc[nodes, jump] = True
    while True:
        nxt = jump[jump]
        if np.array_equal(nxt, jump):  # every jump is a root: every row is complete
            return anc
        anc |= anc[jump]
        jump = nxt


def tree_depths(parent: np.ndarray) -> np.ndarray:
    """Depth of each node of a tree (roots, the nodes with a negative parent, at 0).

    Pointer jumping: `jump` is each node's 2^k-th ancestor (or its root) and `depth` the distance
    to it; O(log depth) vector operations, no loop over nodes."""
    parent = np.asarray(parent, dtype=np.int64).reshape(-1)
    jump = np.where(parent < 0, np.arange(parent.shape[0]), parent)
    depth = (parent >= 0).astype(np.int64)
    while True:
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            return depth
        depth = depth + depth[jump]
        jump = nxt


def is_chain(parent: np.ndarray) -> bool:
    """True when every node's parent is the node before it (a chain: its ancestor mask is the causal mask)."""
    return bool(np.all(np.asarray(parent)[1:] == np.arange(len(parent) - 1)))


def first_eos(ids: np.ndarray, eos_ids) -> int:
    """Index of the first end-of-sequence token in `ids`, -1 if none."""
    eos = np.asarray(sorted({int(e) for e in eos_ids}), dtype=np.int64)
    if eos.size == 0 or len(ids) == 0:
        return -1
    hit = np.flatnonzero(np.isin(np.asarray(ids), eos))
    return int(hit[0]) if hit.size else -1


def canvas_output(canvas: np.ndarray, eos_at: int) -> np.ndarray:
    """The generated text of a canvas: up to its first masked cell, cut after the first EOS."""
    masked = np.flatnonzero(canvas < 0)
    end = int(masked[0]) if masked.size else canvas.shape[0]
    if 0 <= eos_at < end:
        end = eos_at + 1
    return canvas[:end].astype(np.int64)


@dataclass(frozen=True)
class DraftTree:
    """A draft tree in topological order. Node 0 is the root: the last committed
    token, which the target has not yet seen. `parent[i] < i` for every i > 0."""

    token_ids: np.ndarray  # [N] int64
    parent: np.ndarray  # [N] int64, parent[0] == -1
    draft_probs: np.ndarray  # [N] float32, draft probability of each node's token (root: 1)
    source: tuple  # [N] str, which drafter proposed each node ("root" for node 0)

    @property
    def size(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def depth(self) -> np.ndarray:
        return tree_depths(self.parent)

    def is_chain(self) -> bool:
        return is_chain(self.parent)


@dataclass(frozen=True)
class Intervention:
    """A user's edit of a recorded step's draft, verified again by the target in a fork of the run.

    The edited step's record holds the tree as verified after the edit, so `node` indexes that tree."""

    kind: str  # REPLACE or CUT
    node: int  # REPLACE: the edited node; CUT: the node the cut subtree hung from (0: the root)
    token: int  # REPLACE: the token put in; CUT: the cut node's token
    was: int = -1  # REPLACE: the drafted token it replaced
    removed: int = 0  # CUT: the nodes taken out (the node and everything drafted below it)
    accepted_before: int = -1  # how many drafts the step accepted in the run it was forked from

    def to_dict(self) -> dict:
        return {"kind": self.kind, "node": self.node, "token": self.token, "was": self.was,
                "removed": self.removed, "accepted_before": self.accepted_before}


@dataclass(frozen=True)
class SpecStep:
    """One propose → score → select → commit iteration of speculative decoding."""

    step: int
    root_pos: int  # sequence position of the root token
    tree: DraftTree
    target_probs: np.ndarray  # [N] target probability of each node's token given its ancestors (root: 1)
    # [N] the chance verification gave the node when it was tested: given its parent was accepted
    # and its earlier siblings rejected (root: 1; NaN: never tested, e.g. after an accepted sibling)
    accept_probs: np.ndarray
    status: np.ndarray  # [N] int8, see STATUS_NAMES
    accepted_path: np.ndarray  # [A] node indices, root excluded, in depth order
    bonus_token: int
    bonus_prob: float  # target probability of the bonus token (of the processed distribution)
    bonus_kind: str  # BONUS or CORRECTION
    committed_ids: np.ndarray  # [C] tokens appended this step (accepted path + bonus, cut at EOS / limit)
    target_topk_ids: np.ndarray  # [N, K] target's top-k next tokens after each node
    target_topk_probs: np.ndarray  # [N, K]
    draft_ms: float
    verify_ms: float
    target_forwards: int  # target forwards this step (always 1 for speculative steps)
    draft_forwards: int  # drafter model forwards this step (0 for model-free drafters)
    lossless: bool = True
    # [N] the target's uncertainty after each node (from the logit-statistics kernel, at the run's
    # temperature, before top-p): entropy in nats and the gap between its two most likely tokens.
    # Empty when the run did not record.
    target_entropy: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    target_top2_gap: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    # What the rejection-sampling test saw, recorded under sampling (empty or K = 0 otherwise), so a replayed
    # trace can show why each node was kept or not without the model:
    # [N] the uniform each tested node's test drew (accepted iff u < accept_probs; NaN: not tested)
    uniforms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    # [N, K] the top of the distribution node i was drawn from (K = 0 for point-mass drafters: n-gram, retrieval)
    draft_topk_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    draft_topk_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    # [N, K] the top of the residual left at node i's parent after node i was rejected: what the next sibling
    # was tested against, or what the correction was sampled from when no sibling was left
    residual_topk_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    residual_topk_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    # set on the first step of a fork: what the user changed in this step's draft before it was verified again
    intervention: Intervention | None = None

    @property
    def n_drafted(self) -> int:
        return self.tree.size - 1

    @property
    def n_accepted(self) -> int:
        return int(self.accepted_path.shape[0])


_ARRAY_DTYPES = {
    "token_ids": np.int64,
    "parent": np.int64,
    "draft_probs": np.float32,
    "target_probs": np.float32,
    "accept_probs": np.float32,
    "status": np.int8,
    "accepted_path": np.int64,
    "committed_ids": np.int64,
    "target_topk_ids": np.int64,
    "target_topk_probs": np.float32,
    "target_entropy": np.float32,
    "target_top2_gap": np.float32,
    "uniforms": np.float32,
    "draft_topk_ids": np.int64,
    "draft_topk_probs": np.float32,
    "residual_topk_ids": np.int64,
    "residual_topk_probs": np.float32,
}


# cell state on a diffusion canvas after a step
MASKED, REVEALED, KEPT, REMASKED = 0, 1, 2, 3
CELL_STATE_NAMES = ("masked", "revealed-now", "kept", "remasked")

# what the user did to a cell between two diffusion steps (`DiffusionStep.intervention`)
NO_INTERVENTION, PINNED_BY_USER, SENT_BACK_BY_USER = 0, 1, 2
INTERVENTION_NAMES = ("none", "pinned by you", "sent back to the mask by you")


@dataclass(frozen=True)
class DiffusionStep:
    """One propose → score → select → commit iteration on a canvas of L cells.

    propose/score: one forward gives every scored cell a proposal and its confidence;
    select: the schedule picks cells to reveal (and may remask earlier ones);
    commit: revealed cells are written to the canvas (and a finished block's KV is cached).
    Jacobi decoding fills the same record: its unconverged guesses are masked cells
    whose proposal is the current guess, and converged tokens are revealed.
    """

    step: int
    block: int  # index of the active block
    block_start: int  # the active block is canvas[block_start:block_end]
    block_end: int
    canvas: np.ndarray  # [L] int64 token ids after this step; -1 = masked
    cell_state: np.ndarray  # [L] int8, see CELL_STATE_NAMES
    proposal: np.ndarray  # [L] int64 the model's token for each cell this step (-1: not scored)
    confidence: np.ndarray  # [L] float32 probability of the proposal (NaN: not scored)
    top2_gap: np.ndarray  # [L] float32 p1 - p2 of the cell's distribution (NaN: not scored)
    entropy: np.ndarray  # [L] float32 nats (NaN: not scored)
    topk_ids: np.ndarray  # [L, K] the cell's top-k candidates (K = 0 when not recorded)
    topk_probs: np.ndarray  # [L, K]
    rule: str  # what the schedule did, in words ("threshold 0.90: 5 cells", "prophet all-in", …)
    threshold: float  # the threshold in force this step (NaN when the schedule has none)
    signal: float  # the value the schedule compared to it (NaN when none), e.g. Prophet's top-2 gap
    forwards: int  # model forwards this step
    cached: int  # canvas cells before the active block whose KV came from the cache (0: all recomputed)
    eos_at: int  # canvas index of the first committed end-of-sequence token, -1 if none
    forward_ms: float
    select_ms: float
    lossless: bool = False  # True only for greedy Jacobi decoding (tested against plain greedy)
    all_in: bool = False  # the schedule revealed every scored cell at once (Prophet's early commit)
    # [L] bool: cells a user's pin holds after this step. A pinned cell keeps its token in every later step until
    # the user sends it back to the mask; no schedule reveals or remasks it.
    pinned: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # [L] int8: what the user did to each cell after the previous step, see INTERVENTION_NAMES. It took effect
    # before this step's forward, so `cell_state` compares this step's canvas with the canvas as the user left
    # it: a cell pinned now is KEPT, a cell sent back now is MASKED (or REVEALED, when the schedule refilled it).
    intervention: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))

    def __post_init__(self):
        # records without interventions (Jacobi's, traces from before pins) hold none: [L] arrays all the same,
        # so that readers index them without asking
        for name, dtype in (("pinned", bool), ("intervention", np.int8)):
            if getattr(self, name).shape[0] == 0:
                object.__setattr__(self, name, np.zeros(self.length, dtype))

    @property
    def length(self) -> int:
        return int(self.canvas.shape[0])

    @property
    def n_pinned(self) -> int:
        return int(np.sum(self.pinned))

    @property
    def n_sent_back(self) -> int:
        """Cells the user sent back to the mask just before this step."""
        return int(np.sum(self.intervention == SENT_BACK_BY_USER))

    @property
    def n_revealed(self) -> int:
        return int(np.sum(self.cell_state == REVEALED))

    @property
    def n_remasked(self) -> int:
        return int(np.sum(self.cell_state == REMASKED))

    @property
    def n_masked(self) -> int:
        return int(np.sum(self.canvas < 0))


_DIFFUSION_DTYPES = {
    "canvas": np.int64,
    "cell_state": np.int8,
    "proposal": np.int64,
    "confidence": np.float32,
    "top2_gap": np.float32,
    "entropy": np.float32,
    "topk_ids": np.int64,
    "topk_probs": np.float32,
    "pinned": bool,
    "intervention": np.int8,
}
# written to a trace file only by steps that have them (as 0/1 and codes): a run nobody touched reads as before
_USER_FIELDS = ("pinned", "intervention")


def is_diffusion(steps: list) -> bool:
    return bool(steps) and isinstance(steps[0], DiffusionStep)


def diffusion_output(steps: list) -> np.ndarray:
    """The generated text so far: the canvas up to its first masked cell, cut after the first EOS."""
    if not steps:
        return np.zeros(0, dtype=np.int64)
    return canvas_output(steps[-1].canvas, steps[-1].eos_at)


def commit_steps(steps: list, upto: int | None = None) -> np.ndarray:
    """[L] the step at which each cell was last revealed, by step `upto` (default: the last; -1: still
    masked): the commit order."""
    if not steps:
        return np.zeros(0, dtype=np.int64)
    order = np.full(steps[0].length, -1, dtype=np.int64)
    for s in steps[: None if upto is None else upto + 1]:
        # the user's pins and send-backs come first (they precede the step's forward); a pin commits its cell
        order[s.intervention == SENT_BACK_BY_USER] = -1
        order[s.intervention == PINNED_BY_USER] = s.step
        order[s.cell_state == REVEALED] = s.step
        order[s.cell_state == REMASKED] = -1
    return order


def commit_numbers(steps: list, start: int = 0) -> np.ndarray:
    """[S, L] running commit number of each cell on the row where it was revealed (0 elsewhere).

    Numbers run 1, 2, 3 … over the whole run, in step order and, within a step, left to right;
    a cell that is remasked and revealed again gets a new number. `start`: commits before `steps[0]`
    (when the steps are a trailing window of a run)."""
    order = np.zeros((len(steps), steps[0].length if steps else 0), dtype=np.int64)
    n = start
    for i, s in enumerate(steps):
        for j in np.flatnonzero(s.cell_state == REVEALED):
            n += 1
            order[i, j] = n
    return order


@dataclass(frozen=True)
class UserAction:
    """One thing the user did to the canvas, as the records show it."""

    step: int  # the first step that saw it (it took effect before that step's forward)
    kind: int  # PINNED_BY_USER or SENT_BACK_BY_USER
    position: int
    token_id: int  # the pinned token (-1: sent back to the mask)


def user_actions(steps: list, position: int | None = None, upto: int | None = None) -> list:
    """The user's pins and send-backs in step order (of one cell when `position` is given, up to step `upto`)."""
    out = []
    for s in steps[: None if upto is None else upto + 1]:
        cells = np.flatnonzero(s.intervention) if position is None else \
            [position] if 0 <= position < s.length and s.intervention[position] else []
        for j in cells:
            kind = int(s.intervention[j])
            out.append(UserAction(s.step, kind, int(j), int(s.canvas[j]) if kind == PINNED_BY_USER else -1))
    return out


def summarize_diffusion(steps: list, wall_s: float = 0.0) -> dict:
    """tokens_per_forward: generated tokens (to the first EOS) per model forward, the diffusion analogue of τ;
    cells_per_forward counts every canvas cell filled, EOS padding included; pinned and sent_back count the
    user's interventions (cells a pin holds at the end, and cells sent back to the mask over the run)."""
    forwards = int(sum(s.forwards for s in steps))
    out = diffusion_output(steps)
    cells = int(sum(s.n_revealed for s in steps))
    remasked = int(sum(s.n_remasked for s in steps))
    decode_s = wall_s if wall_s > 0 else sum(s.forward_ms + s.select_ms for s in steps) / 1000.0
    blocks = len({s.block for s in steps})
    return {
        "new_tokens": int(out.shape[0]),
        "steps": len(steps),
        "forwards": forwards,
        "target_forwards": forwards,
        "tokens_per_forward": out.shape[0] / forwards if forwards else 0.0,
        "cells_per_forward": cells / forwards if forwards else 0.0,
        "cells_revealed": cells,
        "remasked": remasked,
        "pinned": steps[-1].n_pinned if steps else 0,
        "sent_back": int(sum(s.n_sent_back for s in steps)),
        "blocks": blocks,
        "canvas_length": steps[0].length if steps else 0,
        "forward_ms": float(sum(s.forward_ms for s in steps)),
        "select_ms": float(sum(s.select_ms for s in steps)),
        "wall_s": decode_s,
        "tok_per_s": out.shape[0] / decode_s if decode_s > 0 else 0.0,
    }


@dataclass
class Trace:
    """A whole run: what was asked, every step record, and how long it took."""

    method: str
    settings: dict  # the run's settings as JSON (RunSettings / LatticeSettings.to_dict()): rerunning them reproduces it
    target_id: str
    draft_id: str | None
    prompt_ids: np.ndarray
    steps: list = field(default_factory=list)
    wall_s: float = 0.0  # decode wall time, prefill included
    prefill_ms: float = 0.0
    finish_reason: str = ""  # "eos", "length" or "" while running
    backend: str = "reference (cpu)"  # which kernels ran: "triton (cuda)" or "reference (<device>)"
    lossless: bool = True

    @property
    def kind(self) -> str:
        return "diffusion" if is_diffusion(self.steps) else "speculative"

    @property
    def output_ids(self) -> np.ndarray:
        if not self.steps:
            return np.zeros(0, dtype=np.int64)
        if is_diffusion(self.steps):
            return diffusion_output(self.steps)
        return np.concatenate([s.committed_ids for s in self.steps]).astype(np.int64)

    def summary(self) -> dict:
        if is_diffusion(self.steps):
            return summarize_diffusion(self.steps, self.wall_s)
        return summarize(self.steps, self.wall_s)

    # JSON round trip -------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "settings": self.settings,
            "target_id": self.target_id,
            "draft_id": self.draft_id,
            "prompt_ids": self.prompt_ids.tolist(),
            "steps": [_step_to_dict(s) for s in self.steps],
            "wall_s": self.wall_s,
            "prefill_ms": self.prefill_ms,
            "finish_reason": self.finish_reason,
            "backend": self.backend,
            "lossless": self.lossless,
            "summary": self.summary(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "Trace":
        """A trace from its JSON form, checked: every field's type, length and range, then the contract
        (`check_invariants`). Anything else raises `TraceError` naming the problem, so a file from
        elsewhere either replays or is refused with a message; it never reaches the views half-valid."""
        if not isinstance(d, dict):
            raise TraceError(f"a trace is a JSON object, not {_kind(d)}")
        if "settings" not in d and "config" in d:  # traces before the rename
            d = {**d, "settings": d["config"]}
        steps = _field(d, "steps", list, "the trace")
        if len(steps) > MAX_TRACE_STEPS:
            raise TraceError(f"the trace has {len(steps):,} steps; at most {MAX_TRACE_STEPS:,} are read")
        trace = cls(
            method=_field(d, "method", str, "the trace"),
            settings=_field(d, "settings", dict, "the trace"),
            target_id=_field(d, "target_id", str, "the trace"),
            draft_id=_field(d, "draft_id", (str, type(None)), "the trace"),
            prompt_ids=_ids(_field(d, "prompt_ids", list, "the trace"), "prompt_ids", "the trace", low=0),
            steps=[_step_from_dict(s, k) for k, s in enumerate(steps)],
            wall_s=_number(d, "wall_s", "the trace", low=0.0),
            prefill_ms=_number(d, "prefill_ms", "the trace", low=0.0),
            finish_reason=_field(d, "finish_reason", str, "the trace"),
            backend=_field(d, "backend", str, "the trace"),
            lossless=_field(d, "lossless", bool, "the trace"),
        )
        if trace.prompt_ids.shape[0] == 0:
            raise TraceError("the trace: prompt_ids is empty")
        kinds = {type(s) for s in trace.steps}
        if len(kinds) > 1:
            raise TraceError("the trace mixes speculative and diffusion steps")
        try:
            if trace.steps:
                check_invariants(trace)
        except (AssertionError, IndexError, ValueError) as err:
            raise TraceError(f"the trace breaks the record contract: {err or type(err).__name__}") from None
        return trace

    @classmethod
    def from_json(cls, text) -> "Trace":
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise TraceError("a trace file is UTF-8 JSON; this file is not text") from None
        if not isinstance(text, str):
            raise TraceError(f"a trace is JSON text, not {_kind(text)}")
        if len(text) > MAX_TRACE_CHARS:
            raise TraceError(f"the trace is {len(text):,} characters; at most {MAX_TRACE_CHARS:,} are read")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise TraceError(f"the file is not valid JSON ({getattr(err, 'msg', 'nested too deep')}"
                             f"{f' at line {err.lineno}' if isinstance(err, json.JSONDecodeError) else ''})") from None
        return cls.from_dict(data)


def _step_to_dict(s) -> dict:
    if isinstance(s, DiffusionStep):
        out = {"kind": "diffusion"}
        for f in fields(s):
            v = getattr(s, f.name)
            if f.name in _USER_FIELDS:
                if v.any():
                    out[f.name] = v.astype(np.int64).tolist()
                continue
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out
    out = {}
    for f in fields(s):
        v = getattr(s, f.name)
        if f.name == "tree":
            v = {
                "token_ids": v.token_ids.tolist(),
                "parent": v.parent.tolist(),
                "draft_probs": v.draft_probs.tolist(),
                "source": list(v.source),
            }
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, Intervention):
            v = v.to_dict()
        out[f.name] = v
    return out


class TraceError(ValueError):
    """A trace file that cannot be replayed; the message says which field and why."""


MAX_TRACE_CHARS = 64_000_000  # JSON characters read from one trace file
MAX_TRACE_STEPS = 100_000
MAX_NODES = 4096  # nodes of one draft tree, cells of one canvas
MAX_TOPK = 64
MAX_TOKEN_ID = 1 << 31


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _field(d: dict, key: str, types, where: str):
    if key not in d:
        raise TraceError(f"{where}: the field {key!r} is missing")
    v = d[key]
    # JSON true/false are Python bools, which are ints: a count or an id is never a bool
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in allowed):
        names = {list: "a list", dict: "an object", str: "text", bool: "true or false", int: "a whole number",
                 type(None): "null"}
        want = " or ".join(names.get(t, t.__name__) for t in allowed)
        raise TraceError(f"{where}: {key} must be {want}, not {_kind(v)}")
    return v


def _number(d: dict, key: str, where: str, low: float | None = None, nan: bool = False) -> float:
    v = d.get(key, float("nan") if nan else None)
    if v is None and nan:
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TraceError(f"{where}: {key} must be a number, not {_kind(v)}" if key in d else
                         f"{where}: the field {key!r} is missing")
    v = float(v)
    if v != v:
        if nan:
            return v
        raise TraceError(f"{where}: {key} is NaN")
    if not np.isfinite(v) or (low is not None and v < low):
        raise TraceError(f"{where}: {key}={v} is out of range")
    return v


def _integer(d: dict, key: str, where: str, low: int = 0, high: int = MAX_TOKEN_ID) -> int:
    v = _field(d, key, int, where)
    if not low <= v <= high:
        raise TraceError(f"{where}: {key}={v} is out of range [{low}, {high}]")
    return int(v)


def _array(v, name: str, where: str, dtype, ndim: int = 1, allow_nan: bool = False, length: int | None = None,
           max_len: int = MAX_NODES):
    """A numeric array from JSON lists: integer fields take only whole numbers, float fields numbers or
    null / NaN where the contract allows a missing value."""
    if not isinstance(v, list):
        raise TraceError(f"{where}: {name} must be a list, not {_kind(v)}")
    if len(v) > max_len:
        raise TraceError(f"{where}: {name} has {len(v):,} entries; at most {max_len:,} are read")
    rows = v if ndim == 2 else [v]
    for row in rows:
        if not isinstance(row, list) or len(row) > max(MAX_TOPK, max_len if ndim == 1 else MAX_TOPK):
            raise TraceError(f"{where}: {name} must be a list of {'lists of ' if ndim == 2 else ''}numbers")
        for x in row:
            if isinstance(x, bool) or not (isinstance(x, (int, float)) or (x is None and allow_nan)):
                raise TraceError(f"{where}: {name} holds {_kind(x)}; it must hold numbers")
    integer = np.issubdtype(dtype, np.integer)
    try:
        a = np.asarray([[np.nan if x is None else x for x in r] for r in rows] if ndim == 2 else
                       [np.nan if x is None else x for x in v], dtype=np.float64)
    except (ValueError, OverflowError):
        raise TraceError(f"{where}: {name} is not a regular {'table' if ndim == 2 else 'list'} of numbers") from None
    if ndim == 2 and a.ndim == 1:  # a list of empty rows: no top-k recorded
        a = a.reshape(len(v), 0)
    if integer:
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)) or np.any(np.abs(a) > MAX_TOKEN_ID):
            raise TraceError(f"{where}: {name} must hold whole numbers")
    elif not allow_nan and not np.all(np.isfinite(a)):
        raise TraceError(f"{where}: {name} holds NaN or infinite values")
    elif np.any(np.isinf(a)):
        raise TraceError(f"{where}: {name} holds infinite values")
    if length is not None and a.shape[0] != length:
        raise TraceError(f"{where}: {name} has {a.shape[0]} entries where the step has {length}")
    return a.astype(dtype)


def _ids(v, name: str, where: str, low: int = -1):
    a = _array(v, name, where, np.int64, max_len=1 << 22)
    if np.any(a < low):
        raise TraceError(f"{where}: {name} holds ids below {low}")
    return a


def _topk(d: dict, prefix: str, where: str, n: int) -> tuple:
    """([n, K] ids, [n, K] probabilities) of a recorded top-k (K = 0 when the run did not record it)."""
    ids = _array(d.get(f"{prefix}_ids", []), f"{prefix}_ids", where, np.int64, ndim=2)
    probs = _array(d.get(f"{prefix}_probs", []), f"{prefix}_probs", where, np.float32, ndim=2, allow_nan=True)
    if ids.shape != probs.shape or ids.shape[0] not in (0, n) or np.any(ids < 0):
        raise TraceError(f"{where}: {prefix}_ids and {prefix}_probs disagree in shape or hold bad ids")
    if ids.size == 0:
        ids, probs = ids.reshape(n, 0), probs.reshape(n, 0)
    return ids, probs


def _step_from_dict(d: dict, k: int = 0):
    where = f"step {k}"
    if not isinstance(d, dict):
        raise TraceError(f"{where} is {_kind(d)}, not an object")
    if d.get("kind") == "diffusion":
        return _diffusion_step(d, where)
    t = _field(d, "tree", dict, where)
    token_ids = _ids(_field(t, "token_ids", list, where), "tree.token_ids", where, low=0)
    n = token_ids.shape[0]
    if n == 0:
        raise TraceError(f"{where}: the tree has no root")
    parent = _array(_field(t, "parent", list, where), "tree.parent", where, np.int64, length=n)
    if parent[0] != -1 or np.any(parent[1:] < 0) or np.any(parent[1:] >= np.arange(1, n)):
        raise TraceError(f"{where}: tree.parent must give every node an earlier node as its parent (root: -1)")
    source = _field(t, "source", list, where)
    if len(source) != n or not all(isinstance(x, str) and len(x) <= 200 for x in source):
        raise TraceError(f"{where}: tree.source must name the drafter of each of the {n} nodes")
    tree = DraftTree(token_ids, parent, _array(_field(t, "draft_probs", list, where), "tree.draft_probs", where,
                                               np.float32, length=n), tuple(source))
    status = _array(_field(d, "status", list, where), "status", where, np.int8, length=n)
    if np.any((status < ROOT) | (status > UNREACHED)):
        raise TraceError(f"{where}: status holds a value outside 0-3")
    path = _array(_field(d, "accepted_path", list, where), "accepted_path", where, np.int64)
    if np.any((path < 1) | (path >= n)):
        raise TraceError(f"{where}: accepted_path points outside the tree")
    topk_ids, topk_probs = _topk(d, "target_topk", where, n)
    extra = {}
    for name in ("target_entropy", "target_top2_gap", "uniforms"):
        a = _array(d.get(name, []), name, where, np.float32, allow_nan=True)
        if a.shape[0] not in (0, n):
            raise TraceError(f"{where}: {name} has {a.shape[0]} entries where the step has {n}")
        extra[name] = a
    if extra["uniforms"].size and np.any((extra["uniforms"] < 0) | (extra["uniforms"] > 1)):
        raise TraceError(f"{where}: uniforms must lie in [0, 1]")
    for prefix in ("draft_topk", "residual_topk"):
        if d.get(f"{prefix}_ids") or d.get(f"{prefix}_probs"):  # absent or [] (a step built without them): none
            extra[f"{prefix}_ids"], extra[f"{prefix}_probs"] = _topk(d, prefix, where, n)
    bonus_kind = _field(d, "bonus_kind", str, where)
    if d.get("intervention") is not None:
        extra["intervention"] = _intervention(_field(d, "intervention", dict, where), where, n)
    return SpecStep(
        step=_integer(d, "step", where, 0, MAX_TRACE_STEPS), root_pos=_integer(d, "root_pos", where, 0, 1 << 24),
        tree=tree,
        target_probs=_array(_field(d, "target_probs", list, where), "target_probs", where, np.float32,
                            allow_nan=True, length=n),
        accept_probs=_array(_field(d, "accept_probs", list, where), "accept_probs", where, np.float32,
                            allow_nan=True, length=n),
        status=status, accepted_path=path,
        bonus_token=_integer(d, "bonus_token", where, -1), bonus_prob=_number(d, "bonus_prob", where, 0.0, nan=True),
        bonus_kind=bonus_kind, committed_ids=_ids(_field(d, "committed_ids", list, where), "committed_ids", where, 0),
        target_topk_ids=topk_ids, target_topk_probs=topk_probs,
        draft_ms=_number(d, "draft_ms", where, 0.0), verify_ms=_number(d, "verify_ms", where, 0.0),
        target_forwards=_integer(d, "target_forwards", where, 0, 1 << 20),
        draft_forwards=_integer(d, "draft_forwards", where, 0, 1 << 20),
        lossless=_field(d, "lossless", bool, where) if "lossless" in d else True,
        **extra,
    )


def _intervention(d: dict, where: str, n: int) -> Intervention:
    where = f"{where}: intervention"
    kind = _field(d, "kind", str, where)
    if kind not in INTERVENTION_KINDS:
        raise TraceError(f"{where}: kind must be one of {', '.join(INTERVENTION_KINDS)}, not {kind[:40]!r}")
    node = _integer(d, "node", where, 1 if kind == REPLACE else 0, n - 1)
    return Intervention(kind, node, _integer(d, "token", where, 0), _integer(d, "was", where, -1),
                        _integer(d, "removed", where, 0, MAX_NODES), _integer(d, "accepted_before", where, -1, MAX_NODES))


def _diffusion_step(d: dict, where: str) -> DiffusionStep:
    canvas = _ids(_field(d, "canvas", list, where), "canvas", where, low=-1)
    n = canvas.shape[0]
    if n == 0:
        raise TraceError(f"{where}: the canvas is empty")
    cell_state = _array(_field(d, "cell_state", list, where), "cell_state", where, np.int8, length=n)
    if np.any((cell_state < MASKED) | (cell_state > REMASKED)):
        raise TraceError(f"{where}: cell_state holds a value outside 0-3")
    floats = {name: _array(_field(d, name, list, where), name, where, np.float32, allow_nan=True, length=n)
              for name in ("confidence", "top2_gap", "entropy")}
    topk_ids, topk_probs = _topk(d, "topk", where, n)
    rule = _field(d, "rule", str, where)
    user = {}
    for name, top in zip(_USER_FIELDS, (1, len(INTERVENTION_NAMES) - 1)):
        a = _array(d.get(name, []), name, where, np.int8)  # absent or []: nobody intervened
        if a.shape[0] not in (0, n):
            raise TraceError(f"{where}: {name} has {a.shape[0]} entries where the step has {n}")
        if np.any((a < 0) | (a > top)):
            raise TraceError(f"{where}: {name} holds a value outside 0-{top}")
        user[name] = a.astype(_DIFFUSION_DTYPES[name])
    return DiffusionStep(
        step=_integer(d, "step", where, 0, MAX_TRACE_STEPS), block=_integer(d, "block", where, 0, n),
        block_start=_integer(d, "block_start", where, 0, n), block_end=_integer(d, "block_end", where, 0, n),
        canvas=canvas, cell_state=cell_state,
        proposal=_ids(_field(d, "proposal", list, where), "proposal", where, low=-1), **floats,
        topk_ids=topk_ids, topk_probs=topk_probs, rule=rule[:500],
        threshold=_number(d, "threshold", where, nan=True), signal=_number(d, "signal", where, nan=True),
        forwards=_integer(d, "forwards", where, 0, 1 << 20), cached=_integer(d, "cached", where, 0, 1 << 24),
        eos_at=_integer(d, "eos_at", where, -1, n - 1),
        forward_ms=_number(d, "forward_ms", where, 0.0, nan=True), select_ms=_number(d, "select_ms", where, 0.0, nan=True),
        lossless=_field(d, "lossless", bool, where) if "lossless" in d else False,
        all_in=_field(d, "all_in", bool, where) if "all_in" in d else False, **user,
    )


# derived metrics --------------------------------------------------------------
def summarize(steps: list, wall_s: float = 0.0) -> dict:
    """Summary metrics of a run.

    tau: tokens committed per target forward, bonus included (the literature's
         mean accepted length; `tau_drafts_only` excludes the bonus).
    acceptance_by_depth[d]: accepted ÷ drafted among nodes at depth d+1 whose
         parent was accepted (i.e. that verification actually reached).
    path_reach_by_depth[d]: among steps whose tree was at least d+1 deep, the
         share whose accepted path reached depth d+1. For trees this is the
         figure that matters: siblings lower the per-node rate but raise this one.
    """
    new_tokens = int(sum(s.committed_ids.shape[0] for s in steps))
    target_forwards = int(sum(s.target_forwards for s in steps))
    draft_forwards = int(sum(s.draft_forwards for s in steps))
    drafted = int(sum(s.n_drafted for s in steps))
    accepted = int(sum(s.n_accepted for s in steps))
    max_depth = max((int(s.tree.depth.max()) for s in steps if s.tree.size > 1), default=0)
    reached = np.zeros(max_depth, dtype=np.int64)
    hit = np.zeros(max_depth, dtype=np.int64)
    for s in steps:
        if s.tree.size <= 1:
            continue
        depth = s.tree.depth
        for i in range(1, s.tree.size):
            if s.status[i] in (ACCEPTED, REJECTED):
                reached[depth[i] - 1] += 1
                hit[depth[i] - 1] += s.status[i] == ACCEPTED
    by_depth = [float(h / r) if r else None for h, r in zip(hit, reached)]
    deep_enough = np.zeros(max_depth, dtype=np.int64)
    reached_path = np.zeros(max_depth, dtype=np.int64)
    for s in steps:
        if s.tree.size > 1:
            deep_enough[: int(s.tree.depth.max())] += 1
            reached_path[: s.n_accepted] += 1
    reach = [float(h / r) if r else None for h, r in zip(reached_path, deep_enough)]
    decode_s = wall_s if wall_s > 0 else sum(s.draft_ms + s.verify_ms for s in steps) / 1000.0
    return {
        "new_tokens": new_tokens,
        "steps": len(steps),
        "target_forwards": target_forwards,
        "draft_forwards": draft_forwards,
        "tau": new_tokens / target_forwards if target_forwards else 0.0,
        "tau_drafts_only": accepted / target_forwards if target_forwards else 0.0,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted else None,
        "acceptance_by_depth": by_depth,
        "path_reach_by_depth": reach,
        "draft_ms": float(sum(s.draft_ms for s in steps)),
        "verify_ms": float(sum(s.verify_ms for s in steps)),
        "wall_s": decode_s,
        "tok_per_s": new_tokens / decode_s if decode_s > 0 else 0.0,
    }


def check_invariants(trace: Trace, eos_ids=(), max_new_tokens: int | None = None) -> None:
    """Raise AssertionError if the trace breaks the contract. Run by the tests."""
    if is_diffusion(trace.steps):
        check_diffusion_invariants(trace.steps, eos_ids, finished=bool(trace.finish_reason))
        if max_new_tokens is not None:
            assert trace.output_ids.shape[0] <= max_new_tokens
        return
    pos = int(trace.prompt_ids.shape[0]) - 1
    for k, s in enumerate(trace.steps):
        t = s.tree
        n = t.size
        assert s.step == k, f"step {k} numbered {s.step}"
        assert s.root_pos == pos, f"step {k}: root at {s.root_pos}, expected {pos}"
        assert t.parent[0] == -1 and np.all(t.parent[1:] < np.arange(1, n)), "parents must precede children"
        assert np.all(t.parent[1:] >= 0)
        assert len(t.source) == n and t.source[0] == "root"
        assert t.draft_probs.shape[0] == n
        for name in ("target_probs", "accept_probs", "status"):
            assert getattr(s, name).shape[0] == n, f"step {k}: {name} has the wrong length"
        for name in ("draft_probs", "target_probs", "accept_probs"):
            a = getattr(t, name) if name == "draft_probs" else getattr(s, name)
            a = a[np.isfinite(a)] if name != "draft_probs" else a  # NaN: untested, or a run that did not record
            assert np.all((a >= 0) & (a <= 1 + 1e-5)), f"step {k}: {name} outside [0, 1]"
        if np.all(np.isfinite(s.target_probs)):  # recorded: every accepted node was tested
            assert np.all(np.isfinite(s.accept_probs[s.accepted_path])), f"step {k}: accepted node never tested"
        assert s.status[0] == ROOT and np.all(s.status[1:] != ROOT)
        # accepted path: a root-to-node chain of accepted nodes, in depth order
        prev = 0
        for node in s.accepted_path:
            assert t.parent[node] == prev, f"step {k}: accepted path is not a chain"
            assert s.status[node] == ACCEPTED
            prev = int(node)
        assert int(np.sum(s.status == ACCEPTED)) == s.n_accepted, "accepted nodes off the path"
        # a node is reached only if its parent was accepted (or is the root)
        for i in range(1, n):
            parent_ok = s.status[t.parent[i]] in (ROOT, ACCEPTED)
            assert (s.status[i] != UNREACHED) == parent_ok, f"step {k}: node {i} reached status wrong"
        # committed = accepted tokens then the bonus, possibly cut short; nothing follows a path that ended
        # the sequence (NO_BONUS)
        assert s.bonus_kind in (BONUS, CORRECTION, NO_BONUS), f"step {k}: bonus kind {s.bonus_kind!r}"
        if s.bonus_kind == NO_BONUS:
            assert s.bonus_token == -1 and np.isnan(s.bonus_prob), f"step {k}: no bonus, yet a bonus token"
            assert s.n_accepted >= 1, f"step {k}: no bonus after an empty path"
            assert not eos_ids or int(t.token_ids[s.accepted_path[-1]]) in set(eos_ids), \
                f"step {k}: no bonus, but the path does not end at EOS"
        else:
            assert s.bonus_token >= 0, f"step {k}: bonus token {s.bonus_token}"
        bonus = [] if s.bonus_kind == NO_BONUS else [s.bonus_token]
        full = np.concatenate([t.token_ids[s.accepted_path], np.asarray(bonus, dtype=np.int64)])
        c = s.committed_ids
        assert 1 <= c.shape[0] <= full.shape[0] and np.array_equal(c, full[: c.shape[0]]), f"step {k}: committed ids"
        if c.shape[0] < full.shape[0]:
            last = k == len(trace.steps) - 1
            assert last, f"step {k}: only the last step may be cut short"
        if s.bonus_kind == CORRECTION:
            assert np.any(s.status == REJECTED), "a correction follows a rejection"
        if eos_ids:
            # a record never claims a token after the end of sequence: not on its accepted path, not as the
            # bonus after an accepted EOS, and no step after the one that committed it
            below_eos = np.isin(t.token_ids[t.parent[1:]], list(eos_ids)) & (t.parent[1:] > 0)
            assert not below_eos.any(), f"step {k}: the tree holds nodes after EOS"
            on_path = first_eos(t.token_ids[s.accepted_path], eos_ids)
            assert on_path < 0 or on_path == s.n_accepted - 1, f"step {k}: the accepted path continues past EOS"
            assert on_path < 0 or c.shape[0] == s.n_accepted, f"step {k}: a bonus token after an accepted EOS"
            assert first_eos(c, eos_ids) in (-1, c.shape[0] - 1), f"step {k}: committed tokens after EOS"
            assert first_eos(c, eos_ids) < 0 or k == len(trace.steps) - 1, f"step {k}: a step after EOS"
        assert s.target_forwards == 1
        if s.intervention is not None:
            edit = s.intervention
            assert edit.node < n, f"step {k}: the intervention names node {edit.node} of {n}"
            if edit.kind == REPLACE:
                assert t.source[edit.node] == USER_SOURCE and int(t.token_ids[edit.node]) == edit.token, \
                    f"step {k}: the replaced node does not hold the user's token"
        pos += int(c.shape[0])
    out = trace.output_ids
    if eos_ids and out.shape[0] > 0:
        eos_at = [i for i, x in enumerate(out) if int(x) in set(eos_ids)]
        assert not eos_at or eos_at[0] == out.shape[0] - 1, "tokens after EOS"
    if max_new_tokens is not None:
        assert out.shape[0] <= max_new_tokens


@dataclass(frozen=True)
class CommittedToken:
    token_id: int
    kind: str  # "accepted", BONUS or CORRECTION
    step: int
    depth: int  # depth in that step's tree (the bonus sits one below the last accepted node)
    target_prob: float  # target probability of the token when it was committed


def committed_tokens(steps: list) -> list:
    """Every generated token with the step and the way it was committed."""
    return [t for s in steps for t in step_committed_tokens(s)]


def step_committed_tokens(s: "SpecStep") -> list:
    """The tokens one step committed, each with how it was committed (accepted draft, bonus or correction)."""
    out = []
    depth = s.tree.depth
    for j, tok in enumerate(s.committed_ids):
        if j < s.n_accepted:
            node = int(s.accepted_path[j])
            out.append(CommittedToken(int(tok), "accepted", s.step, int(depth[node]), float(s.target_probs[node])))
        else:
            out.append(CommittedToken(int(tok), s.bonus_kind, s.step, s.n_accepted + 1, float(s.bonus_prob)))
    return out


def check_diffusion_invariants(steps: list, eos_ids=(), finished: bool = True) -> None:
    """The canvas contract of diffusion and Jacobi steps.

    Every step reveals at least one cell; a revealed cell takes the proposal it was scored with;
    kept cells never change; the number of masked cells falls by revealed - remasked and never
    grows (a schedule may remask, but always reveals more than it remasks, so runs terminate).

    The user's interventions apply before a step: a cell sent back was committed, a pinned cell holds its token
    and stays KEPT until the user sends it back, and the rules above compare with the canvas as the user left it."""
    assert steps, "no steps"
    length = steps[0].length
    prev = np.full(length, -1, dtype=np.int64)
    held = np.full(length, -1, dtype=np.int64)  # the token each pin holds (-1: not pinned)
    for k, s in enumerate(steps):
        assert s.step == k, f"step {k} numbered {s.step}"
        assert s.length == length, f"step {k}: the canvas changed length"
        for name in ("cell_state", "proposal", "confidence", "top2_gap", "entropy", "pinned", "intervention"):
            assert getattr(s, name).shape[0] == length, f"step {k}: {name} has the wrong length"
        assert 0 <= s.block_start < s.block_end <= length, f"step {k}: block [{s.block_start}, {s.block_end})"
        st, c = s.cell_state, s.canvas
        pinned_now, sent_back = s.intervention == PINNED_BY_USER, s.intervention == SENT_BACK_BY_USER
        assert np.all(prev[sent_back] >= 0), f"step {k}: the user sent back a cell that was masked"
        assert np.all(s.pinned[pinned_now]), f"step {k}: a pin that holds nothing"
        was_pinned = held >= 0
        assert not np.any(was_pinned & ~s.pinned & ~sent_back), f"step {k}: a pin let go, yet nobody sent it back"
        assert not np.any(s.pinned & ~was_pinned & ~pinned_now), f"step {k}: a cell pinned, yet nobody pinned it"
        assert np.all(c[s.pinned] >= 0) and np.all(st[s.pinned] == KEPT), f"step {k}: a pinned cell was not kept"
        still = was_pinned & s.pinned & ~pinned_now
        assert np.all(c[still] == held[still]), f"step {k}: a pinned cell changed its token"
        held = np.where(s.pinned, c, -1)
        prev = prev.copy()
        prev[pinned_now], prev[sent_back] = c[pinned_now], -1
        revealed, kept, masked, remasked = (st == REVEALED), (st == KEPT), (st == MASKED), (st == REMASKED)
        assert np.all(revealed | kept | masked | remasked), f"step {k}: unknown cell state"
        assert revealed.any(), f"step {k}: nothing revealed"
        assert np.all(prev[revealed] < 0), f"step {k}: revealed a cell that was not masked"
        assert np.all(c[revealed] == s.proposal[revealed]), f"step {k}: revealed token is not the proposal"
        assert np.all(c[revealed] >= 0)
        assert np.all(c[kept] == prev[kept]) and np.all(prev[kept] >= 0), f"step {k}: a kept cell changed"
        assert np.all(c[masked] < 0) and np.all(prev[masked] < 0), f"step {k}: masked state inconsistent"
        assert np.all(c[remasked] < 0) and np.all(prev[remasked] >= 0), f"step {k}: remask of a masked cell"
        assert remasked.sum() < revealed.sum(), f"step {k}: remasked as many cells as it revealed"
        n_prev, n_now = int(np.sum(prev < 0)), int(np.sum(c < 0))
        assert n_now == n_prev - int(revealed.sum()) + int(remasked.sum()) and n_now < n_prev, f"step {k}: masks grew"
        conf = s.confidence[revealed]
        assert np.all(np.isfinite(conf) & (conf >= 0) & (conf <= 1 + 1e-5)), f"step {k}: confidence outside [0, 1]"
        assert s.forwards >= 1, f"step {k}: a step costs at least one forward"
        if s.eos_at >= 0:
            assert c[s.eos_at] >= 0 and (not eos_ids or int(c[s.eos_at]) in set(eos_ids)), f"step {k}: eos_at"
            assert np.all((c[: s.eos_at] < 0) | ~np.isin(c[: s.eos_at], list(eos_ids) or [-2])), "EOS before eos_at"
        prev = c
    if finished:
        last = steps[-1]
        end = last.eos_at if last.eos_at >= 0 else length - 1
        assert np.all(last.canvas[: end + 1] >= 0), "a finished run left masked cells before its end"
