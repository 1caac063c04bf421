"""README "Adding a method", followed once: a toy tree drafter that exists only in this test is one class plus
one registry entry, and the settings, the engine, the CLI's method list and the app pick it up."""
import numpy as np
import pytest
import torch

from specviz.config import DRAFT_LEN, SamplingConfig
from specviz.decoding.drafters import Draft, DrafterBase
from specviz.decoding.engine import decode
from specviz.decoding.registry import METHODS, Method, register_method
from specviz.settings import RunSettings
from specviz.trace import check_invariants

from ..conftest import PROMPTS, greedy_reference


class EchoTreeDrafter(DrafterBase):
    """Toy drafter: two children under the root (the last token and the one before it), then a chain
    repeating the last token. Deterministic, so verification treats the nodes as point masses."""

    name = "echo"

    def __init__(self, draft_len: int):
        self.draft_len = draft_len

    def set_shape(self, knobs: dict) -> None:
        self.draft_len = knobs.get("draft_len", self.draft_len)

    def propose(self, ctx, max_depth, generator) -> Draft:
        depth = min(self.draft_len, max_depth)
        if depth <= 0 or ctx.ids_host.shape[0] < 2:
            return Draft.empty(ctx.ids.device)
        last, before = int(ctx.ids_host[-1]), int(ctx.ids_host[-2])
        tokens = [before, last] + [last] * (depth - 1)
        parent = [0, 0] + list(range(2, depth + 1))  # node 2 (the last token) continues as a chain
        m = len(tokens)
        return Draft(torch.tensor(tokens, device=ctx.ids.device), np.asarray(parent, dtype=np.int64),
                     torch.ones(m, device=ctx.ids.device), None, (self.name,) * m)


@pytest.fixture
def echo_method():
    method = register_method(Method("echo_tree", "Echo tree (test only)", "Drafts the last tokens again.",
                                    (DRAFT_LEN,), lambda ctx: EchoTreeDrafter(ctx.knobs["draft_len"])))
    yield method
    del METHODS["echo_tree"]


@pytest.mark.parametrize("prompt", range(len(PROMPTS)))
def test_a_new_method_is_one_class_plus_one_entry(tiny, echo_method, prompt):
    settings = RunSettings.from_dict({"method": "echo_tree", "draft_len": 4, "max_new_tokens": 24})
    drafter = echo_method.drafter(tiny, settings.knobs)
    tr = decode(tiny, drafter, PROMPTS[prompt], settings)
    check_invariants(tr, max_new_tokens=24)
    assert tr.output_ids.tolist() == greedy_reference(tiny, PROMPTS[prompt], 24).tolist()
    assert tr.settings["method"] == "echo_tree" and sum(s.n_drafted for s in tr.steps) > 0


def test_a_new_method_shows_in_the_cli_and_is_sampled_losslessly(tiny, echo_method):
    from specviz.__main__ import build_parser

    assert "echo_tree" in build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    sampling = SamplingConfig(0.9, 1.0, 4)
    tr = decode(tiny, echo_method.drafter(tiny, {"draft_len": 3}, sampling), PROMPTS[0],
                RunSettings("echo_tree", {"draft_len": 3}, 16, 0.9, 1.0, 4))
    check_invariants(tr, max_new_tokens=16)


def test_registering_a_taken_name_is_refused(echo_method):
    with pytest.raises(ValueError, match="already registered"):
        register_method(echo_method)
