"""Opening recorded runs: the views of a replayed trace are the live run's views (they come from the records
alone), shipped examples open in their tab through the API, and bad files get a message."""
import json

import pytest
from gradio_client import Client, handle_file

from specviz.textio import trace_file_dict
from specviz.ui.controller import EXAMPLE_TRACES, Sharing, example_traces
from specviz.ui.replay import read_trace_file
from specviz.ui.speculative import SpeculativeSpec

# the views a trace decides: text, scrubber, tree, node card, rejection panel, mask, confidence, strip
VIEWS = slice(2, 10)


def _same(a, b):
    to_json = getattr(a, "to_json", None)
    return a.to_json() == b.to_json() if to_json is not None else a == b


@pytest.mark.parametrize("settings", [
    {"method": "eagle", "max_new_tokens": 12, "temperature": 0.8, "seed": 3},
    {"method": "retrieval", "max_new_tokens": 16},
], ids=["eagle-sampled", "retrieval-greedy"])
def test_a_replayed_trace_renders_the_live_runs_views(store, embedded, settings):
    spec = SpeculativeSpec(store, Sharing())
    live = spec.start("Write one sentence about rivers.", spec.parse(settings))
    while not live.done:
        spec.advance(live)
    text = json.dumps(trace_file_dict(live.decoder.trace(), live.extra["tokenizer"], live.prompt))
    opened = read_trace_file(text)
    replayed = spec.replay(opened.trace, opened.token_text, opened.prompt)
    assert replayed.prompt == "Write one sentence about rivers."  # as typed: Run reruns it, a link shares it
    for k in range(live.n_steps):
        a = spec.outputs_full(live, "", k, {})[VIEWS]
        b = spec.outputs_full(replayed, "", k, {})[VIEWS]
        for name, x, y in zip(("text", "slider", "tree", "card", "rejection", "mask", "confidence", "strip"), a, b):
            assert _same(x, y), (k, name)
    if settings.get("temperature"):
        # a sampled run's panel shows the uniforms that decided: they were recorded, so the replay has them
        panel = spec.outputs_full(replayed, "", 0, {})[6]
        assert "u =" in panel or "u=" in panel or "uniform" in panel


def test_every_shipped_example_opens(store):
    spec = SpeculativeSpec(store, Sharing())
    names = {**example_traces("speculative"), **example_traces("diffusion")}
    assert len(names) >= 4
    for label, file in names.items():
        opened = read_trace_file((EXAMPLE_TRACES / file).read_text())
        assert opened.token_text is not None and opened.trace.steps and opened.prompt, label
    kinds = {json.loads((EXAMPLE_TRACES / f).read_text())["method"].split(":")[0] for f in names.values()}
    assert {"eagle", "retrieval", "diffusion", "jacobi"} <= kinds
    eagle = read_trace_file((EXAMPLE_TRACES / example_traces("speculative")[next(
        k for k in example_traces("speculative") if k.startswith("EAGLE"))]).read_text()).trace
    assert eagle.settings["temperature"] > 0 and any(s.uniforms.size for s in eagle.steps)


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_open_an_example_and_scrub_it_through_the_api(client):
    label = next(iter(example_traces("speculative")))
    out = client.predict(label, api_name="/open_example")
    status, summary = out[0], out[-1]
    assert "Replaying" in status and "no model is loaded" in status
    assert summary["method"] and summary["output_ids"]
    scrubbed = client.predict(1, api_name="/scrub")
    assert "showing recorded step 1" in scrubbed[0]


def test_load_a_trace_file_through_the_api(client, tmp_path):
    exported = client.predict(prompt="Name two rivers.", settings={"method": "prompt_lookup", "max_new_tokens": 8},
                              api_name="/run")
    path = client.predict(api_name="/export")
    out = client.predict(handle_file(path), api_name="/open_trace")
    assert "Replaying" in out[0]
    assert out[-1]["output_ids"] == exported[-1]["output_ids"]


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ('{"method": "ar"}', "missing"),
    ("[]", "list of 0 traces"),
    ("", "empty"),
])
def test_a_malformed_trace_file_gets_a_message(client, tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(bad)), api_name="/open_trace")
    assert "cannot be replayed" in str(err.value) and message in str(err.value)


def test_a_diffusion_trace_is_sent_to_its_tab(client):
    file = next(iter(example_traces("diffusion").values()))
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(EXAMPLE_TRACES / file)), api_name="/open_trace")
    assert "open it in the Diffusion tab" in str(err.value)


def test_an_example_is_named_by_label_never_by_path(client):
    with pytest.raises(Exception) as err:
        client.predict("../../README.md", api_name="/open_example")
    # the dropdown refuses a value not among its labels before the handler (which would refuse it too) sees it
    assert "not in the list of choices" in str(err.value) or "No example trace" in str(err.value)
