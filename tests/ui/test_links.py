"""Share links: parsed strictly, and a bad one is a message, never a broken page."""
import json

import pytest

from specviz.config import ConfigError
from specviz.ui.links import MAX_SHARED_PROMPT, parse_shared_run

HANDLES = {"speculative": object(), "diffusion": object()}


def test_a_share_link_names_the_tab_the_run_and_the_step():
    params = {"tab": "speculative", "prompt": "Hi", "settings": json.dumps({"method": "sps"}), "step": "4"}
    assert parse_shared_run(params, HANDLES) == ("speculative", "Hi", {"method": "sps"}, 5)
    # no run in the link: the page opens as usual
    assert parse_shared_run({}, HANDLES) is None
    assert parse_shared_run({"tab": "elsewhere", "settings": "{}"}, HANDLES) is None


@pytest.mark.parametrize("params,message", [
    ({"settings": "{nope"}, "not valid JSON"),
    ({"settings": "[1, 2]"}, "JSON object"),
    ({"settings": "{}", "step": "two"}, "whole number"),
    ({"settings": "{}", "step": "-1"}, "out of range"),
    ({"settings": "{}", "step": "999999"}, "out of range"),
    ({"settings": "{}", "prompt": "x" * (MAX_SHARED_PROMPT + 1)}, "characters"),
])
def test_a_bad_share_link_is_refused_by_name(params, message):
    with pytest.raises(ConfigError, match=message):
        parse_shared_run({"tab": "speculative", **params}, HANDLES)
