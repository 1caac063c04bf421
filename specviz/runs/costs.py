"""The verify-cost curve of a loaded target on this machine, measured once and cached.

Measuring takes a few seconds on the embedded model, so a curve is kept in the model store for the
process and on disk (under the model cache, `SPECVIZ_CACHE`) for later starts. The disk key names the
model, device, dtype and context and the machine it was measured on (processor, torch version, threads):
a curve measured elsewhere, or under another torch, is measured again rather than trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform

import numpy as np
import torch

from ..decoding import kv
from ..decoding.costs import CostCurve
from ..decoding.drafters import NoDrafter
from ..decoding.engine import SpeculativeDecoder
from ..kernels.timing import median_ms
from ..kernels.tree_attention.bench import bushy_parent
from ..models.loading import cache_dir
from ..settings import RunSettings

CONTEXT = 256  # prefix tokens under the timed forwards: a typical prompt plus some output
# tokens scored per forward at which the curve is measured: AR's one, then the tree sizes that matter
CURVE_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


def measure_cost_curve(model, model_id: str, context: int = 256, sizes=CURVE_SIZES, reps: int = 5,
                       warmup: int = 2) -> CostCurve:
    """Time the target's forward against tokens scored, through the decoder's own scoring call: each size
    is scored as a bushy tree over a `context`-token prefix in the cache, then the cache is cut back,
    exactly as a verification step does before compaction."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, size=context + 1)
    dec = SpeculativeDecoder(model, NoDrafter(), prompt, RunSettings("ar", {}, 1))
    times = []
    with torch.inference_mode():
        dec.prefill()
        for n in sizes:
            parent = bushy_parent(n)
            tokens = torch.from_numpy(rng.integers(0, vocab, size=n)).to(device)

            def score():
                dec._score(tokens, parent, context)
                kv.truncate(dec.cache, context)

            times.append(round(median_ms(score, device, warmup=warmup, reps=reps), 4))  # as stored in JSON
    return CostCurve(model_id, str(device), str(dtype).replace("torch.", ""), int(context), tuple(int(s) for s in sizes),
                     tuple(times))


def machine() -> str:
    """What the timings depend on besides the model: processor, torch build and its threads, and whether
    float32 CPU forwards run the packed linear (SPECVIZ_FAST_LINEAR)."""
    from ..models import fast_linear

    cpu = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        cpu += f" + {torch.cuda.get_device_name(0)}"
    packed = " · packed CPU linear" if fast_linear.enabled() and fast_linear.available() else ""
    return f"{cpu} · torch {torch.__version__} · {torch.get_num_threads()} threads{packed}"


def _disk_path(key: tuple):
    digest = hashlib.sha256(json.dumps([str(k) for k in key]).encode()).hexdigest()[:16]
    return cache_dir() / "costs" / f"{digest}.json"


def _key(target, context: int) -> tuple:
    param = next(target.model.parameters())
    return (target.model_id, str(param.device), str(param.dtype), int(context), machine())


def on_disk(target, context: int | None = None) -> bool:
    """Whether a curve of `target` measured on this machine is cached on disk."""
    return _disk_path(_key(target, CONTEXT if context is None else context)).is_file()


def cost_curve(store, target, context: int | None = None, remeasure: bool = False) -> CostCurve:
    """The curve of `target` (a LoadedModel): from the store, else from disk, else measured now.
    `remeasure` measures again and replaces both copies."""
    context = CONTEXT if context is None else context
    key = _key(target, context)
    path = _disk_path(key)

    def build() -> CostCurve:
        if not remeasure and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("key") == [str(k) for k in key]:
                    return CostCurve.from_dict(data["curve"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a damaged file is measured again and rewritten
        curve = measure_cost_curve(target.model, target.model_id, context)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"key": [str(k) for k in key], "curve": curve.to_dict()}))
            tmp.replace(path)
        except OSError:
            pass  # an unwritable cache only means measuring again next start
        return curve

    if remeasure:
        curve = build()
        store.put("cost", key, curve)
        return curve
    return store.cached("cost", key, build)


def known_cost_curve(store, target, context: int | None = None) -> CostCurve | None:
    """The curve of `target` if one measured on this machine is cached on disk (read, not measured), else
    None: for showing a curve before a run has finished, without making anyone wait for a measurement."""
    if not on_disk(target, context):
        return None
    return cost_curve(store, target, context)
