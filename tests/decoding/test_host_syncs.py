"""The hot path reads the device back once per step: the decision (and, when recording, the record) in one
transfer, plus one read per drafted tree level for drafters whose next level depends on the last one.

On a GPU every device→host read (`.cpu()`, `.tolist()`, `.item()`, `float(t)`, `if t:` …) stalls the host
until the queued kernels finish. These tests count such calls during engine steps on CPU tensors, where
they are the same calls that would sync on a GPU. A tensor built from host data (`torch.from_numpy`,
`torch.tensor`) or returned by a counted read is host-side: reading it again is free and not counted.
The kernels are not counted: on CUDA they run Triton with no host sync; on the CPU their PyTorch
references are specifications, not the engine's hot path. `.to(cpu)` counts only in specviz's own code:
on CPU tensors a model's `buffer.to(x.device)` looks the same, and on a GPU it stays on the device.
"""
from __future__ import annotations

import functools
import sys
import traceback
import weakref

import numpy as np
import pytest
import torch

from specviz.config import SamplingConfig
from specviz.decoding.engine import SpeculativeDecoder
from specviz.decoding.registry import METHODS, get_method

from ..conftest import PROMPTS, tiny_drafter, tiny_knobs, tiny_settings

# drafters that draft without a model, or from the target's own last forward: no read of their own
MODEL_FREE = {"ar", "prompt_lookup", "ngram_tree", "retrieval", "jacobi"}
READS = ("cpu", "tolist", "item", "numpy", "__float__", "__int__", "__bool__", "__index__")


class HostReads:
    """Counts device→host reads while active; `sites` says where each came from (first frame in specviz)."""

    def __init__(self):
        self.count = 0
        self.sites: list = []
        self.active = False
        self._host: dict = {}  # id -> weak reference of the tensors that hold host data already

    def mark(self, t):
        if isinstance(t, torch.Tensor):
            key = id(t)
            self._host[key] = weakref.ref(t, lambda _, key=key: self._host.pop(key, None))
        return t

    def is_host(self, t) -> bool:
        ref = self._host.get(id(t))
        return ref is not None and ref() is t

    def hit(self, t, what: str) -> bool:
        if not self.active or self.is_host(t):
            return False
        ours = [f"{f.filename.split('/specviz/')[-1]}:{f.lineno}" for f in traceback.extract_stack()[:-2]
                if "/specviz/" in f.filename]
        if ours and ours[-1].startswith("kernels/"):
            return False  # inside a kernel's dispatch or reference (see the module doc)
        self.count += 1
        self.sites.append(f"{what} at {' < '.join(ours[::-1][:2])}")
        return True


@pytest.fixture
def reads(monkeypatch):
    return patch_reads(monkeypatch)


def patch_reads(monkeypatch) -> HostReads:
    """Patch every device→host read, and the factories of host tensors, to go through one counter."""
    counter = HostReads()

    def reader(name, original, reads_back=lambda *args, **kwargs: True):
        @functools.wraps(original)
        def wrapped(self, *args, **kwargs):
            counted = reads_back(*args, **kwargs) and counter.hit(self, name)
            out = original(self, *args, **kwargs)
            if counted or counter.is_host(self):
                counter.mark(out)
            return out
        return wrapped

    def to_cpu(*args, **kwargs) -> bool:
        target = kwargs.get("device", args[0] if args else None)
        # only our own code's: a model's `buffer.to(x.device)` stays on the device on a GPU
        ours = "/specviz/" in sys._getframe(2).f_code.co_filename
        return ours and isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu"

    def host_factory(original):
        @functools.wraps(original)
        def wrapped(*args, **kwargs):
            return counter.mark(original(*args, **kwargs))
        return wrapped

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, reader(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch.Tensor, "to", reader(".to(cpu)", torch.Tensor.to, to_cpu))
    for name in ("from_numpy", "tensor", "as_tensor"):
        monkeypatch.setattr(torch, name, host_factory(getattr(torch, name)))
    return counter


def count_steps(reads: HostReads, tiny, name: str, record: bool, sampling: SamplingConfig, n_new: int = 12):
    """[(host reads, drafter forwards)] for each step of one run."""
    m = get_method(name)
    drafter = tiny_drafter(m, tiny, sampling)
    dec = SpeculativeDecoder(tiny, drafter, PROMPTS[0], tiny_settings(name, n_new, sampling, tiny_knobs(m)),
                             record=record)
    out = []
    while not dec.done:
        before = reads.count
        reads.active = True
        try:
            step = dec.step()
        finally:
            reads.active = False
        out.append((reads.count - before, step.draft_forwards))
    return out, dec


def budget(name: str, record: bool, draft_forwards: int) -> int:
    engine = 2 if record else 1
    return engine if name in MODEL_FREE else engine + draft_forwards


@pytest.mark.parametrize("record", [False, True], ids=["plain", "recording"])
@pytest.mark.parametrize("sampling", [SamplingConfig(), SamplingConfig(0.8, 0.95, 3)], ids=["greedy", "sampled"])
@pytest.mark.parametrize("name", list(METHODS))
def test_one_host_read_per_step(reads, tiny, name, sampling, record):
    per_step, dec = count_steps(reads, tiny, name, record, sampling)
    over = [(k, n, budget(name, record, f)) for k, (n, f) in enumerate(per_step) if n > budget(name, record, f)]
    assert not over, f"{name}: steps over their budget (step, reads, budget): {over}; reads at {reads.sites}"
    # the counter sees the decision read: no step goes without one
    assert all(n >= 1 for n, _ in per_step)


def test_the_counter_sees_reads(reads):
    """The counter counts what would sync on a GPU and ignores host data."""
    dev = torch.zeros(3)  # made on "the device"
    host = torch.from_numpy(np.arange(3))
    reads.active = True
    dev.tolist(), float(dev[0]), dev.cpu().numpy(), bool(dev.any())
    host.tolist(), host.numpy(), torch.tensor([1, 2]).tolist(), dev.to("cpu")  # `.to` counts in specviz only
    reads.active = False
    assert reads.count == 4, reads.sites
