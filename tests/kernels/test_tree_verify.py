"""tree_verify: the Triton kernels (in the interpreter without a GPU) against the PyTorch
reference, and a statistical check that sampled verification emits the target's law."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from specviz.kernels import force_backend
from specviz.kernels.tree_verify import TreeVerdict, reference, tree_verify
from specviz.trace import ACCEPTED, REJECTED, ROOT, UNREACHED

triton_impl = pytest.importorskip("specviz.kernels.tree_verify.triton")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# how the drafts were proposed: no proposals at all, sampled rows, all-zero rows, or a mix
PROPOSALS = ["none", "sampled", "point", "mixed"]


def random_parents(B, N, generator, device="cpu"):
    """[B, N] parents of random trees: parent[i] uniform below i, -1 at the root."""
    parent = torch.full((B, N), -1, dtype=torch.int64)
    for i in range(1, N):
        parent[:, i] = torch.randint(0, i, (B,), generator=generator)
    return parent.to(device)


def make_case(B, N, V, dtype, sampled, proposals, seed=0, device="cpu"):
    """Random trees whose tokens are often their parent row's argmax, on peaked rows, so that
    deep paths get accepted as well as early rejections."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(B, N, V, generator=g)
    peaked = torch.rand(B, N, generator=g) < 0.6
    logits.scatter_add_(2, logits.argmax(-1, keepdim=True), 8.0 * peaked[..., None].float())
    # top-p filtering shows up as -inf; keep each row's argmax finite
    filtered = (torch.rand(B, N, V, generator=g) < 0.2) & (logits < logits.amax(-1, keepdim=True))
    logits = logits.masked_fill(filtered & (torch.rand(B, N, 1, generator=g) < 0.3), float("-inf")).to(dtype)
    parent = random_parents(B, N, g)
    tokens = torch.randint(0, V, (B, N), generator=g)
    target_next = logits.float().argmax(-1).gather(1, parent.clamp_min(0))
    tokens = torch.where(torch.rand(B, N, generator=g) < 0.6, target_next, tokens)
    tokens[:, 0] = 0
    q = None
    if proposals != "none":
        q = torch.softmax(2 * torch.randn(B, N, V, generator=g), dim=-1)
        if proposals == "point":
            q.zero_()
        elif proposals == "mixed":
            q[torch.rand(B, N, generator=g) < 0.5] = 0.0
    uniforms = torch.rand(B, N + 1, generator=g) if sampled else None
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return to(logits), to(tokens), to(parent), to(q), to(uniforms)


def sentinel_out(B, N, like: TreeVerdict | None = None, device="cpu") -> TreeVerdict:
    """Output buffers that fail the comparison wherever the kernel does not write."""
    corrected = torch.zeros(B, dtype=torch.bool, device=device)
    if like is not None:
        corrected = ~like.corrected.to(device)
    return TreeVerdict(
        torch.full((B, N), float("nan"), device=device),
        torch.full((B, N), 7.0, device=device),
        torch.full((B, N), 99, dtype=torch.int8, device=device),
        torch.full((B, N), -99, dtype=torch.int64, device=device),
        torch.full((B,), -99, dtype=torch.int64, device=device),
        torch.full((B,), -99, dtype=torch.int64, device=device),
        corrected,
    )


def run_both(logits, tokens, parent, temperature, q, uniforms):
    want = reference.tree_verify(logits, tokens, parent, temperature, q, uniforms)
    B, N = tokens.shape
    out = sentinel_out(B, N, want, logits.device)
    got = triton_impl.tree_verify(logits, tokens, parent, temperature, q, uniforms, out=out)
    return got, want


