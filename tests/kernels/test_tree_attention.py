"""Tree attention: the Triton kernel against its reference, and the reference against per-node chains."""
import numpy as np
import pytest
import torch

from specviz.decoding.tree import ancestor_matrix
from specviz.kernels import backend_for, force_backend
from specviz.kernels.tree_attention import TreeMask, pack_bits, tree_attention, tree_attention_naive, tree_attention_sdpa
from specviz.kernels.tree_attention import triton as tt

TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def random_parent(n, rng):
    return np.array([-1] + [int(rng.integers(max(0, i - 4), i)) for i in range(1, n)], dtype=np.int64)


def qkv(b, hq, hkv, q_len, kv_len, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, q_len, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, kv_len, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, kv_len, d, generator=g).to(dtype)
    return q, k, v


def nan_buffers(written: list):
    """Output buffers pre-filled with NaN: an element the kernel does not write stays NaN and fails the check."""
    def alloc(shape, dtype):
        buf = torch.full(shape, float("nan"), dtype=dtype)
        written.append(buf)
        return buf
    return alloc


def assert_close(out, ref, dtype):
    assert not torch.isnan(out).any()
    err = (out.float() - ref.float()).abs().max().item()
    assert err <= TOL[dtype] * max(1.0, ref.float().abs().max().item()), err


