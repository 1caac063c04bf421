"""The app: builds without weights, serves the run through gradio_client, refuses bad input clearly,
and keeps sessions apart."""
import threading

import pytest
from gradio_client import Client

from specviz.config import EMBEDDED_MODEL_ID


def test_demo_builds_without_loading_weights():
    from specviz.models import ModelStore
    from specviz.ui import build_demo

    def refuse(model_id):
        raise AssertionError("building the demo must not load a model")

    store = ModelStore(loader=refuse)
    demo = build_demo(store)
    assert store.loaded_ids() == []
    names = {d["api_name"] for d in demo.config["dependencies"] if d.get("api_name")}
    assert {"run", "step", "pause", "reset", "what_if"} <= names


def _args(prompt="List three colours.", method="sps", max_new=12, temperature=0.0, top_p=1.0, seed=0,
          target=EMBEDDED_MODEL_ID, draft="", tree_depth=16, **knobs):
    """The /run and /step inputs in order: prompt, method, every knob (registry order), the rest."""
    from specviz.ui.speculative import KNOBS

    unknown = set(knobs) - {k.name for k in KNOBS}
    assert not unknown, unknown
    values = [knobs.get(k.name, k.default) for k in KNOBS]
    return [prompt, method, *values, max_new, temperature, top_p, seed, target, draft, tree_depth]


@pytest.fixture(scope="module")
def server(app_url):
    return app_url


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_run_through_gradio_client(client, embedded):
    out = client.predict(*_args(), api_name="/run")
    status, text_html, *_ , metrics, _depth, summary = out
    assert "finished" in status
    # which kernels ran is part of the result and of the metrics table
    assert summary["kernels"] == "reference (cpu)" and "backend: reference (cpu)" in metrics
    assert summary["method"] == "sps"
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
        # sliders are range-checked by gradio itself before our handler runs
        ({"draft_len": 99}, "Value 99 is greater than maximum value 16"),
        ({"temperature": 7}, "Value 7 is greater than maximum value 2"),
        ({"exit_layer": 30}, "exit_layer=30 is out of range"),
        ({"max_new": 0}, "Value 0 is less than minimum value 1"),
        ({"seed": -1}, "seed=-1 is out of range"),
        ({"target": "no-such-org/no-such-model-xyz"}, "cannot load 'no-such-org/no-such-model-xyz'"),
        ({"draft": "no-such-org/draft"}, "cannot load 'no-such-org/draft'"),
        # a Hub head for a trained method, offline
        ({"method": "eagle", "draft": "yuhuili/EAGLE-Vicuna-7B-v1.3"}, "Hub is unreachable"),
        ({"method": "exit_distilled", "draft": "some/head"}, "shipped drafter only"),
    ],
)
def test_bad_input_gets_a_clear_message(client, kwargs, message):
    with pytest.raises(Exception) as err:
        client.predict(*_args(**kwargs), api_name="/run")
    assert message in str(err.value)


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
        client.predict(*_args(draft=str(path)), api_name="/run")
    assert "does not share the target" in str(err.value)


def test_sessions_do_not_see_each_other(server):
    results = {}

    def go(name, prompt, method):
        c = Client(server, verbose=False)
        results[name] = c.predict(*_args(prompt=prompt, method=method, max_new=8), api_name="/run")[-1]

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
    status = c.predict(*_args(max_new=4), api_name="/step")[0]
    assert "Step 0" in status


def test_step_then_run_resumes_the_same_run(client):
    first = client.predict(*_args(max_new=10), api_name="/step")
    assert "Step 0" in first[0]
    second = client.predict(*_args(max_new=10), api_name="/step")
    assert "Step 1" in second[0]
    final = client.predict(*_args(max_new=10), api_name="/run")
    assert len(final[-1]["output_ids"]) == 10


def test_tree_run_shape_change_mid_run_and_what_if(client):
    first = client.predict(*_args(method="dynamic_tree", budget=6, depth=3, max_new=24), api_name="/step")
    assert "Step 0" in first[0]
    assert first[-1]["summary"]["drafted"] == 6
    # a shape knob changes: the same run continues, and the next step uses the new budget
    second = client.predict(*_args(method="dynamic_tree", budget=12, depth=3, max_new=24), api_name="/step")
    assert "Step 1" in second[0] and "shape changed: budget=12" in second[0]
    assert second[-1]["summary"]["drafted"] == 6 + 12
    assert second[-1]["config"]["knobs"]["budget"] == 12
    final = client.predict(*_args(method="dynamic_tree", budget=12, depth=3, max_new=24), api_name="/run")
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
        client.predict(*_args(**kwargs), api_name="/run")
    assert message in str(err.value)


def test_retrieval_from_a_user_corpus_file(client, tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("Red, green and blue are the three primary colours of light. " * 20)
    out = client.predict(*_args(method="retrieval", corpus=str(corpus), max_new=12), api_name="/run")
    sources = out[-1]["config"]["knobs"]["corpus"]
    assert sources == str(corpus)
    assert out[-1]["speedup_vs_ar"]["matches_ar"] is True


@pytest.mark.parametrize("method,knobs", [("eagle", {"depth": 6, "top_k": 8, "budget": 60}),
                                          ("medusa", {"preset": "medusa-like-26"}),
                                          ("exit_distilled", {"depth": 6, "top_k": 4, "budget": 24})])
def test_trained_drafters_run_in_the_app(client, method, knobs):
    """The shipped drafters load with the embedded model and decode exactly like plain greedy."""
    summary = client.predict(*_args(method=method, max_new=24, **knobs), api_name="/run")[-1]
    assert summary["method"] == method
    assert summary["draft"].startswith(f"trained:{ {'exit_distilled': 'exit'}.get(method, method)}")
    assert summary["speedup_vs_ar"]["matches_ar"] is True
    assert summary["summary"]["drafted"] > 0
