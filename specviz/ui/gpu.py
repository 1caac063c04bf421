"""ZeroGPU: on a ZeroGPU Space a GPU is attached only while a function decorated with `spaces.GPU` runs.

`on_gpu(duration_s)` is that decorator on a Space where the `spaces` package is importable, and the identity
everywhere else: `spaces` is never imported off a Space (it patches torch's CUDA set-up when imported), so there
is no import error and no change of behaviour on a local server or a GPU box.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from .space import on_space


def _identity(fn: Callable) -> Callable:
    return fn


def on_gpu(duration_s: int = 60, environ: Mapping[str, str] | None = None) -> Callable[[Callable], Callable]:
    """A decorator asking ZeroGPU for a GPU for at most `duration_s` seconds per call (on a Space with `spaces`),
    else one that returns the function unchanged."""
    if not on_space(environ):
        return _identity
    try:
        spaces = importlib.import_module("spaces")
    except ImportError:
        return _identity
    return spaces.GPU(duration=duration_s)
