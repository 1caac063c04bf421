"""Timings of logit_stats: the PyTorch reference against the Triton kernel."""
from __future__ import annotations

import torch

from ..backend import interpreting, triton_available
from ..timing import median_ms
from . import reference

ROWS = (1, 64, 256)
VOCABS = (49152, 151936)


def bench_rows(device: torch.device | str) -> list[dict]:
    """One dict per (dtype, rows, V); triton_ms and ratio are None where Triton is not timed."""
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    # the interpreter's timings say nothing about the kernel
    time_triton = on_cuda and triton_available() and not interpreting()
    dtypes = (torch.float32, torch.bfloat16) if on_cuda else (torch.float32,)
    # a 256 x 152k reference takes a good fraction of a second on a small CPU
    counts = {"warmup": 3, "reps": 20} if on_cuda else {"warmup": 1, "reps": 3}
    if time_triton:
        from . import triton as triton_impl
    generator = torch.Generator(device=device).manual_seed(0)
    out = []
    for dtype in dtypes:
        for rows in ROWS:
            for vocab in VOCABS:
                logits = (4 * torch.randn(rows, vocab, device=device, generator=generator)).to(dtype)
                reference_ms = median_ms(lambda: reference.logit_stats(logits), device, **counts)
                triton_ms = None
                if time_triton:
                    triton_ms = median_ms(lambda: triton_impl.logit_stats(logits), device, **counts)
                out.append({
                    "kernel": "logit_stats",
                    "shape": f"{rows}x{vocab} {str(dtype).removeprefix('torch.')}",
                    "reference_ms": reference_ms,
                    "triton_ms": triton_ms,
                    "ratio": reference_ms / triton_ms if triton_ms else None,
                })
                del logits
    return out
