"""Kernels behind live decoding and the fast path.

Each op is a folder with a plain PyTorch `reference.py`, a Triton `triton.py`
and an `__init__` that dispatches between them (see `backend`). The reference
is the specification: the Triton kernel is tested against it on odd shapes.
"""
from .backend import active_backend, backend_for, force_backend, triton_available

__all__ = ["active_backend", "backend_for", "force_backend", "triton_available"]
