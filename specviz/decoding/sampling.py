"""Turning logits into the distribution a run samples from.

Target and drafter both go through `processed_probs`, so speculative sampling
is lossless with respect to exactly the distribution plain sampling uses
(temperature, then top-p).
"""
from __future__ import annotations

import torch

from ..config import SamplingConfig


def processed_probs(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """[..., V] logits -> [..., V] float32 probabilities.

    Greedy runs (temperature 0) get the plain softmax: decisions use the argmax,
    and the softmax is what the views show as "probability".
    """
    logits = logits.float()
    if sampling.greedy:
        return torch.softmax(logits, dim=-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        probs = top_p_filter(probs, sampling.top_p)
    return probs


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p, renormalised."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    # the most likely token always survives, since the mass before it is 0
    keep_sorted = mass_before < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    filtered = probs * keep
    return filtered / filtered.sum(dim=-1, keepdim=True)


def sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of [..., V] probabilities; returns [...] long."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def sample_without_replacement(probs: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct tokens from [V] probabilities, in the order sequential sampling without
    replacement would draw them (Gumbel-top-k: perturb log p with Gumbel noise, take the top k).

    k is capped at the number of tokens with non-zero probability."""
    k = min(k, int((probs > 0).sum()))
    u = torch.rand(probs.shape, generator=generator, device=probs.device).clamp_(1e-20, 1.0)
    keys = probs.log() - (-u.log()).log()
    return keys.topk(k).indices


def without_replacement_proposal(probs: torch.Tensor, drawn_before) -> torch.Tensor:
    """The distribution the next without-replacement draw came from: `probs` minus the tokens already drawn."""
    q = probs.clone()
    if len(drawn_before):
        q[list(drawn_before)] = 0.0
    return q / q.sum()
