"""The Benchmark panel: the Spec-Bench harness of `python -m specviz bench` served from the app. A benchmark over
two questions returns its table through gradio_client, with speedups from the same run; bad input gets a message;
a public server caps the request; cancelling stops between questions; the CLI runs the same harness."""
import csv
import threading
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client

from specviz.config import ConfigError
from specviz.policy import ServerPolicy
from specviz.runs import prepare_run
from specviz.runs.benchmark import DEV_QUESTIONS, bench_pieces, category_sizes, entry_settings, load_questions
from specviz.ui.benchmark import BenchmarkPanel, parse_methods
from specviz.ui.controller import Sharing

REQUEST = dict(methods=["prompt_lookup"], categories=["writing", "math"], per_category=1, max_new_tokens=16)


@pytest.fixture(scope="module")
def bench_server(store, embedded):
    from specviz.ui import launch

    with gr.Blocks() as demo:
        panel = BenchmarkPanel(store).build()
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield panel, url
    demo.close()


@pytest.fixture(scope="module")
def client(bench_server):
    return Client(bench_server[1], verbose=False)


@pytest.fixture(scope="module")
def result(client):
    return client.predict(**REQUEST, api_name="/benchmark")


def test_the_shipped_dev_questions_stand_alone():
    """A clean clone has the questions and their licence; the file stays small."""
    assert DEV_QUESTIONS.exists() and (DEV_QUESTIONS.parent / "LICENSE").read_text().startswith("Apache License")
    assert DEV_QUESTIONS.stat().st_size < 500_000
    sizes = category_sizes()
    assert sum(sizes.values()) == 240 and sizes["writing"] == 5
    assert [q["category"] for q in load_questions(DEV_QUESTIONS, per_category=1, categories=["math", "writing"])] \
        == ["writing", "math"]


def test_benchmark_returns_its_table_through_gradio_client(result):
    progress, table, _cat, _acc, _len, csv_path, json_path, results = result
    assert "Finished" in progress and "2 of 2 question(s)" in progress
    assert [q["category"] for q in results["questions"]] == ["writing", "math"]
    methods = results["methods"]
    assert list(methods) == ["ar", "prompt_lookup"]
    ar, pl = methods["ar"], methods["prompt_lookup"]
    # greedy prompt lookup is lossless: the same tokens as AR, in no more target forwards
    assert pl["matches_ar"] is True and pl["tokens"] == ar["tokens"] > 0
    assert ar["tau"] == 1.0 and pl["tau"] >= 1.0 and pl["target_forwards"] <= ar["target_forwards"]
    # speedups come from this run: AR's wall over the method's, both measured here
    assert ar["speedup_vs_ar"] == 1.0
    assert pl["speedup_vs_ar"] == pytest.approx(ar["wall_s"] / pl["wall_s"])
    for c in ("writing", "math"):
        assert pl["by_category"][c]["speedup_vs_ar"] == pytest.approx(
            ar["by_category"][c]["wall_s"] / pl["by_category"][c]["wall_s"])
    # the per-step metrics: one accepted length per step, acceptance rates in [0, 1]
    assert sum(pl["accepted_lengths"]) == pl["drafted_steps"] <= pl["steps"]
    assert ar["accepted_lengths"] == [] and ar["steps"] == ar["target_forwards"]
    assert all(r is None or 0 <= r <= 1 for r in pl["acceptance_by_depth"])
    assert len(pl["verified_by_depth"]) == len(pl["acceptance_by_depth"])
    assert all((n > 0) == (r is not None) for n, r in zip(pl["verified_by_depth"], pl["acceptance_by_depth"]))
    assert results["settings"]["prompt_lookup"]["max_new_tokens"] == 16
    rows = {row[0]: row for row in table["data"]}
    assert table["headers"][:5] == ["method", "τ", "tok/s", "speedup vs AR", "greedy = AR"]
    assert rows["prompt_lookup"][4] == "yes" and rows["ar"][4] == "baseline"
    with open(csv_path) as f:
        lines = list(csv.reader(f))
    assert lines[0][:5] == ["method", "tau", "tok_per_s", "speedup_vs_ar", "matches_ar"]
    assert [r[0] for r in lines[1:]] == ["ar", "prompt_lookup"]
    assert Path(json_path).read_text().count('"prompt_lookup"') >= 1


