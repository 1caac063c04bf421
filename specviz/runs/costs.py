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

import torch

from ..decoding.costs import CostCurve, measure_cost_curve
from ..models.loading import cache_dir

CONTEXT = 256  # prefix tokens under the timed forwards: a typical prompt plus some output


def machine() -> str:
    """What the timings depend on besides the model: processor, torch build and its threads."""
    cpu = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        cpu += f" + {torch.cuda.get_device_name(0)}"
    return f"{cpu} · torch {torch.__version__} · {torch.get_num_threads()} threads"


def _disk_path(key: tuple):
    digest = hashlib.sha256(json.dumps([str(k) for k in key]).encode()).hexdigest()[:16]
    return cache_dir() / "costs" / f"{digest}.json"


def cost_curve(store, target, context: int = CONTEXT, remeasure: bool = False) -> CostCurve:
    """The curve of `target` (a LoadedModel): from the store, else from disk, else measured now.
    `remeasure` measures again and replaces both copies."""
    param = next(target.model.parameters())
    key = (target.model_id, str(param.device), str(param.dtype), int(context), machine())
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
