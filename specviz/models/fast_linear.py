"""A faster linear layer for float32 forwards on the CPU: oneDNN with its weights packed once.

On the CPU, `F.linear` hands a forward of a few tokens to MKL's general matrix product, which is poor at
small M: scoring 2 tokens through the embedded model's LM head (49152 x 576) takes more than twice as
long as scoring one, and the whole forward 1.65x. oneDNN's inner-product primitive with its weights
reordered once into its blocked layout (`torch.ops.mkldnn._reorder_linear_weight` +
`_linear_pointwise`, what torch.compile's freezing uses on the CPU) streams the weights once whatever
M is. Measured on the embedded model (2-core CPU, 256-token prefix, interleaved in one process): one
token 56.7 -> 39.1 ms, 2 tokens 94.2 -> 45.6 ms, 16 tokens 91.1 -> 53.7 ms, 64 tokens 175 -> 127 ms.

The numbers are the model's own: a float32 product, summed in another order, so each output equals
`F.linear`'s up to float rounding (tested on odd shapes). Every method runs through the same layers, so
the engine's greedy-equals-AR guarantee is unchanged.

`install(model)` swaps the class of each `nn.Linear` to `PackedLinear` (a subclass: state_dict,
isinstance, `.to()` and deepcopy are unchanged). A layer takes the packed path only when all of these
hold, and is plain `F.linear` otherwise:

- the switch is on: SPECVIZ_FAST_LINEAR=0 turns it off at start-up, `set_enabled(False)` or the
  `disabled()` context at run time (e.g. transformers' own generate() as an outside baseline);
- the weight and input are float32 on the CPU (on CUDA, or in bf16/fp16, nothing changes);
- no gradient is wanted (training keeps autograd's `F.linear`);
- this torch has the oneDNN ops.

The packed copy is made on the first forward and made again if the weight changes (another tensor, or an
in-place update: its version counter moves). It costs one more copy of each weight in memory (about
500 MB for the embedded model, measured).
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

ENV = "SPECVIZ_FAST_LINEAR"
_enabled = os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def available() -> bool:
    """Whether this torch build has oneDNN and the prepacked linear ops."""
    try:
        ops = torch.ops.mkldnn
        return bool(torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
                    and hasattr(ops, "_linear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


def enabled() -> bool:
    """The switch's setting (SPECVIZ_FAST_LINEAR, or `set_enabled`)."""
    return _enabled


def set_enabled(on: bool) -> None:
    global _enabled
    _enabled = bool(on)


@contextlib.contextmanager
def disabled():
    """Run a block on plain `F.linear` (a stock baseline, or a comparison)."""
    previous = _enabled
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(previous)


class PackedLinear(nn.Linear):
    """nn.Linear whose float32 CPU forwards without gradients run oneDNN on a prepacked weight."""

    _packed: torch.Tensor | None = None
    _packed_key: tuple | None = None

    def __getstate__(self):
        # the packed copy is an opaque oneDNN tensor (no storage to copy or pickle): a copy packs its own
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state.pop("_packed", None)
        state.pop("_packed_key", None)
        return state

    def _packed_weight(self) -> torch.Tensor:
        w = self.weight
        try:
            version = w._version
        except RuntimeError:  # a weight made under inference_mode tracks no version: its identity must do
            version = -1
        key = (w.data_ptr(), version, tuple(w.shape))
        if self._packed_key != key:
            # a plain tensor even under inference_mode, so the layer serves both modes
            with torch.inference_mode(False), torch.no_grad():
                self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), None)
            self._packed_key = key
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (_enabled and x.dtype is torch.float32 and w.dtype is torch.float32 and x.device.type == "cpu"
                and w.device.type == "cpu" and x.numel() and not (torch.is_grad_enabled()
                                                                   and (x.requires_grad or w.requires_grad))):
            return torch.ops.mkldnn._linear_pointwise(x, self._packed_weight(), self.bias, "none", [], "")
        return F.linear(x, w, self.bias)


def install(model: nn.Module) -> nn.Module:
    """Give every nn.Linear of `model` the packed CPU path (idempotent; a no-op without oneDNN)."""
    if not available():
        return model
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = PackedLinear
    return model


def installed(model: nn.Module) -> bool:
    return any(isinstance(m, PackedLinear) for m in model.modules())
