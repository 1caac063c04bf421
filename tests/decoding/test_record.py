"""Recording a trace never changes the generated tokens."""
import pytest

from specviz.config import SamplingConfig
from specviz.decoding.engine import decode
from specviz.decoding.registry import METHODS, get_method

from ..conftest import PROMPTS, tiny_drafter, tiny_settings


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("sampling", [SamplingConfig(), SamplingConfig(0.8, 0.9, 7)], ids=["greedy", "sampled"])
def test_recording_does_not_change_tokens(tiny, name, sampling):
    m = get_method(name)
    outs = []
    for record in (True, False):
        tr = decode(tiny, tiny_drafter(m, tiny, sampling), PROMPTS[0], tiny_settings(name, 48, sampling), record=record)
        outs.append(tr.output_ids.tolist())
    assert outs[0] == outs[1]
    assert len(outs[0]) == 48
