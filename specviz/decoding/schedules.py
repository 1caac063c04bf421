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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCHEDULES = ("low_confidence", "random", "margin", "entropy", "threshold", "prophet", "remask")
SCHEDULE_HELP = {
    "low_confidence": "LLaDA: each step reveal the k most confident masked cells of the block; k spreads the block "
                      "over its step budget",
    "random": "reveal k random masked cells of the block (the MDLM/LLaDA 'random' baseline)",
    "margin": "Dream 'topk_margin': reveal the k cells with the largest gap between their top two tokens",
    "entropy": "Dream 'entropy': reveal the k cells whose distributions have the lowest entropy",
    "threshold": "Fast-dLLM: reveal every masked cell of the block whose confidence passes the threshold "
                 "(at least the single most confident one)",
    "prophet": "Prophet: low-confidence steps until the mean top-2 logit gap of the remaining cells passes a "
               "threshold that loosens with progress (×1.5, ×1, ×0.5 by thirds), then reveal every scored cell "
               "at once ('all-in')",
    "remask": "low-confidence steps that may also remask revealed cells of the block that were committed with a "
              "confidence below a floor (RCR-style), weakest first, always fewer than it reveals",
}


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


def select(name: str, view: CellView, params: ScheduleParams, rng: np.random.Generator) -> Selection:
    eligible = np.flatnonzero(view.eligible)
    if eligible.size == 0:
        raise ValueError("no eligible cell: the active block has no scored masked cell")
    k = per_step_count(eligible.size, view.steps_left)
    conf = view.confidence[eligible].astype(np.float64)
    empty = np.zeros(0, dtype=np.int64)
    if name == "low_confidence":
        return Selection(_top(eligible, conf, k), empty, f"top-{k} by confidence")
    if name == "random":
        pick = np.sort(rng.choice(eligible, size=min(k, eligible.size), replace=False))
        return Selection(pick.astype(np.int64), empty, f"{k} at random")
    if name == "margin":
        return Selection(_top(eligible, view.top2_gap[eligible].astype(np.float64), k), empty, f"top-{k} by margin")
    if name == "entropy":
        return Selection(_top(eligible, -view.entropy[eligible].astype(np.float64), k), empty,
                         f"{k} lowest entropy")
    if name == "threshold":
        above = eligible[conf >= params.threshold]
        best = float(conf.max())
        if above.size:
            return Selection(above, empty, f"threshold {params.threshold:.2f}: {above.size} above",
                             params.threshold, best)
        return Selection(_top(eligible, conf, 1), empty, f"threshold {params.threshold:.2f}: none above, the best one",
                         params.threshold, best)
    if name == "prophet":
        scored_masked = np.flatnonzero(view.masked & (view.proposal >= 0))
        gap = float(np.mean(logit_gap(view.confidence[scored_masked], view.top2_gap[scored_masked])))
        tau = prophet_threshold(params.prophet_gap, view.progress)
        if gap >= tau:
            return Selection(scored_masked, empty, f"prophet all-in: mean gap {gap:.2f} ≥ {tau:.2f}", tau, gap)
        return Selection(_top(eligible, conf, k), empty, f"top-{k} by confidence (gap {gap:.2f} < {tau:.2f})", tau, gap)
    if name == "remask":
        reveal = _top(eligible, conf, k)
        remask = empty
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
    raise ValueError(f"unknown schedule {name!r}: use one of {', '.join(SCHEDULES)}")
