"""Recording a trace never changes the generated tokens."""
import pytest

from specviz.config import RunConfig, SamplingConfig
from specviz.decoding.engine import decode
from specviz.decoding.registry import METHODS, get_method

from .conftest import PROMPTS, TINY_STORE, tiny_knobs, tiny_trained


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("sampling", [SamplingConfig(), SamplingConfig(0.8, 0.9, 7)], ids=["greedy", "sampled"])
def test_recording_does_not_change_tokens(tiny, name, sampling):
    m = get_method(name)
    knobs = m.check_knobs(tiny_knobs(m))
    outs = []
    for record in (True, False):
        drafter = m.build(tiny, None, knobs, sampling, TINY_STORE, trained=tiny_trained(m, tiny))
        tr = decode(tiny, drafter, PROMPTS[0], RunConfig(name, 48, sampling, knobs), record=record)
        outs.append(tr.output_ids.tolist())
    assert outs[0] == outs[1]
    assert len(outs[0]) == 48
