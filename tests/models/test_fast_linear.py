"""The packed CPU linear (specviz/models/fast_linear.py): the model's numbers up to float rounding, its
switch, and the cases that keep plain F.linear."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from specviz.models import fast_linear
from specviz.models.loading import tiny_random_llama

pytestmark = pytest.mark.skipif(not fast_linear.available(), reason="this torch has no oneDNN linear ops")


def packed(k, n, bias, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=bias)
    fast_linear.install(lin)
    assert isinstance(lin, fast_linear.PackedLinear)
    return lin


def close(a, b):
    scale = b.abs().max().clamp_min(1e-6)
    return a.shape == b.shape and bool(((a - b).abs().max() / scale) < 2e-6 * max(1.0, np.sqrt(b.shape[-1])))


@pytest.mark.parametrize("k,n,bias", [(576, 49152, False), (37, 5, True), (1, 1, True), (96, 33, False),
                                      (1536, 576, False)])
@pytest.mark.parametrize("m", [1, 2, 3, 17])
def test_equals_f_linear_on_odd_shapes(k, n, bias, m):
    lin = packed(k, n, bias)
    for shape in [(m, k), (1, m, k), (2, m, k)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            got = lin(x)
        want = F.linear(x, lin.weight, lin.bias)
        assert close(got, want), (shape, (got - want).abs().max())
    assert lin._packed is not None  # it did take the packed path


def test_non_contiguous_input_and_no_grad_mode():
    lin = packed(40, 24, True)
    x = torch.randn(40, 7).t()  # a transposed view
    with torch.no_grad():
        assert close(lin(x), F.linear(x, lin.weight, lin.bias))


def test_switch_and_fallbacks():
    lin = packed(32, 16, True)
    x = torch.randn(3, 32)
    with torch.inference_mode(), fast_linear.disabled():
        assert not fast_linear.enabled()
        assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias))
    assert lin._packed is None  # nothing was packed while off
    assert fast_linear.enabled()
    # gradients wanted: autograd's F.linear, and the gradient flows
    y = lin(x).sum()
    y.backward()
    assert lin.weight.grad is not None and lin._packed is None
    # another dtype keeps F.linear
    with torch.inference_mode():
        xd = x.double()
        lind = copy.deepcopy(lin).double()
        assert torch.equal(lind(xd), F.linear(xd, lind.weight, lind.bias))


def test_repacks_when_the_weight_changes():
    lin = packed(24, 8, False)
    x = torch.randn(2, 24)
    with torch.inference_mode():
        lin(x)
    with torch.no_grad():
        lin.weight.mul_(3.0)  # in place: the version counter moves
    with torch.inference_mode():
        assert close(lin(x), F.linear(x, lin.weight))
    lin.weight = torch.nn.Parameter(torch.randn(8, 24))  # another tensor
    with torch.inference_mode():
        assert close(lin(x), F.linear(x, lin.weight))


def test_install_is_idempotent_and_keeps_the_state_dict():
    model = tiny_random_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast_linear.install(model)
    fast_linear.install(model)
    assert fast_linear.installed(model)
    assert isinstance(model.lm_head, fast_linear.PackedLinear)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    ids = torch.randint(0, model.config.vocab_size, (1, 11))
    with torch.inference_mode():
        fast = model(input_ids=ids).logits
        with fast_linear.disabled():
            stock = model(input_ids=ids).logits
    assert torch.allclose(fast, stock, atol=1e-4, rtol=1e-4)
    assert torch.equal(fast.argmax(-1), stock.argmax(-1))


def test_a_packed_layer_copies_and_pickles():
    import pickle

    lin = packed(16, 8, True)
    x = torch.randn(2, 16)
    with torch.inference_mode():
        lin(x)  # packed now: an opaque oneDNN tensor, which has no storage to copy
    for twin in (copy.deepcopy(lin), pickle.loads(pickle.dumps(lin))):
        assert isinstance(twin, fast_linear.PackedLinear) and twin._packed is None
        with torch.inference_mode():
            assert torch.equal(twin(x), lin(x))


def test_the_environment_switch():
    import subprocess
    import sys

    code = "from specviz.models import fast_linear as f; print(f.enabled())"
    for value, want in (("0", "False"), ("off", "False"), ("1", "True"), ("", "True")):
        env = {**__import__("os").environ, fast_linear.ENV: value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == want, value


def test_generate_baselines_run_stock_transformers_with_either_cache():
    """bench's hf_generate rows: the default and the static cache decode the same greedy tokens, on plain
    F.linear (the packed copy is never made) even when the model has the packed layers installed."""
    from types import SimpleNamespace

    from specviz.bench.spec_bench import HF_ROWS, hf_generate

    model = fast_linear.install(tiny_random_llama())
    prepared = SimpleNamespace(target=SimpleNamespace(model=model, eos_ids=()),
                               settings=SimpleNamespace(max_new_tokens=12))
    outs = {cache: hf_generate(prepared, [3, 5, 7, 11], cache)[0] for cache in HF_ROWS.values()}
    assert set(HF_ROWS.values()) == {"dynamic", "static"}
    assert outs["dynamic"] == outs["static"] and len(outs["dynamic"]) == 12
    assert all(m._packed is None for m in model.modules() if isinstance(m, fast_linear.PackedLinear))
    with pytest.raises(ValueError):
        hf_generate(prepared, [3], "paged")


def test_a_layer_made_under_inference_mode():
    with torch.inference_mode():
        lin = packed(12, 6, True)  # inference tensors: no version counter
        x = torch.randn(3, 12)
        assert close(lin(x), F.linear(x, lin.weight, lin.bias))
