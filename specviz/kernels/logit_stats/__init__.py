"""Per-row softmax statistics of logits: max prob, argmax, top-2 gap, entropy, logsumexp.

They feed the confidence views and the diffusion schedules. CUDA tensors run the Triton
kernel, anything else the PyTorch reference (see `specviz.kernels.backend`).
"""
from __future__ import annotations

import torch

from ..backend import backend_for
from . import reference
from .reference import LogitStats


def logit_stats(logits: torch.Tensor, temperature: float = 1.0) -> LogitStats:
    """Statistics of softmax(logits / temperature) for logits [R, V]; each field is [R].

    max_prob, top2_gap, entropy (nats) and logsumexp are float32, argmax int64 (the lowest
    index on ties). All maths is in float32 whatever the logits' dtype; temperature > 0.
    """
    if backend_for(logits.device) == "triton":
        # imported here so that the package imports without triton installed
        from . import triton as triton_impl

        return triton_impl.logit_stats(logits, temperature)
    return reference.logit_stats(logits, temperature)


__all__ = ["LogitStats", "logit_stats"]
