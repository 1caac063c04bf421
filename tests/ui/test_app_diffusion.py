"""The Diffusion tab through gradio_client: runs, steps, scrubs, inspects cells, compares schedules, exports,
and refuses bad input with a clear message."""
import json

import pytest
from gradio_client import Client

from specviz.config import EMBEDDED_MODEL_ID


def _run(client, prompt="Name three fruits.", api="/lattice_run", **settings):
    settings.setdefault("gen_length", 16)
    return client.predict(prompt=prompt, settings=settings, api_name=api)


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_demo_has_the_lattice_endpoints():
    from specviz.models import ModelStore
    from specviz.ui import build_demo

    demo = build_demo(ModelStore(loader=lambda _: (_ for _ in ()).throw(AssertionError("no loading at build"))))
    names = {d["api_name"] for d in demo.config["dependencies"] if d.get("api_name")}
    assert {"lattice_run", "lattice_step", "lattice_pause", "lattice_reset", "lattice_cell", "lattice_export",
            "lattice_compare", "export"} <= names


def test_diffusion_run_step_scrub_and_cell(client, embedded):
    first = _run(client, api="/lattice_step", steps=8, block_size=8)
    assert "Step 0" in first[0] and "block 0" in first[0]
    out = _run(client, steps=8, block_size=8)
    status, text_html, *_rest, metrics, summary = out
    assert "finished" in status
    s = summary["summary"]
    assert summary["method"] == "diffusion:low_confidence" and s["steps"] == 8 and s["forwards"] == 8
    assert s["tokens_per_forward"] == pytest.approx(s["new_tokens"] / 8)
    assert "tokens per forward" in metrics and summary["kernels"] == "reference (cpu)"
    assert summary["lossless"] is False and summary["text"]
    assert summary["settings"]["steps"] == 8 and summary["settings"]["adaptive_block"] is False
    assert text_html.count('class="sv-tok"') >= s["new_tokens"]
    card = client.predict("3, 5", api_name="/lattice_cell")
    assert "step 3" in card.lower() and "position 5" in card.lower()
    assert "not recorded" in client.predict("99, 1", api_name="/lattice_cell")
    path = client.predict(api_name="/lattice_export")
    trace = json.loads(open(path).read())
    assert trace["method"] == "diffusion:low_confidence" and len(trace["steps"]) == 8
    assert trace["steps"][0]["kind"] == "diffusion"


def test_jacobi_window_changes_mid_run(client, embedded):
    jacobi = dict(method="jacobi", model=EMBEDDED_MODEL_ID, gen_length=12)
    assert "Step 0" in _run(client, api="/lattice_step", window=2, **jacobi)[0]
    second = _run(client, api="/lattice_step", window=6, **jacobi)
    assert "Step 1" in second[0] and "changed window=6" in second[0]
    final = _run(client, window=6, **jacobi)[-1]
    assert final["settings"]["window"] == 6 and final["lossless"] is True
    # anything else (here the seed) starts a new run
    assert "Step 0" in _run(client, api="/lattice_step", window=6, seed=1, **jacobi)[0]


def test_jacobi_on_the_embedded_model_is_lossless(client, embedded):
    out = _run(client, method="jacobi", model=EMBEDDED_MODEL_ID, gen_length=12, window=4)
    summary = out[-1]
    assert summary["method"] == "jacobi" and summary["lossless"] is True
    assert len(summary["output_ids"]) == 12
    import torch

    p = summary["prompt_ids"]
    ref = embedded.model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False)[0, len(p):].tolist()
    assert summary["output_ids"] == ref


def test_two_schedules_side_by_side(client):
    a, b, progress, table, result = client.predict(
        prompt="Name three fruits.", settings={"gen_length": 16, "steps": 16, "threshold": 0.5},
        schedule_a="low_confidence", schedule_b="threshold", api_name="/lattice_compare")
    assert "A: low_confidence" in table and "B: threshold" in table
    assert a is not None and b is not None
    assert [r["schedule"] for r in result] == ["low_confidence", "threshold"]
    assert all(r["summary"]["forwards"] >= 1 for r in result)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"method": "diffusion", "model": EMBEDDED_MODEL_ID}, "autoregressive: run it with Jacobi"),
        ({"method": "jacobi", "model": "tiny-mdm"}, "Jacobi decoding needs an autoregressive model"),
        ({"model": "GSAI-ML/LLaDA-8B-Instruct"}, "This server does not run such code"),
        ({"model": "GSAI-ML/LLaDA-8B-Instruct", "trust_remote_code": True}, "never by a request"),
        ({"model": "no-such/model"}, "not a diffusion LM specviz knows"),
        ({"gen_length": 0}, "gen_length=0 is out of range"),
        ({"threshold": 1.5}, "threshold=1.5 is out of range"),
        ({"schedule": "sideways"}, "schedule='sideways' is not an option"),
        ({"window": 4}, "has no field(s) 'window'"),
        ({"adaptive_block": "maybe"}, "adaptive_block is a switch"),
        ({"prompt": "word " * 600}, "exceeds the model's context"),
    ],
)
def test_bad_lattice_input_gets_a_clear_message(client, kwargs, message):
    with pytest.raises(Exception) as err:
        _run(client, **kwargs)
    assert message in str(err.value)


def test_the_diffusion_tab_shows_the_knobs_the_schedule_reads():
    """Schedule knobs come from the schedule registry's `params`: only the picked schedule's are shown."""
    from specviz.config import LATTICE_KNOBS
    from specviz.ui.diffusion import _knob_visibility

    def shown(method, schedule):
        return {k.name for k, u in zip(LATTICE_KNOBS, _knob_visibility(method, schedule)) if u["visible"]}

    assert "threshold" in shown("diffusion", "threshold") and "threshold" not in shown("diffusion", "prophet")
    assert "prophet_gap" in shown("diffusion", "prophet") and "remask_below" in shown("diffusion", "remask")
    assert {"block_size", "steps", "cache"} <= shown("diffusion", "random")
    assert shown("jacobi", "threshold") == {"window"}


def test_remote_code_is_the_operators_choice(monkeypatch, store):
    """A request can never enable remote code; a server started with SPECVIZ_TRUST_REMOTE_CODE=1 does."""
    from specviz.config import ConfigError
    from specviz.models import ModelLoadError, ModelStore
    from specviz.runs import prepare_lattice_run

    assert ModelStore().trust_remote_code is False
    with pytest.raises(ConfigError, match="never by a request"):
        prepare_lattice_run(store, {"model": "GSAI-ML/LLaDA-8B-Instruct", "trust_remote_code": True})
    monkeypatch.setenv("SPECVIZ_TRUST_REMOTE_CODE", "1")
    trusting = ModelStore()
    assert trusting.trust_remote_code is True
    # past the remote-code gate, offline, the Hub is the next thing missing
    with pytest.raises(ModelLoadError, match="unreachable"):
        prepare_lattice_run(trusting, {"model": "GSAI-ML/LLaDA-8B-Instruct"})
