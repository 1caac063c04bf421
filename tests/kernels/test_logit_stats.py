"""logit_stats: the Triton kernel (in the interpreter without a GPU) against the PyTorch reference."""
import subprocess
import sys

import pytest
import torch

from specviz.kernels import backend_for, force_backend
from specviz.kernels.logit_stats import LogitStats, logit_stats, reference

triton_impl = pytest.importorskip("specviz.kernels.logit_stats.triton")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (rows, V): a full-size vocabulary on a couple of rows, odd sizes elsewhere
SHAPES = [(1, 1), (63, 2), (129, 97), (63, 1000), (1, 49152), (2, 49152)]


def nan_out(rows: int, device="cpu") -> LogitStats:
    """Output buffers that fail the checks wherever the kernel does not write."""
    def nan():
        return torch.full((rows,), float("nan"), device=device)

    return LogitStats(nan(), torch.full((rows,), -1, dtype=torch.int64, device=device), nan(), nan(), nan())


def make_logits(rows, vocab, dtype, seed=0, device="cpu"):
    generator = torch.Generator(device=device).manual_seed(seed)
    return (4 * torch.randn(rows, vocab, generator=generator, device=device)).to(dtype)


def assert_matches(got: LogitStats, want: LogitStats):
    for name in LogitStats._fields:
        g, w = getattr(got, name), getattr(want, name)
        assert g.shape == w.shape and g.dtype == w.dtype and g.device == w.device, name
        if name != "argmax":
            assert not g.isnan().any(), f"{name} has nan"
    assert (got.argmax >= 0).all(), "argmax left unwritten"
    assert torch.equal(got.argmax, want.argmax)
    # the inputs are upcast exactly and all maths is float32 in both, whatever the input
    # dtype, so one float32 tolerance fits every dtype; only summation order differs
    for name in ("max_prob", "top2_gap"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-6, msg=name)
    for name in ("entropy", "logsumexp"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5, atol=2e-5, msg=name)


def run_triton(logits, temperature=1.0, block_v=None):
    return triton_impl.logit_stats(logits, temperature, out=nan_out(logits.shape[0], logits.device), block_v=block_v)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows,vocab", SHAPES)
def test_matches_reference(rows, vocab, dtype):
    logits = make_logits(rows, vocab, dtype, seed=rows * vocab)
    assert_matches(run_triton(logits), reference.logit_stats(logits))


@pytest.mark.parametrize("temperature", [0.3, 1.7])
def test_temperature(temperature):
    logits = make_logits(63, 1000, torch.bfloat16)
    assert_matches(run_triton(logits, temperature), reference.logit_stats(logits, temperature))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_rows(dtype):
    wide = make_logits(63, 1200, dtype)
    # rows 1200 apart, last dim contiguous: the kernel reads them in place
    logits = wide[:, 7:1007]
    assert logits.stride() == (1200, 1)
    assert_matches(run_triton(logits), reference.logit_stats(logits))
    # a transposed view has no contiguous last dim; the wrapper copies it
    logits = make_logits(97, 63, dtype).t()
    assert_matches(run_triton(logits), reference.logit_stats(logits))


def test_ties_go_to_the_lowest_index():
    # small blocks make each lane see several values, so ties inside one lane, across lanes
    # and across blocks all occur
    logits = torch.randn(8, 1000)
    top = 10.0
    ties = [[3, 67], [900, 5, 131], [64, 0], [999, 998], [40, 41, 42, 43], [500, 564, 628], [1], [7, 7 + 128]]
    for row, positions in enumerate(ties):
        logits[row, positions] = top
    want = reference.logit_stats(logits)
    assert want.argmax.tolist() == [min(p) for p in ties]
    assert (want.top2_gap[[r for r, p in enumerate(ties) if len(p) > 1]] == 0).all()
    for block_v in (64, 128, 1024):
        assert_matches(run_triton(logits, block_v=block_v), want)


def test_torch_argmax_rule_is_first_index():
    # the reference inherits torch.argmax's rule; make sure it is the documented one
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert torch.argmax(x, dim=-1).tolist() == [1, 0]


def test_masked_vocabulary():
    logits = make_logits(5, 97, torch.float32)
    logits[0, :] = float("-inf")
    logits[0, 40] = 1.0
    logits[1, ::2] = float("-inf")
    logits[2, 90:] = float("-inf")
    logits[3, 1:] = float("-inf")
    logits[3, 0] = -5.0
    want = reference.logit_stats(logits)
    assert want.max_prob[0] == 1 and want.entropy[0] == 0 and want.top2_gap[0] == 1
    assert_matches(run_triton(logits, block_v=32), want)


def test_single_token_vocabulary():
    logits = make_logits(3, 1, torch.float16)
    got = run_triton(logits)
    assert got.max_prob.tolist() == [1.0] * 3 and got.top2_gap.tolist() == [1.0] * 3
    assert got.entropy.tolist() == [0.0] * 3 and got.argmax.tolist() == [0] * 3


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), 1e-45])
def test_bad_temperature(temperature):
    logits = make_logits(2, 5, torch.float32)
    for fn in (reference.logit_stats, triton_impl.logit_stats, logit_stats):
        with pytest.raises(ValueError):
            fn(logits, temperature)


def test_dispatch_cpu_is_reference(monkeypatch):
    calls = []
    monkeypatch.setattr(reference, "logit_stats", lambda *a: calls.append("reference"))
    monkeypatch.setattr(triton_impl, "logit_stats", lambda *a: calls.append("triton"))
    with force_backend("auto"):
        assert backend_for("cpu") == "reference"
        logit_stats(make_logits(2, 5, torch.float32))
    assert calls == ["reference"]


def test_forced_triton_runs_the_kernel(monkeypatch):
    calls = []
    kernel = triton_impl.logit_stats

    def spy(*args):
        calls.append("triton")
        return kernel(*args)

    monkeypatch.setattr(triton_impl, "logit_stats", spy)
    logits = make_logits(63, 97, torch.bfloat16)
    with force_backend("triton"):
        got = logit_stats(logits, 0.8)
    assert calls == ["triton"]
    assert_matches(got, reference.logit_stats(logits, 0.8))


def test_imports_without_triton():
    # a None entry in sys.modules makes `import triton` fail, as on a machine without it
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from specviz.kernels.logit_stats import logit_stats\n"
        "print(logit_stats(torch.randn(2, 7)).argmax.shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torch.Size([2])" in result.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows,vocab", [(256, 151936), (1, 151936), (129, 49152), (63, 1000)])
def test_full_shapes_on_cuda(rows, vocab, dtype):
    logits = make_logits(rows, vocab, dtype, device="cuda")
    for temperature in (1.0, 0.6):
        want = reference.logit_stats(logits, temperature)
        assert_matches(run_triton(logits, temperature), want)
    with force_backend("auto"):
        assert_matches(logit_stats(logits), reference.logit_stats(logits))