def test_pack_bits_round_trip():
    rng = np.random.default_rng(0)
    allowed = rng.random((5, 70)) < 0.5
    bits = torch.from_numpy(pack_bits(allowed))
    cols = torch.arange(70)
    back = ((bits[:, cols // 32] >> (cols % 32)) & 1).bool().numpy()
    assert (back == allowed).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n_nodes,prefix,heads,d,splits", [
    (1, 37, (4, 2), 64, 1),
    (63, 29, (6, 2), 64, 1),
    (129, 5, (4, 4), 128, 1),
    (17, 301, (9, 3), 64, 4),
])
def test_triton_matches_reference_on_trees(dtype, n_nodes, prefix, heads, d, splits):
    rng = np.random.default_rng(n_nodes)
    mask = TreeMask.from_allowed(ancestor_matrix(random_parent(n_nodes, rng)), "cpu")
    q, k, v = qkv(1, *heads, n_nodes, prefix + n_nodes, d, dtype, seed=n_nodes)
    ref = tree_attention_naive(q, k, v, mask.bits, n_nodes)
    buffers = []
    out = tt.tree_attention(q, k, v, mask.bits, n_nodes, splits=splits, buffers=nan_buffers(buffers))
    assert buffers, "the kernel must write into the NaN-filled buffers"
    assert not any(torch.isnan(b).any() for b in buffers), "an output element was never written"
    assert out.dtype == dtype
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("q_len,kv_len,splits", [(1, 200, 1), (1, 200, 3), (45, 45, 1), (33, 100, 2)])
def test_triton_causal_matches_reference(dtype, q_len, kv_len, splits):
    q, k, v = qkv(2, 6, 3, q_len, kv_len, 64, dtype, seed=q_len)
    ref = tree_attention_naive(q, k, v)
    assert_close(tt.tree_attention(q, k, v, splits=splits), ref, dtype)


def test_tree_block_longer_than_the_queries():
    """The drafter's case: only the newest nodes query, but older tree slots are keys under the mask."""
    rng = np.random.default_rng(3)
    parent = random_parent(40, rng)
    anc = ancestor_matrix(parent)[-7:]  # the last 7 nodes query the whole 40-node block
    mask = TreeMask.from_allowed(anc, "cpu")
    q, k, v = qkv(1, 4, 2, 7, 23 + 40, 64, torch.float32, seed=5)
    ref = tree_attention_naive(q, k, v, mask.bits, 40)
    assert_close(tt.tree_attention(q, k, v, mask.bits, 40), ref, torch.float32)
    assert_close(tree_attention_sdpa(q, k, v, mask.bits, 40), ref, torch.float32)


@pytest.mark.parametrize("n_nodes", [1, 9, 63])
def test_each_node_sees_exactly_its_root_to_node_chain(n_nodes):
    """Row i equals plain attention over the prefix plus node i's ancestors (itself included)."""
    rng = np.random.default_rng(n_nodes + 1)
    parent = random_parent(n_nodes, rng)
    anc = ancestor_matrix(parent)
    prefix = 11
    q, k, v = qkv(1, 4, 2, n_nodes, prefix + n_nodes, 64, torch.float32, seed=7)
    mask = TreeMask.from_allowed(anc, "cpu")
    outs = {"naive": tree_attention_naive(q, k, v, mask.bits, n_nodes),
            "triton": tt.tree_attention(q, k, v, mask.bits, n_nodes)}
    for i in range(n_nodes):
        keep = torch.tensor(list(range(prefix)) + [prefix + j for j in np.flatnonzero(anc[i])])
        kc, vc = k[:, :, keep], v[:, :, keep]
        # node i is the last key of its own chain, so a causal rule over the chain sees all of it
        chain = tree_attention_naive(q[:, :, i : i + 1], kc, vc)
        for name, out in outs.items():
            torch.testing.assert_close(out[:, :, i : i + 1], chain, atol=2e-5, rtol=2e-5, msg=name)


def test_dispatch_runs_the_reference_on_cpu_and_triton_when_forced():
    assert backend_for("cpu") == "reference"
    rng = np.random.default_rng(0)
    mask = TreeMask.from_allowed(ancestor_matrix(random_parent(12, rng)), "cpu")
    q, k, v = qkv(1, 4, 2, 12, 30, 64, torch.float32, seed=1)
    ref = tree_attention(q, k, v, mask)
    with force_backend("triton"):
        assert backend_for("cpu") == "triton"
        out = tree_attention(q, k, v, mask)
    assert_close(out, ref, torch.float32)


def test_model_forward_through_the_kernel_matches_sdpa(tiny):
    """The tiny model scoring a tree through the Triton kernel (interpreted) gives SDPA's logits."""
    from specviz.decoding.engine import SpeculativeDecoder
    from specviz.decoding.drafters import NoDrafter
    from specviz.settings import RunSettings
    from specviz.models.attention import implementation

    parent = np.array([-1, 0, 0, 1, 1, 2, 3])
    tokens = torch.tensor([9, 1, 2, 3, 4, 5, 6])
    prompt = np.array([5, 6, 7, 8, 9])
    with torch.inference_mode():
        dec = SpeculativeDecoder(tiny, NoDrafter(), prompt, RunSettings("ar", {}, 8))
        dec.prefill()
        with force_backend("triton"):
            kernel_logits = dec._score(tokens, parent, 4)
        for i in range(len(parent)):
            path = []
            node = i
            while node > 0:
                path.append(int(tokens[node]))
                node = parent[node]
            seq = torch.tensor([[5, 6, 7, 8, 9, *path[::-1]]])
            with implementation(tiny, "sdpa"):
                expect = tiny(input_ids=seq).logits[0, -1]
            torch.testing.assert_close(kernel_logits[i], expect, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("n_nodes,prefix", [(1, 8191), (63, 4096), (129, 8000), (256, 8192)])
def test_gpu_full_shapes(dtype, d, n_nodes, prefix):
    rng = np.random.default_rng(n_nodes)
    mask = TreeMask.from_allowed(ancestor_matrix(random_parent(n_nodes, rng)), "cuda")
    q, k, v = (t.cuda() for t in qkv(1, 32, 8, n_nodes, prefix + n_nodes, d, dtype, seed=0))
    ref = tree_attention_sdpa(q.float(), k.float(), v.float(), mask.bits, n_nodes)
    assert_close(tt.tree_attention(q, k, v, mask.bits, n_nodes), ref, dtype)