def test_benchmark_endpoint_takes_named_inputs(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/benchmark"]
    assert [p["parameter_name"] for p in info["parameters"]] == ["methods", "categories", "per_category",
                                                                 "max_new_tokens"]


@pytest.mark.parametrize("change, message", [
    ({"methods": ["hydra"]}, "unknown method 'hydra'"),
    ({"methods": ["eagle:budget=999"]}, "out of range"),
    ({"per_category": 0}, "per_category=0 is out of range"),
    ({"per_category": 10**9}, "per_category=1000000000 is out of range"),
    ({"categories": ["poetry"]}, "unknown category 'poetry'"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
])
def test_bad_input_gets_a_message(client, change, message):
    with pytest.raises(Exception, match=message):
        client.predict(**{**REQUEST, **change}, api_name="/benchmark")


def test_public_server_caps_a_benchmark(store):
    panel = BenchmarkPanel(store, Sharing(ServerPolicy(public=True)))
    with pytest.raises(ConfigError, match="cap of 8 per benchmark"):
        panel.check(["prompt_lookup"], [], 1, 16)  # 13 categories
    with pytest.raises(ConfigError, match="cap of 64"):
        panel.check(["prompt_lookup"], ["math"], 1, 128)
    with pytest.raises(ConfigError, match="cap of 4"):
        panel.check(["prompt_lookup", "sps", "ngram_tree", "retrieval"], ["math"], 1, 16)
    entries, questions, _ = panel.check(["prompt_lookup"], ["math"], 2, 16)
    assert [e[0] for e in entries] == ["ar", "prompt_lookup"] and len(questions) == 2


def test_methods_box_and_overrides_parse_like_the_cli():
    assert parse_methods(["prompt_lookup", "sps"], "sps:draft_len=2") == ["prompt_lookup", "sps:draft_len=2"]
    assert parse_methods(["sps"], '[{"method": "sps", "draft_len": 2}]') == [{"method": "sps", "draft_len": 2}]
    panel = BenchmarkPanel(store=None)
    entries, _, settings = panel.check([{"method": "sps", "draft_len": 2}, "sps"], ["math"], 1, 8)
    assert [e[0] for e in entries] == ["ar", "sps:draft_len=2", "sps"]
    assert settings["sps:draft_len=2"].knobs["draft_len"] == 2 and settings["ar"].max_new_tokens == 8
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_methods([], "[{oops")


def test_cancel_stops_between_questions(store, embedded):
    """The harness asks `cancelled()` before each question; the report covers only finished questions."""
    questions = load_questions(DEV_QUESTIONS, per_category=1, categories=["writing", "math", "coding"])
    prepared = {m: prepare_run(store, entry_settings(m, {}, max_new_tokens=4)) for m in ("ar", "prompt_lookup")}
    stop = threading.Event()
    events = []
    for event in bench_pieces(prepared, questions, warmup=False, cancelled=stop.is_set):
        if event is not None:
            events.append(event)
            if event["event"] == "question" and event["method"] == "prompt_lookup":
                stop.set()  # pressed during question 1: question 1 finishes, question 2 never starts
    assert [(e["index"], e["method"]) for e in events[:-1]] == [(1, "ar"), (1, "prompt_lookup")]
    last = events[-1]
    assert last["event"] == "report" and last["cancelled"] and last["done"] == 1 and last["of"] == 3
    assert list(last["report"]["ar"]["by_category"]) == ["writing"]


def test_cancel_in_the_panel_stops_its_run(store, embedded):
    panel = BenchmarkPanel(store)

    class Request:
        session_hash = "cancel-test"

    run = panel.benchmark(["prompt_lookup"], ["writing", "math", "coding"], 1, 4, request=Request())
    outputs = []
    for out in run:
        outputs.append(out)
        if "[1/3]" in out[0]:
            assert "Cancelling" in panel.cancel(Request())
    assert "Cancelled" in outputs[-1][0] and "1 of 3" in outputs[-1][0]
    assert outputs[-1][-1]["cancelled"] and outputs[-1][-1]["done"] == 1
    assert panel.cancel(Request()) == "No benchmark is running."


def test_the_cli_runs_the_same_harness(store, embedded):
    """`bench.spec_bench.compare` (the CLI's) drains the panel's generator: same tokens and forwards."""
    from specviz.bench.spec_bench import compare

    questions = load_questions(DEV_QUESTIONS, per_category=1, categories=["math"])
    prepared = {m: prepare_run(store, entry_settings(m, {}, max_new_tokens=8)) for m in ("ar", "prompt_lookup")}
    report = compare(prepared, questions, warmup=False)
    events = list(bench_pieces(prepared, questions, warmup=False))
    again = events[-1]["report"]
    for m in ("ar", "prompt_lookup"):
        for k in ("tokens", "target_forwards", "matches_ar", "accepted_lengths", "acceptance_by_depth", "steps"):
            assert report[m][k] == again[m][k], (m, k)
    # one None per decode step (warm-up off): the app can give each its own turn
    steps = sum(report[m]["steps"] for m in report)
    assert sum(e is None for e in events) == steps