def assert_same(got: TreeVerdict, want: TreeVerdict):
    for name in TreeVerdict._fields:
        g, w = getattr(got, name), getattr(want, name)
        assert g.shape == w.shape and g.dtype == w.dtype and g.device == w.device, name
    assert not got.target_prob.isnan().any(), "target_prob has nan"
    for name in ("status", "path", "n_accepted", "bonus", "corrected"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    # untested nodes are nan in both; probabilities differ by exp and summation rounding only
    assert torch.equal(got.accept_prob.isnan(), want.accept_prob.isnan()), "accept_prob nan positions"
    torch.testing.assert_close(got.target_prob, want.target_prob, rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(got.accept_prob, want.accept_prob, rtol=2e-5, atol=1e-7, equal_nan=True)


def assert_consistent(v: TreeVerdict, tokens, parent):
    """Structural rules every verdict obeys, whatever the logits."""
    for b in range(tokens.shape[0]):
        n = int(v.n_accepted[b])
        path = v.path[b].tolist()
        assert all(i > 0 for i in path[:n]) and all(i == -1 for i in path[n:])
        chain = [0] + path[:n]
        assert all(int(parent[b, c]) == p for p, c in zip(chain, chain[1:])), "path is not a chain from the root"
        status = v.status[b]
        assert status[0] == ROOT
        on_path = set(chain)
        for i in range(1, tokens.shape[1]):
            expect = ACCEPTED if i in on_path else REJECTED if int(parent[b, i]) in on_path else UNREACHED
            assert int(status[i]) == expect
        has_kids = bool((parent[b] == chain[-1]).any())
        assert bool(v.corrected[b]) == has_kids


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("N", [1, 63, 129])
def test_greedy_matches_reference(N, dtype):
    logits, tokens, parent, _, _ = make_case(4, N, 97, dtype, sampled=False, proposals="none", seed=N)
    got, want = run_both(logits, tokens, parent, 0.0, None, None)
    assert_same(got, want)
    assert_consistent(got, tokens, parent)
    if N > 1:
        assert int(want.n_accepted.max()) >= 2, "the case should reach past depth 1"


@pytest.mark.parametrize("proposals", PROPOSALS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("N", [1, 63, 129])
def test_sampled_matches_reference(N, dtype, proposals):
    logits, tokens, parent, q, uniforms = make_case(4, N, 97, dtype, sampled=True, proposals=proposals, seed=N + 7)
    got, want = run_both(logits, tokens, parent, 0.8, q, uniforms)
    assert_same(got, want)
    assert_consistent(got, tokens, parent)
    if N > 1:
        assert int(want.n_accepted.max()) >= 2, "the case should reach past depth 1"
        assert bool((want.status == REJECTED).any()), "the case should reject somewhere"


# (B, N, dtype, sampled, proposals): a full-size vocabulary on a few trees
FULL_VOCAB = [(2, 63, torch.bfloat16, False, "none"), (2, 63, torch.bfloat16, True, "mixed"),
              (1, 129, torch.float16, True, "sampled"), (3, 1, torch.float32, True, "none")]


@pytest.mark.parametrize("B,N,dtype,sampled,proposals", FULL_VOCAB, ids=str)
def test_full_vocabulary(B, N, dtype, sampled, proposals):
    logits, tokens, parent, q, uniforms = make_case(B, N, 49152, dtype, sampled=sampled, proposals=proposals, seed=3)
    got, want = run_both(logits, tokens, parent, 1.0 if sampled else 0.0, q, uniforms)
    assert_same(got, want)


def test_empty_residual_falls_back_to_target():
    """A proposal at or above the target everywhere leaves nothing after a rejection; the next
    sibling is then tested against the node's own target row."""
    logits, _, _, _, _ = make_case(2, 3, 11, torch.float32, sampled=True, proposals="none", seed=5)
    parent = torch.tensor([[-1, 0, 0]] * 2)
    tokens = torch.tensor([[0, 3, 3], [0, 7, 2]])
    q = torch.zeros(2, 3, 11)
    q[:, 1] = torch.softmax(logits[:, 0], -1) * (1 + 1e-5)
    # uniforms just below 1 reject the first child, whose ratio is 1 / (1 + 1e-5)
    uniforms = torch.tensor([[0.5, 0.9999999, 0.9999999, 0.5]] * 2)
    got, want = run_both(logits, tokens, parent, 1.0, q, uniforms)
    assert_same(got, want)
    assert got.status[:, 1:].eq(REJECTED).all()
    # a fresh target row: the point-mass sibling's ratio is its target probability
    torch.testing.assert_close(got.accept_prob[:, 2], got.target_prob[:, 2], rtol=1e-6, atol=0.0)


def test_dispatch_and_import_without_triton():
    logits, tokens, parent, q, uniforms = make_case(2, 9, 33, torch.float32, sampled=True, proposals="mixed")
    with force_backend("triton"):
        got = tree_verify(logits, tokens, parent, 1.0, q, uniforms)
    with force_backend("reference"):
        want = tree_verify(logits, tokens, parent, 1.0, q, uniforms)
    assert_same(got, want)
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "from specviz.kernels.tree_verify import tree_verify\n"
        "import torch\n"
        "v = tree_verify(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), torch.tensor([[-1, 0]]), 0.0)\n"
        "assert v.n_accepted.tolist() == [1] and v.bonus.tolist() == [0]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# the statistical check: a depth-2 tree over a 5-token vocabulary, the target and the
# drafter defined by the token prefix, thousands of independent trials in one launch
V_STAT, TEMPERATURE, TRIALS = 5, 0.7, 4000


def stat_models(seed, far):
    """Target logits after the context, after each token and after each pair, and the drafter's
    probabilities after the context and after each token. `far` makes the drafter favour what
    the target rarely picks."""
    g = torch.Generator().manual_seed(seed)
    f0 = 1.5 * torch.randn(V_STAT, generator=g)
    f1 = 1.5 * torch.randn(V_STAT, V_STAT, generator=g)
    f2 = 1.5 * torch.randn(V_STAT, V_STAT, V_STAT, generator=g)
    # a filtered token: the target never emits token 4 first
    f0[4] = float("-inf")
    if far:
        d0 = torch.softmax(-2.5 * f0.clamp_min(-3), dim=-1)
        d1 = torch.softmax(-2.5 * f1, dim=-1)
    else:
        d0 = torch.softmax(torch.randn(V_STAT, generator=g), dim=-1)
        d1 = torch.softmax(torch.randn(V_STAT, V_STAT, generator=g), dim=-1)
    return f0, f1, f2, d0, d1


def draft_siblings(draft, k, how, g):
    """k sibling tokens per trial from [T, V] draft rows, and the [T, k, V] rows each was drawn
    from (zero rows for deterministic picks)."""
    T = draft.shape[0]
    toks = torch.zeros(T, k, dtype=torch.int64)
    qs = torch.zeros(T, k, V_STAT)
    drawn = torch.zeros(T, V_STAT, dtype=torch.bool)
    for j in range(k):
        if how == "point" or (how == "mixed" and j == 0):
            # deterministic: the draft's best tokens in order, no proposal row
            toks[:, j] = draft.masked_fill(drawn, -1.0).argmax(-1)
        else:
            q = draft if how == "with" else draft.masked_fill(drawn, 0.0)
            q = q / q.sum(-1, keepdim=True)
            toks[:, j] = torch.multinomial(q, 1, generator=g)[:, 0]
            qs[:, j] = q
        drawn[torch.arange(T), toks[:, j]] = True
    return toks, qs


def stat_batch(how, siblings, seed, far=False):
    """B = TRIALS trees root -> k children -> k grandchildren each, with logits, proposals and uniforms."""
    f0, f1, f2, d0, d1 = stat_models(seed, far)
    g = torch.Generator().manual_seed(seed + 1)
    k = siblings
    N = 1 + k + k * k
    parent = torch.tensor([-1] + [0] * k + [1 + j // k for j in range(k * k)]).expand(TRIALS, N).contiguous()
    tokens = torch.zeros(TRIALS, N, dtype=torch.int64)
    q = torch.zeros(TRIALS, N, V_STAT)
    logits = torch.zeros(TRIALS, N, V_STAT)
    logits[:, 0] = f0
    kid_toks, kid_q = draft_siblings(d0.expand(TRIALS, V_STAT), k, how, g)
    tokens[:, 1 : 1 + k], q[:, 1 : 1 + k] = kid_toks, kid_q
    for j in range(k):
        t1 = kid_toks[:, j]
        logits[:, 1 + j] = f1[t1]
        grand = slice(1 + k + j * k, 1 + k + (j + 1) * k)
        tokens[:, grand], q[:, grand] = draft_siblings(d1[t1], k, how, g)
        for m in range(k):
            logits[:, 1 + k + j * k + m] = f2[t1, tokens[:, 1 + k + j * k + m]]
    uniforms = torch.rand(TRIALS, N + 1, generator=g)
    return logits, tokens, parent, q, uniforms, (f0, f1)


def emitted_pairs(v: TreeVerdict, tokens, f1, seed):
    """The first two emitted tokens per trial: path tokens then the bonus; a step that emits only
    one token is completed by a plain draw from the target, as the next step would."""
    n = v.n_accepted.numpy()
    path = v.path.clamp_min(0)
    walked = tokens.gather(1, path).numpy()
    bonus = v.bonus.numpy()
    first = np.where(n >= 1, walked[:, 0], bonus)
    g = torch.Generator().manual_seed(seed)
    nxt = torch.multinomial(torch.softmax(f1[torch.from_numpy(first)] / TEMPERATURE, -1), 1, generator=g)[:, 0].numpy()
    second = np.where(n >= 2, walked[:, 1], np.where(n == 1, bonus, nxt))
    return first, second


def max_sigma(first, second, f0, f1):
    """Largest deviation, in standard deviations, of any cell of the empirical joint law."""
    p1 = torch.softmax(f0 / TEMPERATURE, -1)
    exact = (p1[:, None] * torch.softmax(f1 / TEMPERATURE, -1)).double().numpy().ravel()
    counts = np.bincount(first * V_STAT + second, minlength=V_STAT * V_STAT).astype(float)
    # cells of probability zero must stay empty
    assert not counts[exact == 0].any()
    # the normal approximation needs a few expected counts per cell: pool the rare cells into one
    rare = exact * TRIALS < 10
    exact = np.append(exact[~rare], exact[rare].sum())
    counts = np.append(counts[~rare], counts[rare].sum())
    sd = np.sqrt(TRIALS * exact * (1 - exact)) + 1e-9
    return float(np.max(np.abs(counts - TRIALS * exact) / sd))


# (how siblings are drafted, siblings per node, far drafter, seed)
STAT_CASES = [("with", 3, False, 1), ("without", 3, False, 2), ("point", 2, False, 3), ("mixed", 3, False, 4),
              ("without", 3, True, 3)]


def mislabelled(q, k):
    """Without-replacement proposals relabelled as the draft before any removal: every sibling
    gets its first sibling's row, the mistake of forgetting to renormalise."""
    wrong = q.clone()
    for first in [1] + [1 + k + j * k for j in range(k)]:
        wrong[:, first : first + k] = q[:, first : first + 1]
    return wrong


@pytest.mark.parametrize("how,siblings,far,seed", STAT_CASES, ids=lambda c: str(c))
def test_sampled_kernel_preserves_target_law(how, siblings, far, seed):
    logits, tokens, parent, q, uniforms, (f0, f1) = stat_batch(how, siblings, seed, far)
    v = triton_impl.tree_verify(logits, tokens, parent, TEMPERATURE, q, uniforms)
    first, second = emitted_pairs(v, tokens, f1, seed)
    assert max_sigma(first, second, f0, f1) < 4.5
    # the reference draws the same tokens from the same uniforms
    assert_same(v, reference.tree_verify(logits, tokens, parent, TEMPERATURE, q, uniforms))
    if far:
        # the test has power: a drafter far from the target, verified against the wrong
        # proposals, emits a law the check rejects
        wrong = triton_impl.tree_verify(logits, tokens, parent, TEMPERATURE, mislabelled(q, siblings), uniforms)
        assert max_sigma(*emitted_pairs(wrong, tokens, f1, seed), f0, f1) > 10


def test_siblings_raise_acceptance():
    logits, tokens, parent, q, uniforms, _ = stat_batch("without", 3, seed=5)
    many = triton_impl.tree_verify(logits, tokens, parent, TEMPERATURE, q, uniforms)
    # the same trials with only the first child of each node: a chain
    chain = torch.tensor([0, 1, 4])
    one = triton_impl.tree_verify(
        logits[:, chain], tokens[:, chain], torch.tensor([-1, 0, 1]).expand(TRIALS, 3).contiguous(),
        TEMPERATURE, q[:, chain], uniforms[:, torch.tensor([0, 1, 4, 13])],
    )
    assert many.n_accepted.float().mean() > one.n_accepted.float().mean() + 0.2


@pytest.mark.gpu
@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
@pytest.mark.parametrize("N", [1, 64, 256])
def test_full_shapes_on_cuda(N, sampled):
    logits, tokens, parent, q, uniforms = make_case(
        2, N, 151936, torch.bfloat16, sampled=sampled, proposals="mixed", seed=N, device="cuda"
    )
    got, want = run_both(logits, tokens, parent, 1.0 if sampled else 0.0, q, uniforms)
    assert_same(got, want)
