"""The app: builds without weights, serves the run through gradio_client, refuses bad input clearly,
and keeps sessions apart."""
import threading

import pytest
from gradio_client import Client

from specviz.config import EMBEDDED_MODEL_ID
from specviz.settings import DEFAULT_METHOD


def test_demo_builds_without_loading_weights():
    from specviz.models import ModelStore
    from specviz.ui import build_demo

    def refuse(model_id):
        raise AssertionError("building the demo must not load a model")

    store = ModelStore(loader=refuse)
    demo = build_demo(store)
    assert store.loaded_ids() == []
    names = {d["api_name"] for d in demo.config["dependencies"] if d.get("api_name")}
    assert {"run", "step", "pause", "reset", "what_if", "scrub", "export"} <= names


def test_run_endpoints_take_prompt_and_settings_by_name(app_url):
    """Adding a knob never changes an endpoint's shape: /run and /step take `prompt` and `settings`."""
    info = Client(app_url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ("/run", "/step", "/lattice_run", "/lattice_step"):
        params = [p["parameter_name"] for p in info[name]["parameters"]]
        assert params == ["prompt", "settings"], (name, params)
        assert info[name]["parameters"][1]["parameter_has_default"] is True


def _run(client, prompt="List three colours.", api="/run", **settings):
    """Call a run endpoint the way an outside client does: the prompt and only the settings it changes."""
    settings.setdefault("max_new_tokens", 12)
    return client.predict(prompt=prompt, settings=settings, api_name=api)


@pytest.fixture(scope="module")
def server(app_url):
    return app_url


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_run_through_gradio_client(client, embedded):
    out = _run(client, method="sps")
    status, text_html, *_ , metrics, _depth, summary = out
    assert "finished" in status
    # which kernels ran is part of the result and of the metrics table
    assert summary["kernels"] == "reference (cpu)" and "backend: reference (cpu)" in metrics
    assert summary["method"] == "sps"
    assert summary["settings"] == {"method": "sps", "draft_len": 3, "exit_layer": 20, "max_new_tokens": 12,
                                   "temperature": 0.0, "top_p": 1.0, "seed": 0, "target": EMBEDDED_MODEL_ID,
                                   "draft": ""}
    assert len(summary["output_ids"]) == 12
    assert summary["summary"]["target_forwards"] >= 1
    assert summary["speedup_vs_ar"]["matches_ar"] is True
    assert summary["speedup_vs_ar"]["ratio"] > 0
    # the text view carries one span per token, with the step on hover
    assert text_html.count('class="sv-tok') == 12 and "step 0" in text_html


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": "a " * 9500}, "exceeds the model's context"),
        ({"prompt": "x" * 20001}, "limit is 20,000"),
        ({"method": "sps", "draft_len": 99}, "draft_len=99 is out of range"),
        ({"temperature": 7}, "temperature=7 is out of range"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"method": "sps", "exit_layer": 30}, "exit_layer=30 is out of range"),
        ({"max_new_tokens": 0}, "max_new_tokens=0 is out of range"),
        ({"seed": -1}, "seed=-1 is out of range"),
        ({"method": "nope"}, "unknown method 'nope'"),
        ({"method": "retrieval", "window": 4}, "has no field(s) 'window' (a knob of jacobi"),
        ({"colour": "red"}, "has no field(s) 'colour'"),
        ({"method": "ar", "draft": "x"}, "does not use a draft model"),
        ({"target": "no-such-org/no-such-model-xyz"}, "cannot load 'no-such-org/no-such-model-xyz'"),
        ({"method": "sps", "draft": "no-such-org/draft"}, "cannot load 'no-such-org/draft'"),
        # a Hub head for a trained method, offline
        ({"method": "eagle", "draft": "yuhuili/EAGLE-Vicuna-7B-v1.3"}, "Hub is unreachable"),
        ({"method": "exit_distilled", "draft": "some/head"}, "shipped drafter only"),
    ],
)
def test_bad_input_gets_a_clear_message(client, kwargs, message):
    with pytest.raises(Exception) as err:
        _run(client, **kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize("settings", [[1, 2], "sps", 3])
def test_settings_that_are_not_an_object_get_a_clear_message(client, settings):
    with pytest.raises(Exception) as err:
        client.predict(prompt="Hi", settings=settings, api_name="/run")
    assert "settings must be a JSON object" in str(err.value)


def test_mismatched_tokenizer_is_refused(client, tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from specviz.models import tiny_random_llama

    path = tmp_path_factory.mktemp("other-family")
    vocab = {f"w{i}": i for i in range(96)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", eos_token="w1").save_pretrained(path)
    tiny_random_llama(vocab_size=96).save_pretrained(path)
    with pytest.raises(Exception) as err:
        _run(client, method="sps", draft=str(path))
    assert "does not share the target" in str(err.value)


def test_sessions_do_not_see_each_other(server):
    results = {}

    def go(name, prompt, method):
        c = Client(server, verbose=False)
        results[name] = _run(c, prompt, method=method, max_new_tokens=8)[-1]

    threads = [threading.Thread(target=go, args=("a", "Name a fruit.", "prompt_lookup")),
               threading.Thread(target=go, args=("b", "Name a country.", "ar"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results["a"]["method"] == "prompt_lookup" and results["b"]["method"] == "ar"
    assert results["a"]["prompt_ids"] != results["b"]["prompt_ids"]
    # a fresh client has no run of its own: its first Step starts a new run at step 0
    c = Client(server, verbose=False)
    status = _run(c, api="/step", max_new_tokens=4)[0]
    assert "Step 0" in status


def test_step_then_run_resumes_the_same_run(client):
    first = _run(client, api="/step", max_new_tokens=10)
    assert "Step 0" in first[0]
    second = _run(client, api="/step", max_new_tokens=10)
    assert "Step 1" in second[0]
    final = _run(client, max_new_tokens=10)
    assert len(final[-1]["output_ids"]) == 10
    # the default run is the one an empty settings object gives
    assert final[-1]["settings"]["method"] == DEFAULT_METHOD
    # a recorded step re-renders by index, without the model; a bad index is a clear message
    assert "showing recorded step 1" in client.predict(step=1, api_name="/scrub")[0]
    last = final[-1]["summary"]["steps"] - 1
    with pytest.raises(Exception, match=f"step 99 is not recorded: this run has steps 0 to {last}"):
        client.predict(step=99, api_name="/scrub")


def test_tree_run_shape_change_mid_run_and_what_if(client):
    tree = dict(method="dynamic_tree", depth=3, max_new_tokens=24)
    first = _run(client, api="/step", budget=6, **tree)
    assert "Step 0" in first[0]
    assert first[-1]["summary"]["drafted"] == 6
    # a live knob changes: the same run continues, and the next step uses the new budget
    second = _run(client, api="/step", budget=12, **tree)
    assert "Step 1" in second[0] and "changed budget=12" in second[0]
    assert second[-1]["summary"]["drafted"] == 6 + 12
    assert second[-1]["settings"]["budget"] == 12
    final = _run(client, budget=12, **tree)
    assert final[-1]["speedup_vs_ar"]["matches_ar"] is True
    plot, table = client.predict(api_name="/what_if")
    assert "medusa-like-26" in table and "retrieval: context+shipped" in table and "this run (dynamic_tree)" in table


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"method": "static_tree", "preset": "bushy"}, "unknown tree shape 'bushy'"),
        ({"method": "static_tree", "preset": "0;1,1"}, "has no parent (1,)"),
        ({"method": "retrieval", "corpus": "/no/such/corpus.txt"}, "corpus file '/no/such/corpus.txt' does not exist"),
        ({"method": "graft", "exit_layer": 30}, "exit_layer=30 is out of range"),
    ],
)
def test_bad_tree_settings_get_a_clear_message(client, kwargs, message):
    with pytest.raises(Exception) as err:
        _run(client, **kwargs)
    assert message in str(err.value)


def test_retrieval_from_a_user_corpus_file(client, tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("Red, green and blue are the three primary colours of light. " * 20)
    out = _run(client, method="retrieval", corpus=str(corpus))
    sources = out[-1]["settings"]["corpus"]
    assert sources == str(corpus)
    assert out[-1]["speedup_vs_ar"]["matches_ar"] is True


@pytest.mark.parametrize("method,knobs", [("eagle", {"depth": 6, "top_k": 8, "budget": 60}),
                                          ("medusa", {"preset": "medusa-like-26"}),
                                          ("exit_distilled", {"depth": 6, "top_k": 4, "budget": 24})])
def test_trained_drafters_run_in_the_app(client, method, knobs):
    """The shipped drafters load with the embedded model and decode exactly like plain greedy."""
    summary = _run(client, method=method, max_new_tokens=24, **knobs)[-1]
    assert summary["method"] == method
    assert summary["draft"].startswith(f"trained:{ {'exit_distilled': 'exit'}.get(method, method)}")
    assert summary["speedup_vs_ar"]["matches_ar"] is True
    assert summary["summary"]["drafted"] > 0


def test_reset_through_the_api_stops_a_running_run(app_url):
    """A Run streaming in one session stops at its next step when that session resets, also through the API."""
    import time

    c = Client(app_url, verbose=False)
    job = c.submit(prompt="Write a long story about the sea.",
                   settings={"method": "ar", "max_new_tokens": 400}, api_name="/run")
    deadline = time.time() + 120
    while time.time() < deadline and not any("Step" in str(o[0]) for o in job.outputs() if o):
        time.sleep(0.2)
    c.predict(api_name="/reset")
    job.result(timeout=300)
    statuses = [str(o[0]) for o in job.outputs() if o]  # the status line (the session state is not an output)
    assert statuses and not any("finished" in s for s in statuses)
    last_step = max(int(s.split("**Step ")[1].split("**")[0]) for s in statuses if "**Step " in s)
    assert last_step < 200, last_step  # stopped long before the 400 tokens
    # the server still serves a normal request afterwards
    assert _run(c, max_new_tokens=4)[-1]["settings"]["max_new_tokens"] == 4


@pytest.mark.parametrize("knobs", [{"method": "auto"}, {"method": "dynamic_tree", "budget": "auto"}],
                         ids=["auto-method", "budget-auto"])
def test_cost_sized_drafts_run_in_the_app(client, knobs):
    """The auto method and a budget of 'auto' run through the API on the embedded model (the cost curve is
    measured or read from the cache in the run's turn) and decode exactly like plain greedy."""
    summary = _run(client, max_new_tokens=24, **knobs)[-1]
    assert summary["method"] == knobs["method"]
    assert summary["settings"].get("budget", "auto") == "auto"
    assert summary["speedup_vs_ar"]["matches_ar"] is True


def test_an_exported_trace_replays_through_the_api(app_url):
    """Run, export the trace as a file, send its text to /replay (no model involved): the same run comes back;
    a broken copy is refused with a message naming the field."""
    import json
    from pathlib import Path

    c = Client(app_url, verbose=False)
    summary = c.predict(prompt="List three colours.", settings={"method": "retrieval", "max_new_tokens": 12},
                        api_name="/run")[-1]
    path = c.predict(api_name="/export")
    text = Path(path).read_text()
    back = c.predict(text, api_name="/replay")
    assert back["method"] == "retrieval" and back["output_ids"] == summary["output_ids"]
    assert back["summary"]["tau"] == pytest.approx(summary["summary"]["tau"])
    broken = json.loads(text)
    broken["steps"][0]["tree"]["parent"][0] = 3
    with pytest.raises(Exception, match="step 0: tree.parent"):
        c.predict(json.dumps(broken), api_name="/replay")


def test_pause_after_a_finished_run_says_it_finished(app_url):
    """The status agrees with the run: pausing a finished run does not claim a pause was requested."""
    c = Client(app_url, verbose=False)
    c.predict(prompt="List three colours.", settings={"method": "ar", "max_new_tokens": 4}, api_name="/run")
    status = c.predict(api_name="/pause")
    assert "finished" in status and "pause requested" not in status
