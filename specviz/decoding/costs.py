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
milliseconds as one AR step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
