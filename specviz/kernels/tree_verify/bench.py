"""Timings of tree_verify: the PyTorch reference against the Triton kernels, one tree (B = 1) as the decoder runs it."""
from __future__ import annotations

import torch

from ..backend import interpreting, triton_available
from ..timing import median_ms
from . import reference

NODES = (1, 16, 64, 256)
VOCABS = (49152, 151936)


def example_tree(n_nodes: int, vocab: int, sampled: bool, device: torch.device, seed: int = 0):
    """(logits, tokens, parent, proposals, uniforms) for one random tree whose tokens are half the
    time the target's argmax after their parent, so that the walk goes a few levels deep."""
    g = torch.Generator(device=device).manual_seed(seed)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    logits = (4 * torch.randn(1, n_nodes, vocab, device=device, generator=g)).to(dtype)
    host = torch.Generator().manual_seed(seed)
    parent = torch.tensor([[-1] + [int(torch.randint(0, i, (), generator=host)) for i in range(1, n_nodes)]])
    parent = parent.to(device)
    tokens = torch.randint(0, vocab, (1, n_nodes), device=device, generator=g)
    target_next = logits.float().argmax(-1).gather(1, parent.clamp_min(0))
    tokens = torch.where(torch.rand(1, n_nodes, device=device, generator=g) < 0.5, target_next, tokens)
    if not sampled:
        return logits, tokens, parent, None, None
    proposals = torch.softmax(4 * torch.randn(1, n_nodes, vocab, device=device, generator=g), dim=-1)
    uniforms = torch.rand(1, n_nodes + 1, device=device, generator=g)
    return logits, tokens, parent, proposals, uniforms


def bench_rows(device: torch.device | str) -> list[dict]:
    """One dict per (nodes, V, greedy or sampled); triton_ms and ratio are None where Triton is not timed."""
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    # the interpreter's timings say nothing about the kernel
    time_triton = on_cuda and triton_available() and not interpreting()
    # a 256 x 152k reference takes a good fraction of a second on a small CPU
    counts = {"warmup": 3, "reps": 20} if on_cuda else {"warmup": 1, "reps": 3}
    if time_triton:
        from . import triton as triton_impl
    out = []
    for n_nodes in NODES:
        for vocab in VOCABS:
            for sampled in (False, True):
                args = example_tree(n_nodes, vocab, sampled, device)
                temperature = 1.0 if sampled else 0.0
                logits, tokens, parent, proposals, uniforms = args
                reference_ms = median_ms(
                    lambda: reference.tree_verify(logits, tokens, parent, temperature, proposals, uniforms),
                    device,
                    **counts,
                )
                triton_ms = None
                if time_triton:
                    triton_ms = median_ms(
                        lambda: triton_impl.tree_verify(logits, tokens, parent, temperature, proposals, uniforms),
                        device,
                        **counts,
                    )
                out.append({
                    "kernel": "tree_verify",
                    "shape": f"1x{n_nodes}x{vocab} {str(logits.dtype).removeprefix('torch.')} "
                    + ("sampled" if sampled else "greedy"),
                    "reference_ms": reference_ms,
                    "triton_ms": triton_ms,
                    "ratio": reference_ms / triton_ms if triton_ms else None,
                })
                del args, logits, proposals
    return out
