"""Wall-clock timing for kernel benchmarks: CUDA events on GPU, perf_counter elsewhere."""
from __future__ import annotations

import time

import torch


def median_ms(fn, device: torch.device | str, warmup: int = 3, reps: int = 20) -> float:
    """Median milliseconds of `fn()` over `reps` calls after `warmup` calls."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2]
