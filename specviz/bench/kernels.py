"""`python -m specviz bench kernels`: every kernel against its reference, and the verify-cost curve.

Ratios are measured side by side in one run. `ratio` is reference time ÷
Triton time (above 1: the kernel is faster); the tree-attention reference is
torch's SDPA with an explicit mask. Off CUDA only the references are timed.
"""
from __future__ import annotations

import torch

from ..runs.costs import measure_cost_curve
from ..kernels.backend import backend_for

TREE_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def kernel_rows(device, full: bool = False) -> list[dict]:
    from ..kernels.kv_compact.bench import bench_rows as kv_rows
    from ..kernels.logit_stats.bench import bench_rows as stats_rows
    from ..kernels.tree_attention.bench import bench_rows as attention_rows
    from ..kernels.tree_verify.bench import bench_rows as verify_rows

    heads = ((9, 3, 64), (32, 8, 128)) if full or torch.device(device).type == "cuda" else ((9, 3, 64),)
    return [*attention_rows(device, heads), *verify_rows(device), *kv_rows(device), *stats_rows(device)]


def verify_cost(model, context: int = 512, sizes=TREE_SIZES, reps: int = 10) -> list[dict]:
    """Target forward time against tree size, through the decoder's own scoring call: the cost model's
    curve (`decoding.costs.measure_cost_curve`), as rows."""
    curve = measure_cost_curve(model, "", context, sizes, reps)
    return [{"nodes": n, "forward_ms": ms, "vs_one_token": ms / curve.ar_ms}
            for n, ms in zip(curve.tokens, curve.forward_ms)]


def print_kernel_rows(rows: list[dict]) -> None:
    print(f"{'kernel':<16}{'shape':<52}{'reference ms':>13}{'triton ms':>11}{'ratio':>8}{'naive ms':>10}")
    for r in rows:
        tri = f"{r['triton_ms']:.3f}" if r.get("triton_ms") else "-"
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else "-"
        naive = f"{r['naive_ms']:.3f}" if r.get("naive_ms") is not None else ""
        print(f"{r['kernel']:<16}{r['shape']:<52}{r['reference_ms']:>13.3f}{tri:>11}{ratio:>8}{naive:>10}")


def print_verify_cost(rows: list[dict], model_id: str, context: int, device) -> None:
    print(f"\nverify cost on {model_id}, {context}-token prefix, {backend_for(device)} kernels on {device}:")
    print(f"{'tree nodes':>10}{'forward ms':>12}{'vs 1 token':>12}")
    for r in rows:
        print(f"{r['nodes']:>10}{r['forward_ms']:>12.2f}{r['vs_one_token']:>11.2f}x")
