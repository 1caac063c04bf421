"""kv_compact: the Triton kernel (in the interpreter without a GPU) against the PyTorch reference."""
import subprocess
import sys

import pytest
import torch

from specviz.kernels import backend_for, force_backend
from specviz.kernels.kv_compact import kv_compact, reference

triton_impl = pytest.importorskip("specviz.kernels.kv_compact.triton")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
PLANES = (3, 2, 1, 2)
SEQ = 331


def accepted(pattern: str, n: int, prefix_len: int, S: int, seed: int = 0) -> torch.Tensor:
    """src positions, strictly increasing with src[i] >= prefix_len + i, in several layouts."""
    generator = torch.Generator().manual_seed(seed)
    o_i = torch.arange(n)
    if pattern == "random":
        window = S - prefix_len
        return prefix_len + torch.randperm(window, generator=generator)[:n].sort().values
    if pattern == "shift":
        # every destination row is the source of the row before it: the tightest overlap
        return prefix_len + o_i + 1
    if pattern == "tail":
        return S - n + o_i
    if pattern == "half_in_place":
        return prefix_len + o_i + (o_i >= n // 2) * 3
    raise ValueError(pattern)


def make_slab(D, dtype, src, prefix_len, seed=0):
    """Random rows; every row past the prefix that is no source is nan, so reading it shows."""
    generator = torch.Generator().manual_seed(seed)
    slab = torch.randn(*PLANES, SEQ, D, generator=generator).to(dtype)
    poison = torch.ones(SEQ, dtype=torch.bool)
    poison[:prefix_len] = False
    poison[src] = False
    slab[..., poison, :] = float("nan")
    return slab


def check_compacted(got, old, prefix_len, src):
    n = src.numel()
    region = got[..., prefix_len : prefix_len + n, :]
    # a nan here is a row read from a non-source or a destination never written
    assert not region.isnan().any(), "compacted rows hold nan"
    assert torch.equal(region, old.index_select(-2, src))
    torch.testing.assert_close(got[..., :prefix_len, :], old[..., :prefix_len, :], rtol=0, atol=0)
    torch.testing.assert_close(
        got[..., prefix_len + n :, :], old[..., prefix_len + n :, :], rtol=0, atol=0, equal_nan=True
    )


def run_both(D, dtype, n, pattern, prefix_len=None, block_n=None):
    if prefix_len is None:
        prefix_len = (SEQ - 2 * n - 1) // 2
    src = accepted(pattern, n, prefix_len, SEQ, seed=n + D)
    old = make_slab(D, dtype, src, prefix_len, seed=n * D)
    got, want = old.clone(), old.clone()
    triton_impl.kv_compact(got, prefix_len, src, block_n=block_n)
    reference.kv_compact(want, prefix_len, src)
    check_compacted(got, old, prefix_len, src)
    check_compacted(want, old, prefix_len, src)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", [40, 64])
@pytest.mark.parametrize("n", [1, 63, 129])
def test_matches_reference(n, D, dtype):
    run_both(D, dtype, n, "random")


@pytest.mark.parametrize("pattern", ["shift", "tail", "half_in_place"])
@pytest.mark.parametrize("n", [1, 63, 129])
def test_overlapping_layouts(n, pattern):
    run_both(40, torch.bfloat16, n, pattern)


@pytest.mark.parametrize("block_n", [4, 16])
@pytest.mark.parametrize("pattern", ["random", "shift", "half_in_place"])
def test_row_chunks_in_order(pattern, block_n):
    # the GPU splits n into chunks inside one program; several chunks must still read
    # every source before its row is overwritten
    run_both(64, torch.float16, 129, pattern, block_n=block_n)


def test_prefix_zero_and_full_sequence():
    run_both(40, torch.float32, 129, "random", prefix_len=0)
    run_both(40, torch.float32, 129, "tail", prefix_len=SEQ - 129 - 5)


def test_in_place_rows_are_left_alone(monkeypatch):
    prefix_len, n = 100, 63
    src = torch.arange(prefix_len, prefix_len + n)
    old = make_slab(64, torch.float32, src, prefix_len)
    got = old.clone()
    triton_impl.kv_compact(got, prefix_len, src)
    torch.testing.assert_close(got, old, rtol=0, atol=0, equal_nan=True)
    # the dispatcher sees a host-side identity and launches nothing at all
    monkeypatch.setattr(reference, "kv_compact", lambda *a: pytest.fail("reference ran"))
    monkeypatch.setattr(triton_impl, "kv_compact", lambda *a: pytest.fail("triton ran"))
    with force_backend("triton"):
        kv_compact(got, prefix_len, src)


def test_bad_arguments():
    slab = torch.zeros(2, 20, 8)
    for fn in (reference.kv_compact, triton_impl.kv_compact):
        with pytest.raises(ValueError):
            fn(slab, 15, torch.arange(16, 22))
        with pytest.raises(ValueError):
            fn(slab, 2, torch.arange(3, 6, dtype=torch.int32))
        with pytest.raises(ValueError):
            fn(slab, -1, torch.arange(3, 6))
    with pytest.raises(ValueError):
        triton_impl.kv_compact(slab.transpose(0, 1), 2, torch.arange(3, 6))


def test_non_contiguous_slab_falls_back_to_reference():
    base = torch.randn(SEQ, 2, 3, 40)
    slab = base.permute(1, 2, 0, 3)
    assert not slab.is_contiguous()
    src = accepted("random", 63, 50, SEQ)
    old = slab.clone()
    with force_backend("triton"):
        kv_compact(slab, 50, src)
    check_compacted(slab, old, 50, src)


def test_dispatch_cpu_is_reference(monkeypatch):
    calls = []
    monkeypatch.setattr(reference, "kv_compact", lambda *a: calls.append("reference"))
    monkeypatch.setattr(triton_impl, "kv_compact", lambda *a: calls.append("triton"))
    with force_backend("auto"):
        assert backend_for("cpu") == "reference"
        kv_compact(torch.zeros(2, 20, 8), 2, torch.tensor([3, 5]))
    assert calls == ["reference"]


def test_forced_triton_runs_the_kernel(monkeypatch):
    calls = []
    kernel = triton_impl.kv_compact

    def spy(*args):
        calls.append("triton")
        return kernel(*args)

    monkeypatch.setattr(triton_impl, "kv_compact", spy)
    prefix_len = 101
    src = accepted("random", 63, prefix_len, SEQ)
    old = make_slab(40, torch.bfloat16, src, prefix_len)
    got = old.clone()
    with force_backend("triton"):
        kv_compact(got, prefix_len, src)
    assert calls == ["triton"]
    check_compacted(got, old, prefix_len, src)


def test_imports_without_triton():
    # a None entry in sys.modules makes `import triton` fail, as on a machine without it
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from specviz.kernels.kv_compact import kv_compact\n"
        "slab = torch.arange(10.0).reshape(1, 5, 2)\n"
        "kv_compact(slab, 1, torch.tensor([2, 4]))\n"
        "print(slab[0, :, 0].tolist())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "[0.0, 4.0, 8.0, 6.0, 8.0]" in result.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 8, 64, 256, 257])
@pytest.mark.parametrize("D", [64, 128, 40])
def test_full_slab_on_cuda(n, D, dtype):
    S, prefix_len = 8192, 5000
    generator = torch.Generator().manual_seed(n)
    src = (prefix_len + torch.randperm(3 * n, generator=generator)[:n].sort().values).cuda()
    old = torch.randn(30, 2, 1, 3, S, D, device="cuda").to(dtype)
    got, want = old.clone(), old.clone()
    triton_impl.kv_compact(got, prefix_len, src)
    reference.kv_compact(want, prefix_len, src)
    assert torch.equal(got, want)
    assert torch.equal(got[..., prefix_len : prefix_len + n, :], old.index_select(-2, src))
    shifted = old.clone()
    triton_impl.kv_compact(shifted, prefix_len, torch.arange(n, device="cuda") + prefix_len + 1)
    assert torch.equal(shifted[..., prefix_len : prefix_len + n, :], old[..., prefix_len + 1 : prefix_len + n + 1, :])
    with force_backend("auto"):
        kv_compact(old, prefix_len, src)
    assert torch.equal(old, want)
