"""Per-row statistics of a softmax over the vocabulary, in plain PyTorch: the specification.

A kernel reads R * V logits and writes 5 * R numbers (four float32 statistics and an
int64 argmax per row). This reference makes several passes and float32 copies of the
logits; the Triton kernel reads them twice and keeps nothing of size V.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class LogitStats(NamedTuple):
    """Each field is [R], on the logits' device."""

    max_prob: torch.Tensor
    argmax: torch.Tensor
    top2_gap: torch.Tensor
    entropy: torch.Tensor
    logsumexp: torch.Tensor


def check_args(logits: torch.Tensor, temperature: float) -> float:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [R, V]; got shape {tuple(logits.shape)}")
    if logits.shape[1] == 0:
        raise ValueError("logits have an empty vocabulary (V == 0)")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point; got {logits.dtype}")
    temperature = float(temperature)
    # a temperature of zero or below has no softmax; greedy callers want argmax alone
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    # the maths multiplies by 1 / temperature in float32, which must stay finite
    if 1.0 / temperature > torch.finfo(torch.float32).max:
        raise ValueError(f"temperature {temperature} is too small for float32")
    return temperature


def logit_stats(logits: torch.Tensor, temperature: float = 1.0) -> LogitStats:
    """max prob, argmax (lowest index on ties), p1 - p2, entropy in nats and logsumexp of logits / temperature."""
    temperature = check_args(logits, temperature)
    # a multiply by the float32 reciprocal rounds the same everywhere; Triton's float32
    # division on CUDA is approximate and could reorder near-equal logits
    scaled = logits.float() * (1.0 / temperature)
    lse = torch.logsumexp(scaled, dim=-1)
    log_probs = scaled - lse[:, None]
    probs = log_probs.exp()
    # -inf logits have probability 0 and contribute 0 * log 0 = 0 to the entropy, not nan
    entropy = -torch.where(probs > 0, probs * log_probs, 0.0).sum(dim=-1)
    # torch.argmax returns the first maximal index; a tie for the top makes the gap 0
    argmax = scaled.argmax(dim=-1)
    top = scaled.topk(min(2, scaled.shape[1]), dim=-1).values
    max_prob = torch.exp(top[:, 0] - lse)
    second_prob = torch.exp(top[:, 1] - lse) if top.shape[1] > 1 else torch.zeros_like(max_prob)
    return LogitStats(max_prob, argmax, max_prob - second_prob, entropy, lse)
