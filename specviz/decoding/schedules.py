"""Diffusion schedules: which masked cells to reveal (and which to remask) after a forward.

A schedule sees one `CellView` per step (host arrays over the whole canvas: which
cells are masked, which may be revealed now, and each scored cell's proposal
statistics from the logit-statistics kernel) and returns a `Selection`.
Schedules are pure functions of that view plus a seeded numpy generator, so they
are tested on hand-made views without a model.

Contract (checked by the tests and by `check_diffusion_invariants`):
- at least one cell is revealed every step, so a run always ends;
- only eligible cells are revealed, except by Prophet's all-in, which reveals
  every scored masked cell;
- remasking (only `remask`) returns fewer cells than it reveals.

Every schedule is one `Schedule` entry of the `SCHEDULES` registry: its select function, its help
text, the `ScheduleParams` knobs it reads and where it comes from. A new schedule is one function
plus one `register_schedule(Schedule(...))` call (the built-ins are the table at the end of this file).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields

import numpy as np


@dataclass
class CellView:
    """One step's view of the canvas, [L] host arrays. Unscored cells hold NaN / -1."""

    masked: np.ndarray  # bool: the cell holds the mask
    eligible: np.ndarray  # bool: masked, scored and inside the active block
    proposal: np.ndarray  # int64 token the model proposes for the cell
    confidence: np.ndarray  # float32 probability of the proposal
    top2_gap: np.ndarray  # float32 p1 - p2
    entropy: np.ndarray  # float32 nats
    # float32 the confidence a revealed cell had when it was committed (NaN: masked). Masked-diffusion models
    # are trained on masked cells only, so re-scoring a revealed cell's own token means nothing; the
    # commit-time confidence is what RCR-style remasking tracks.
    commit_conf: np.ndarray
    revisable: np.ndarray  # bool: revealed cells of the active block that a remasking schedule may remask
    steps_left: int  # steps left in the active block's budget, this one included (>= 1)
    progress: float  # share of the canvas revealed before this step, in [0, 1]


@dataclass(frozen=True)
class Selection:
    reveal: np.ndarray  # canvas indices to reveal with their proposals
    remask: np.ndarray  # canvas indices to return to the mask
    rule: str  # what fired, in words
    threshold: float = math.nan
    signal: float = math.nan
    all_in: bool = False  # every scored masked cell was revealed at once (Prophet's early commit)


@dataclass(frozen=True)
class ScheduleParams:
    threshold: float = 0.9  # threshold: confidence a cell needs to be revealed in parallel
    prophet_gap: float = 5.0  # prophet: mean top-1 minus top-2 logit gap that triggers all-in, mid-run
    remask_below: float = 0.2  # remask: revealed cells committed with less confidence than this may be remasked


def per_step_count(n_eligible: int, steps_left: int) -> int:
    """Spread the block's masked cells evenly over the steps left (LLaDA's transfer count)."""
    return max(1, math.ceil(n_eligible / max(1, steps_left)))


def prophet_threshold(gap: float, progress: float) -> float:
    """Strict early, looser late (Prophet's 7.5 / 5.0 / 2.5 for a mid-run gap of 5)."""
    if progress < 1 / 3:
        return 1.5 * gap
    if progress < 2 / 3:
        return gap
    return 0.5 * gap


def logit_gap(p1: np.ndarray, prob_gap: np.ndarray) -> np.ndarray:
    """log p1 - log p2 (the raw top-2 logit gap Prophet reads) from p1 and p1 - p2."""
    p1 = p1.astype(np.float64)
    p2 = np.maximum(p1 - prob_gap.astype(np.float64), 1e-12)
    return np.log(np.maximum(p1, 1e-12)) - np.log(p2)


def _top(indices: np.ndarray, key: np.ndarray, k: int) -> np.ndarray:
    """The k indices with the largest key; ties go to the leftmost cell (stable, reproducible)."""
    order = np.lexsort((indices, -key))
    return np.sort(indices[order[:k]])


def transfer_count(view: CellView) -> int:
    """How many cells a fixed-count schedule reveals this step (`per_step_count` over the eligible cells)."""
    return per_step_count(int(np.count_nonzero(view.eligible)), view.steps_left)


def top_eligible(view: CellView, key: np.ndarray, k: int) -> np.ndarray:
    """The k eligible cells with the largest `key` ([L], over the canvas); ties go to the leftmost cell."""
    eligible = np.flatnonzero(view.eligible)
    return _top(eligible, np.asarray(key, dtype=np.float64)[eligible], k)


NO_CELLS = np.zeros(0, dtype=np.int64)
NO_CELLS.setflags(write=False)


@dataclass(frozen=True)
class Schedule:
    """One registry entry: `select(view, params, rng) -> Selection` and what the app says about it."""

    name: str
    select: Callable[[CellView, ScheduleParams, np.random.Generator], Selection]
    help: str
    params: tuple[str, ...] = ()  # the ScheduleParams knobs it reads
    source: str = ""  # the paper or system it follows


SCHEDULES: dict[str, Schedule] = {}


class _HelpView(Mapping):
    """`SCHEDULE_HELP[name]`: the help text of every registered schedule, derived from `SCHEDULES`."""

    def __getitem__(self, name: str) -> str:
        return SCHEDULES[name].help

    def __iter__(self) -> Iterator[str]:
        return iter(SCHEDULES)

    def __len__(self) -> int:
        return len(SCHEDULES)


SCHEDULE_HELP: Mapping[str, str] = _HelpView()
_KNOBS = {f.name for f in fields(ScheduleParams)}


