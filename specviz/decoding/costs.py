"""The cost model: what a forward of the target costs on this machine, and what a draft is worth.

Whether speculation pays is a property of the machine, not only of the drafter. On a GPU, scoring 64
tokens costs about as much as scoring one, so any accepted token is a gain; on a small CPU every scored
token costs real compute, and a draft that is mostly rejected makes decoding slower than plain AR. So
the first thing to know is the *verify-cost curve*: the target's forward time against the number of
tokens scored in one forward, at a given context length, measured through the decoder's own scoring
call. `specviz.runs.costs` measures it (a few seconds on the embedded model) and caches it; `CostCurve`
holds it, interpolates it, and round-trips through JSON.

`predicted_speedup` turns the curve and a drafter's measured acceptance into the expected speedup of a
tree shape over AR: tokens gained per step against the step's cost (draft + verify), both in the same
milliseconds as one AR step. `run_cost` applies it to a finished run's records step by step (the cost of
each step, not the cost of the mean step: the curve is not linear), and `whatif_speedups` to the what-if
panel's replayed shapes, with a drafting cost where one is known.

Pure: numpy and the records only, so a recorded run is predicted again without a model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..trace import tree_depths


@dataclass(frozen=True)
class CostCurve:
    """Forward milliseconds of one model against tokens scored per forward, on one device and dtype."""

    model_id: str
    device: str
    dtype: str
    context: int  # tokens already in the cache when the forward was timed
    tokens: tuple  # tokens scored per forward, increasing, starting at 1
    forward_ms: tuple  # median milliseconds of each

    def __post_init__(self):
        if len(self.tokens) != len(self.forward_ms) or not self.tokens:
            raise ValueError("a cost curve needs one time per size")
        if list(self.tokens) != sorted(set(self.tokens)) or self.tokens[0] != 1:
            raise ValueError("a cost curve's sizes must increase from 1")

    @property
    def ar_ms(self) -> float:
        """One AR step: a forward that scores one token."""
        return float(self.forward_ms[0])

    def ms(self, tokens: float) -> float:
        """Forward milliseconds for `tokens` scored at once: linear between measured sizes, and beyond the
        last one along the last segment's slope (never below the measured time)."""
        n = max(float(tokens), 1.0)
        xs, ys = np.asarray(self.tokens, float), np.asarray(self.forward_ms, float)
        if n <= xs[-1]:
            return float(np.interp(n, xs, ys))
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if len(xs) > 1 else 0.0
        return float(ys[-1] + max(slope, 0.0) * (n - xs[-1]))

    def relative(self, tokens: float) -> float:
        """A forward of `tokens` in units of one AR step."""
        return self.ms(tokens) / self.ar_ms

    def to_dict(self) -> dict:
        return {"model_id": self.model_id, "device": self.device, "dtype": self.dtype, "context": self.context,
                "tokens": list(self.tokens), "forward_ms": [round(float(t), 4) for t in self.forward_ms]}

    @classmethod
    def from_dict(cls, data: dict) -> "CostCurve":
        return cls(str(data["model_id"]), str(data["device"]), str(data["dtype"]), int(data["context"]),
                   tuple(int(t) for t in data["tokens"]), tuple(float(t) for t in data["forward_ms"]))


def expected_tokens(reach_by_depth) -> float:
    """Tokens committed per step: the bonus (or correction) token, plus one for every depth the accepted
    path reaches, where `reach_by_depth[d]` is the share of steps whose path reaches depth d + 1."""
    return 1.0 + float(sum(r for r in reach_by_depth if r is not None and np.isfinite(r)))


def predicted_speedup(curve: CostCurve, tokens_per_step: float, drafted_nodes: int, draft_ms: float = 0.0) -> float:
    """Expected speedup over AR of steps that draft `drafted_nodes` nodes at `draft_ms` of drafting each and
    commit `tokens_per_step` tokens on average: (tokens ÷ step time) ÷ (1 token ÷ one AR forward). The
    verify forward scores the drafted nodes plus the root."""
    step_ms = curve.ms(drafted_nodes + 1) + max(float(draft_ms), 0.0)
    return float(tokens_per_step) * curve.ar_ms / step_ms


@dataclass(frozen=True)
class RunCost:
    """What the cost model says about one run, from its step records and a curve.

    The prediction prices every step on the curve: verifying step i scores its drafted nodes plus the root,
    `curve.ms(nodes_i + 1)`. Its drafting is the `draft_ms` the step measured, brought to the curve's
    conditions: a machine busy with other work slows drafting and verifying alike, so the run's drafting is
    divided by how much slower its own verify forwards ran than the curve says (`slowdown`). Speedup =
    Σ committed tokens × one AR step ÷ Σ (verify + drafting)."""

    steps: int
    tokens: int  # committed by the run
    nodes_per_step: float  # drafted nodes per step (the target scores these plus the root)
    draft_ms_per_step: float  # drafting per step, at the curve's conditions
    draft_ms_per_level: float | None  # … per drafted level (None: nothing drafted)
    reach_by_depth: tuple  # share of all steps whose accepted path reached depth d + 1
    verify_ms: float  # Σ predicted verify forwards
    measured_verify_ms: float  # Σ the run's own verify times
    measured_draft_ms: float  # Σ the run's own drafting times
    slowdown: float  # measured ÷ predicted verify: how much busier the machine was than when the curve was measured
    ar_ms: float  # one AR step on the curve
    predicted: float  # speedup over AR

    @property
    def draft_ms(self) -> float:
        """Σ drafting at the curve's conditions."""
        return self.draft_ms_per_step * self.steps

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.steps if self.steps else 0.0

    @property
    def step_ms(self) -> float:
        """The mean predicted step: verify from the curve plus drafting."""
        return (self.verify_ms + self.draft_ms) / self.steps if self.steps else 0.0

    @property
    def step_cost(self) -> float:
        """The mean step in AR steps: also the tokens per step a run must commit to break even."""
        return self.step_ms / self.ar_ms if self.ar_ms > 0 else 0.0

    def to_dict(self) -> dict:
        return {"steps": self.steps, "tokens": self.tokens, "tokens_per_step": self.tokens_per_step,
                "nodes_per_step": self.nodes_per_step, "draft_ms_per_step": self.draft_ms_per_step,
                "draft_ms_per_level": self.draft_ms_per_level, "reach_by_depth": list(self.reach_by_depth),
                "verify_ms": self.verify_ms, "draft_ms": self.draft_ms, "measured_verify_ms": self.measured_verify_ms,
                "measured_draft_ms": self.measured_draft_ms, "slowdown": self.slowdown, "ar_ms": self.ar_ms,
                "step_cost": self.step_cost, "predicted": self.predicted}


