import os

import numpy as np
import pytest
import torch

# without a GPU the Triton kernels run in Triton's interpreter, on CPU tensors;
# this must be set before anything imports triton
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from specviz.decoding.retrieval import SuffixArray, corpus_tokens

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny():
    from specviz.models import tiny_random_llama

    return tiny_random_llama(vocab_size=96, n_layers=4, hidden=32, seed=0)


@pytest.fixture(scope="session")
def store():
    from specviz.models import ModelStore

    return ModelStore()


@pytest.fixture(scope="session")
def embedded(store):
    return store.get(None)


def greedy_reference(model, prompt, n):
    """Plain greedy decoding by transformers' own generate under SDPA: the independent oracle."""
    from specviz.models.attention import implementation

    ids = torch.tensor([list(prompt)])
    with implementation(model, "sdpa"):
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].numpy()


PROMPTS = [
    np.array([3, 17, 4, 17, 4, 17, 9, 22, 4, 17]),
    np.array([50, 51, 52, 53, 50, 51, 52]),
    np.array([7]),
]


@pytest.fixture(scope="session")
def served_demo(store, embedded):
    """The real app (a local server), served on a free local port, sharing the test session's model store:
    (demo, url); `demo.sharing` holds its turns and limits."""
    from specviz.ui import build_demo, launch

    demo = build_demo(store)
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo, url
    demo.close()


@pytest.fixture(scope="session")
def app_url(served_demo):
    return served_demo[1]


# a shipped-corpus stand-in for the tiny vocabulary: random documents plus the prompts' own patterns
TINY_STORE = {"retrieval:shipped": SuffixArray(corpus_tokens(
    [np.random.default_rng(1).integers(0, 96, 400).tolist(), [17, 4, 17, 9, 22, 4, 17, 4, 17], [50, 51, 52, 53, 54]]))}


def _tiny_costs():
    from specviz.decoding.costs import CostCurve

    # a CPU-like verify-cost curve, fixed so that cost-sized drafts are the same on every machine: scoring
    # 2 to 16 tokens costs 1.5 AR steps, 64 tokens 3 steps
    return CostCurve("tiny", "cpu", "float32", 32, (1, 2, 16, 64, 128), (10.0, 15.0, 16.0, 30.0, 50.0))


TINY_COSTS = _tiny_costs()


def tiny_trained(method, model):
    """A fresh (untrained, jittered) drafter for methods that need trained weights: still lossless."""
    from specviz.models.trained import fresh_drafter

    if not method.uses_trained:
        return None
    drafter = fresh_drafter(method.uses_trained, model, seed=1, jitter=0.05,
                            exit_layer=min(2, model.config.num_hidden_layers - 1))
    if method.uses_trained == "eagle":
        # a ranked draft vocabulary of 3/4 of the tokens, so the suites also cover drafting from a subset
        vocab = model.config.vocab_size
        drafter.draft_vocab = torch.randperm(vocab, generator=torch.Generator().manual_seed(3))[: 3 * vocab // 4]
    return drafter


# the knobs every registered method runs with on the tiny models (4 layers, 96 tokens): the one table that
# every method-wide suite reads; test_tiny_knobs_cover_every_method keeps it complete against the registry
TINY_KNOBS = {
    "ar": {},
    "sps": {"exit_layer": 2},
    "static_tree": {"exit_layer": 2},
    "dynamic_tree": {"exit_layer": 2},
    "prompt_lookup": {},
    "ngram_tree": {},
    "retrieval": {"corpus": "context+shipped"},
    "graft": {"exit_layer": 2, "corpus": "context+shipped"},
    "auto": {"corpus": "context+shipped"},
    "jacobi": {},
    "eagle": {},
    "medusa": {},
    "exit_distilled": {},
}


def tiny_knobs(method):
    """The method's tiny knobs (from TINY_KNOBS), checked, with its defaults filled in."""
    return method.check_knobs(TINY_KNOBS[method.name])


def tiny_settings(name: str, n: int, sampling=None, knobs=None):
    """Settings for an engine-level run of `name` (any name: scripted test drafters have none registered)."""
    from specviz.config import SamplingConfig
    from specviz.settings import RunSettings

    s = sampling or SamplingConfig()
    return RunSettings(name, dict(knobs or {}), n, s.temperature, s.top_p, s.seed)


def tiny_drafter(method, model, sampling=None, knobs=None, datastores=None, trained=None, draft_model=None):
    """A fresh drafter of a registered method on a tiny model, with its tiny knobs (and `knobs` on top)."""
    from specviz.config import SamplingConfig
    from specviz.decoding.registry import BuildContext

    checked = method.check_knobs({**TINY_KNOBS[method.name], **(knobs or {})})
    trained = trained if trained is not None else tiny_trained(method, model)
    return method.make(BuildContext(model, checked, sampling or SamplingConfig(), draft_model,
                                    TINY_STORE if datastores is None else datastores, trained, TINY_COSTS))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
