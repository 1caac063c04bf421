"""Which implementation of a kernel runs: Triton on CUDA, the PyTorch reference elsewhere.

The choice is per call, from the device of the tensors: a CUDA tensor runs the
Triton kernel when Triton imports, anything else runs the reference. A switch
forces one side:

- the environment variable SPECVIZ_KERNELS=reference (or =triton) at start-up;
- `force_backend("reference")` as a context manager, or `set_backend(...)`.

Forcing "triton" on CPU tensors only works under TRITON_INTERPRET=1, which is
how the tests run the kernels without a GPU.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch

BACKENDS = ("auto", "triton", "reference")
_choice = os.environ.get("SPECVIZ_KERNELS", "auto").strip().lower() or "auto"
if _choice not in BACKENDS:
    raise ValueError(f"SPECVIZ_KERNELS={_choice!r}; use one of {', '.join(BACKENDS)}")


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def set_backend(name: str) -> None:
    global _choice
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; use one of {', '.join(BACKENDS)}")
    _choice = name


def active_backend() -> str:
    """The switch's setting: auto, triton or reference."""
    return _choice


@contextlib.contextmanager
def force_backend(name: str):
    previous = _choice
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def backend_for(device: torch.device | str) -> str:
    """The implementation a call on this device runs: 'triton' or 'reference'."""
    device = torch.device(device)
    if _choice == "reference":
        return "reference"
    if _choice == "triton":
        if not triton_available():
            raise RuntimeError("SPECVIZ_KERNELS=triton but Triton does not import")
        if device.type != "cuda" and not interpreting():
            raise RuntimeError("Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 to run on the CPU")
        return "triton"
    return "triton" if device.type == "cuda" and triton_available() else "reference"