def register_schedule(schedule: Schedule) -> Schedule:
    """Add a schedule to `SCHEDULES` (the app's dropdowns, the CLI and `DiffusionConfig` read it)."""
    if schedule.name in SCHEDULES:
        raise ValueError(f"a schedule named {schedule.name!r} is already registered")
    unknown = set(schedule.params) - _KNOBS
    if unknown:
        raise ValueError(f"schedule {schedule.name!r} reads unknown knobs {sorted(unknown)}; "
                         f"ScheduleParams has {sorted(_KNOBS)}")
    SCHEDULES[schedule.name] = schedule
    return schedule


def select(name: str, view: CellView, params: ScheduleParams, rng: np.random.Generator) -> Selection:
    """Run the registered schedule `name` on one step's view."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: use one of {', '.join(SCHEDULES)}")
    if not view.eligible.any():
        raise ValueError("no eligible cell: the active block has no scored masked cell")
    return SCHEDULES[name].select(view, params, rng)


# the built-in schedules ------------------------------------------------------------------
def _low_confidence(view: CellView, params: ScheduleParams, rng: np.random.Generator) -> Selection:
    k = transfer_count(view)
    return Selection(top_eligible(view, view.confidence, k), NO_CELLS, f"top-{k} by confidence")


def _random(view: CellView, params: ScheduleParams, rng: np.random.Generator) -> Selection:
    eligible, k = np.flatnonzero(view.eligible), transfer_count(view)
    pick = np.sort(rng.choice(eligible, size=min(k, eligible.size), replace=False))
    return Selection(pick.astype(np.int64), NO_CELLS, f"{k} at random")


def _margin(view: CellView, params: ScheduleParams, rng: np.random.Generator) -> Selection:
    k = transfer_count(view)
    return Selection(top_eligible(view, view.top2_gap, k), NO_CELLS, f"top-{k} by margin")


def _entropy(view: CellView, params: ScheduleParams, rng: np.random.Generator) -> Selection:
    k = transfer_count(view)
    return Selection(top_eligible(view, -view.entropy.astype(np.float64), k), NO_CELLS, f"{k} lowest entropy")


def _threshold(view: CellView, params: ScheduleParams, rng: np.random.Generator) -> Selection:
    eligible = np.flatnonzero(view.eligible)
    conf = view.confidence[eligible].astype(np.float64)
    above, best = eligible[conf >= params.threshold], float(conf.max())
    if above.size:
        return Selection(above, NO_CELLS, f"threshold {params.threshold:.2f}: {above.size} above", params.threshold,
                         best)
    return Selection(top_eligible(view, view.confidence, 1), NO_CELLS,
                     f"threshold {params.threshold:.2f}: none above, the best one", params.threshold, best)


def _prophet(view: CellView, params: ScheduleParams, rng: np.random.Generator) -> Selection:
    scored_masked = np.flatnonzero(view.masked & (view.proposal >= 0))
    gap = float(np.mean(logit_gap(view.confidence[scored_masked], view.top2_gap[scored_masked])))
    tau = prophet_threshold(params.prophet_gap, view.progress)
    if gap >= tau:
        return Selection(scored_masked, NO_CELLS, f"prophet all-in: mean gap {gap:.2f} ≥ {tau:.2f}", tau, gap,
                         all_in=True)
    k = transfer_count(view)
    return Selection(top_eligible(view, view.confidence, k), NO_CELLS,
                     f"top-{k} by confidence (gap {gap:.2f} < {tau:.2f})", tau, gap)


def _remask(view: CellView, params: ScheduleParams, rng: np.random.Generator) -> Selection:
    k = transfer_count(view)
    reveal, remask = top_eligible(view, view.confidence, k), NO_CELLS
    if view.steps_left > 1 and reveal.size > 1:
        weak = np.flatnonzero(view.revisable & (view.commit_conf < params.remask_below))
        if weak.size:
            # the weakest first, and always fewer than revealed so the canvas still fills up
            weak = weak[np.argsort(view.commit_conf[weak], kind="stable")][: reveal.size - 1]
            remask = np.sort(weak)
    rule = f"top-{k} by confidence" + (f", remask {remask.size} below {params.remask_below:.2f}" if remask.size else "")
    own = view.commit_conf[view.revisable]
    weakest = float(np.min(own[np.isfinite(own)])) if np.isfinite(own).any() else math.nan
    return Selection(reveal, remask, rule, params.remask_below, weakest)


for _schedule in (
    Schedule("low_confidence", _low_confidence,
             "LLaDA: each step reveal the k most confident masked cells of the block; k spreads the block over its "
             "step budget", (), "LLaDA"),
    Schedule("random", _random, "reveal k random masked cells of the block (the MDLM/LLaDA 'random' baseline)", (),
             "MDLM / LLaDA"),
    Schedule("margin", _margin,
             "Dream 'topk_margin': reveal the k cells with the largest gap between their top two tokens", (), "Dream"),
    Schedule("entropy", _entropy, "Dream 'entropy': reveal the k cells whose distributions have the lowest entropy",
             (), "Dream"),
    Schedule("threshold", _threshold,
             "Fast-dLLM: reveal every masked cell of the block whose confidence passes the threshold (at least the "
             "single most confident one)", ("threshold",), "Fast-dLLM"),
    Schedule("prophet", _prophet,
             "Prophet: low-confidence steps until the mean top-2 logit gap of the remaining cells passes a threshold "
             "that loosens with progress (×1.5, ×1, ×0.5 by thirds), then reveal every scored cell at once "
             "('all-in')", ("prophet_gap",), "Prophet"),
    Schedule("remask", _remask,
             "low-confidence steps that may also remask revealed cells of the block that were committed with a "
             "confidence below a floor (RCR-style), weakest first, always fewer than it reveals", ("remask_below",),
             "RCR"),
):
    register_schedule(_schedule)
del _schedule
