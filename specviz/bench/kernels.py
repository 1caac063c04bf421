"""`python -m specviz bench kernels`: every kernel against its reference, and the verify-cost curve.

Ratios are measured side by side in one run. `ratio` is reference time ÷
Triton time (above 1: the kernel is faster); the tree-attention reference is
torch's SDPA with an explicit mask. Off CUDA only the references are timed.
"""
from __future__ import annotations

import numpy as np
import torch

from ..kernels.backend import backend_for
from ..kernels.timing import median_ms

TREE_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def kernel_rows(device, full: bool = False) -> list[dict]:
    from ..kernels.kv_compact.bench import bench_rows as kv_rows
    from ..kernels.logit_stats.bench import bench_rows as stats_rows
    from ..kernels.tree_attention.bench import bench_rows as attention_rows
    from ..kernels.tree_verify.bench import bench_rows as verify_rows

    heads = ((9, 3, 64), (32, 8, 128)) if full or torch.device(device).type == "cuda" else ((9, 3, 64),)
    return [*attention_rows(device, heads), *verify_rows(device), *kv_rows(device), *stats_rows(device)]


def verify_cost(model, context: int = 512, sizes=TREE_SIZES, reps: int = 10) -> list[dict]:
    """Target forward time against tree size, through the decoder's own scoring call.

    Each tree is scored over a `context`-token prefix in the cache, then the
    cache is cut back, exactly as a verification step does before compaction.
    """
    from ..settings import RunSettings
    from ..decoding import kv
    from ..decoding.drafters import NoDrafter
    from ..decoding.engine import SpeculativeDecoder
    from ..kernels.tree_attention.bench import bushy_parent

    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, size=context + 1)
    dec = SpeculativeDecoder(model, NoDrafter(), prompt, RunSettings("ar", {}, 1))
    rows = []
    with torch.inference_mode():
        dec.prefill()
        for n in sizes:
            parent = bushy_parent(n)
            tokens = torch.from_numpy(rng.integers(0, vocab, size=n)).to(device)

            def score():
                dec._score(tokens, parent, context)
                kv.truncate(dec.cache, context)

            rows.append({"nodes": n, "forward_ms": median_ms(score, device, warmup=2, reps=reps)})
    base = rows[0]["forward_ms"]
    for r in rows:
        r["vs_one_token"] = r["forward_ms"] / base
    return rows


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