def reach_by_depth(steps) -> tuple:
    """reach[d]: the share of all steps whose accepted path reached depth d + 1. Unlike the metrics'
    `path_reach_by_depth` (among steps that drafted that deep), these add up to the run's tokens per step:
    `expected_tokens(reach)` = 1 + mean accepted length."""
    if not steps:
        return ()
    accepted = np.asarray([int(s.accepted_path.shape[0]) for s in steps])
    top = int(accepted.max(initial=0))
    return tuple(float(np.mean(accepted > d)) for d in range(top))


def run_cost(curve: CostCurve, steps) -> RunCost | None:
    """The cost model applied to a run's `SpecStep` records, step by step (None without steps)."""
    if not steps:
        return None
    nodes = [int(s.tree.token_ids.shape[0]) - 1 for s in steps]
    tokens = int(sum(int(s.committed_ids.shape[0]) for s in steps))
    draft = [max(float(s.draft_ms), 0.0) for s in steps]
    verify = float(sum(curve.ms(n + 1) for n in nodes))
    measured_verify = float(sum(max(float(s.verify_ms), 0.0) for s in steps))
    slowdown = measured_verify / verify if measured_verify > 0 and verify > 0 else 1.0
    levels = sum(int(tree_depths(s.tree.parent).max()) for s, n in zip(steps, nodes) if n > 0)
    drafted_ms = sum(d for d, n in zip(draft, nodes) if n > 0) / slowdown
    total = verify + sum(draft) / slowdown
    return RunCost(
        steps=len(steps), tokens=tokens, nodes_per_step=float(np.mean(nodes)),
        draft_ms_per_step=float(np.mean(draft)) / slowdown,
        draft_ms_per_level=drafted_ms / levels if levels else None, reach_by_depth=reach_by_depth(steps),
        verify_ms=verify, measured_verify_ms=measured_verify, measured_draft_ms=float(sum(draft)),
        slowdown=slowdown, ar_ms=curve.ar_ms, predicted=tokens * curve.ar_ms / total if total > 0 else 0.0)


# how a what-if row's drafting cost was estimated (the `draft_how` of `whatif_speedups`)
DRAFT_MEASURED = "this run's own"
DRAFT_FREE = "model-free"
DRAFT_PER_LEVEL = "{ms:.1f} ms a level × {depth:g}"  # the run's drafter, per drafted level
DRAFT_NOT_COUNTED = "another drafter"


def row_draft_ms(row: dict, run: RunCost | None) -> tuple:
    """(drafting ms per step or None when unknown, how it was estimated) for one what-if row (a dict with
    family, depth, and the flags own_setting: the row is the run's own setting, own_drafter: it drafts
    with the run's own model drafter)."""
    if run is not None and row.get("own_setting"):
        return run.draft_ms_per_step, DRAFT_MEASURED
    if row.get("family") == "model-free":
        return 0.0, DRAFT_FREE
    if run is not None and row.get("own_drafter") and run.draft_ms_per_level is not None:
        depth = float(row.get("depth") or 0.0)
        return run.draft_ms_per_level * depth, DRAFT_PER_LEVEL.format(ms=run.draft_ms_per_level, depth=round(depth, 1))
    return None, DRAFT_NOT_COUNTED


def whatif_speedups(curve: CostCurve, rows: list, run: RunCost | None = None, run_row: dict | None = None) -> list:
    """The what-if rows (dicts with name, family, nodes, tau, …) with a predicted speedup each, ranked by
    it, best first: `speedup` = τ ÷ the step's cost in AR steps, where the step verifies the row's nodes
    plus the root (`curve`) and drafts for `draft_ms` (`row_draft_ms`; unknown counts as 0 and says so in
    `draft_how`). `run_row`, when given, is added as the run itself, priced per step (`run.predicted`)."""
    out = []
    for row in rows:
        ms, how = row_draft_ms(row, run)
        out.append({**row, "speedup": predicted_speedup(curve, row["tau"], row["nodes"], ms or 0.0),
                    "draft_ms": ms, "draft_how": how,
                    "verify_cost": curve.relative(float(row["nodes"]) + 1)})
    if run is not None and run_row is not None:
        out.append({"family": "this run", "nodes": run.nodes_per_step, "tau": run.tokens_per_step,
                    "steps": run.steps, "tokens": run.tokens, "depth": None, **run_row,
                    "speedup": run.predicted, "draft_ms": run.draft_ms_per_step, "draft_how": DRAFT_MEASURED,
                    "verify_cost": run.verify_ms / run.steps / run.ar_ms, "is_run": True})
    return sorted(out, key=lambda r: -r["speedup"])
