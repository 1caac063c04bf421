"""The Diffusion tab through gradio_client: runs, steps, scrubs, inspects cells, compares schedules, exports,
and refuses bad input with a clear message."""
import json

import gradio as gr
import numpy as np
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
            "lattice_compare", "lattice_pin", "lattice_remask", "export"} <= names


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
    # threshold never reads the step budget; the delimiter threshold only matters with adaptive blocks
    assert "steps" not in shown("diffusion", "threshold") and "steps" in shown("diffusion", "prophet")
    assert "delimiter_threshold" not in shown("diffusion", "low_confidence")
    adaptive = {k.name for k, u in zip(LATTICE_KNOBS, _knob_visibility("diffusion", "low_confidence", True))
                if u["visible"]}
    assert "delimiter_threshold" in adaptive


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


# --- the clickable lattice, panels that belong to a run, defaults, Jacobi's AR baseline -------------------
def _tab(store):
    from specviz.ui.diffusion import DiffusionTab

    return DiffusionTab(store)


def _drive(tab, prompt, settings, session=None, max_steps=None):
    """Every output the Run (max_steps None) or Step handler yields, and the error it ended with, if any."""
    outs, error = [], None
    try:
        for out in tab.controller.drive(prompt, settings, {}, session, max_steps, "test"):
            outs.append(out)
    except gr.Error as err:
        error = err
    return outs, error


# the handlers' outputs, in the order of DiffusionTab.build's `outputs`
STATE, STATUS, CELL, CARD, COMPARE, METRICS, SUMMARY = 0, 1, 8, 9, slice(10, 15), 15, 16


def test_clicking_a_lattice_cell_opens_its_card(store):
    """The lattice is a gr.HTML whose own js_on_load sends a click event with the cell's data-step / data-pos;
    no script is injected at launch."""
    from specviz.ui import build_demo
    from specviz.ui.diffusion import LATTICE_CLICK_JS

    tab = _tab(store)
    outs, error = _drive(tab, "Name three fruits.", {"gen_length": 8, "steps": 4, "block_size": 8})
    assert error is None
    session = outs[-1][STATE]
    cell, card = tab.pick_cell(session, gr.EventData(None, {"step": 2, "position": 3}))
    assert cell == "2, 3" and "step 2 · position 3" in card and "rank" in card
    assert "not recorded" in tab.pick_cell(session, gr.EventData(None, {"step": 9, "position": 0}))[1]
    for bad in ({}, {"step": "2", "position": 3}, {"step": True, "position": 1}, None, [2, 3]):
        assert "carried no cell" in tab.pick_cell(session, gr.EventData(None, bad))[1]
    assert "Run or step first" in tab.pick_cell(None, gr.EventData(None, {"step": 0, "position": 0}))[1]
    # the lattice cells carry what the click handler reads
    lattice = session.view.full()["lattice"]
    assert 'data-step="2"' in lattice and 'data-pos="3"' in lattice
    assert "trigger('click'" in LATTICE_CLICK_JS and "closest('[data-pos]')" in LATTICE_CLICK_JS
    demo = build_demo(store)
    html = next(c for c in demo.config["components"] if c.get("props", {}).get("elem_id") == "sd-lattice")
    assert html["type"] == "html" and "trigger('click'" in html["props"]["js_on_load"]
    assert not demo.js or "plotly_click" not in str(demo.js)


def test_a_new_run_clears_what_the_last_one_left(store):
    tab = _tab(store)
    outs, _ = _drive(tab, "Name three fruits.", {"gen_length": 8, "steps": 4, "block_size": 8})
    session = outs[-1][STATE]
    assert session.done
    # steps of the same run leave the card and the comparison alone
    assert all(isinstance(o[CARD], type(gr.skip())) for o in outs[1:])
    # a new schedule: the first thing shown clears the lattice, the card, the comparison and the metrics
    outs, error = _drive(tab, "Name three fruits.", {"gen_length": 8, "steps": 4, "block_size": 8,
                                                     "schedule": "threshold"}, session, max_steps=1)
    assert error is None
    first = outs[0]
    # the old session stays in the state until the new one replaces it (a run that fails to start loses nothing)
    assert isinstance(first[STATE], type(gr.skip())) and "Loading" in first[STATUS]
    assert first[CELL] == "" and "Click a cell" in first[CARD]
    assert first[COMPARE][3] == "" and first[COMPARE][4] is None and first[METRICS] == "" and first[SUMMARY] is None
    assert "Step 0" in outs[-1][STATUS] and "threshold" in outs[-1][SUMMARY]["method"]


def test_a_failed_run_says_what_failed_in_the_status(store):
    tab = _tab(store)
    outs, error = _drive(tab, "Hi", {"model": "no-such-org/no-such-mdm"})
    assert error is not None and "no-such-org/no-such-mdm" in error.message
    assert "Loading" in outs[0][STATUS]
    assert outs[-1][STATUS].startswith("**Failed**") and "no-such-org/no-such-mdm" in outs[-1][STATUS]


def test_the_schedules_differ_under_the_tabs_defaults(store):
    """The tab opens on settings under which the schedules visibly differ on the shipped toy (under the knobs'
    own defaults low-confidence, threshold and Prophet all took 32 steps to the same text)."""
    from specviz.runs import prepare_lattice_run
    from specviz.textio import encode_prompt
    from specviz.ui.diffusion import PROMPT, TOY_DEFAULTS, collect_settings

    from specviz.config import LATTICE_KNOBS as KNOBS

    values = [TOY_DEFAULTS.get(k.name, k.default) for k in KNOBS]
    runs = {}
    for schedule in ("low_confidence", "threshold", "prophet"):
        values[[k.name for k in KNOBS].index("schedule")] = schedule
        settings = collect_settings("diffusion", "tiny-mdm", *values, 32, 0.0, 0)
        run = prepare_lattice_run(store, settings)
        dec = run.decoder(encode_prompt(run.tokenizer, PROMPT), record=True)
        for _ in dec.steps():
            pass
        tr = dec.trace()
        runs[schedule] = (len(tr.steps), tr.output_ids.tolist(), any(s.all_in for s in tr.steps))
    steps = {name: r[0] for name, r in runs.items()}
    assert len(set(steps.values())) == 3, steps
    assert runs["threshold"][1] != runs["low_confidence"][1]
    assert runs["prophet"][2]  # Prophet went all-in


def test_jacobi_metrics_carry_the_ar_baseline_and_speedup(client, embedded):
    """As the CLI's lattice bench: AR on the same model and prompt, timed after the run; the metrics show tokens
    per forward, the AR time, the speedup and whether greedy Jacobi matched AR."""
    out = _run(client, method="jacobi", model=EMBEDDED_MODEL_ID, gen_length=8, window=4)
    metrics, summary = out[-2], out[-1]
    for words in ("tokens per forward", "speedup vs AR", "AR time", "greedy output = AR"):
        assert words in metrics
    speedup = summary["speedup_vs_ar"]
    assert speedup["matches_ar"] is True and speedup["ratio"] > 0 and speedup["ar_s"] > 0
    assert f"{speedup['ratio']:.2f}×" in metrics


# --- interventions: pins and send-backs, through the API --------------------------------------------------------
PIN_SETTINGS = {"gen_length": 16, "steps": 8, "block_size": 8}
PIN_PROMPT = "How do I keep basil alive on a kitchen windowsill?"


def _token_id(embedded, text):
    ids = embedded.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    return ids[0]


def _exported(c):
    from specviz.trace import Trace

    doc = json.loads(open(c.predict(api_name="/lattice_export")).read())
    return doc, Trace.from_dict(doc)  # checked: the record contract holds with the interventions in it


def test_a_pinned_token_stays_in_place(app_url, embedded):
    """Pins set before Run are in place from step 0 to the end, in the final canvas and in the exported trace,
    and a replay of that trace marks them."""
    from gradio_client import handle_file

    c = Client(app_url, verbose=False)
    water, the = _token_id(embedded, " water"), _token_id(embedded, " the")
    first = c.predict(prompt=PIN_PROMPT, settings=PIN_SETTINGS, position=5, token=" water", api_name="/lattice_pin")
    assert "Pinned ' water' at position 5 for a new run" in first[0] and "step 0" in first[0]
    second = c.predict(prompt=PIN_PROMPT, settings=PIN_SETTINGS, position=12, token=" the", api_name="/lattice_pin")
    assert "Pins: 5 = ' water', 12 = ' the'" in second[0]
    out = _run(c, PIN_PROMPT, **PIN_SETTINGS)
    status, lattice, summary = out[0], out[3], out[-1]
    assert "finished" in status and summary["summary"]["pinned"] == 2 and summary["summary"]["steps"] == 8
    assert 'class="sv-pinned"' in lattice and "pinned by you" in lattice
    doc, trace = _exported(c)
    assert all(s.canvas[5] == water and s.canvas[12] == the and s.pinned[[5, 12]].all() for s in trace.steps)
    assert trace.steps[0].intervention[[5, 12]].tolist() == [1, 1] and doc["steps"][0]["pinned"][5] == 1
    assert summary["output_ids"][5] == water or trace.steps[-1].eos_at < 5  # the text stops at an EOS, if any
    card = c.predict(f"{len(trace.steps) - 1}, 12", api_name="/lattice_cell")
    assert "pinned by you: in place from step 0" in card
    # the file replays with its marks; a replayed run cannot be changed
    path = c.predict(api_name="/lattice_export")
    replayed = c.predict(handle_file(path), api_name="/lattice_open_trace")
    assert "Replaying" in replayed[0] and 'class="sv-pinned"' in replayed[3]
    with pytest.raises(Exception, match="replayed from a trace: a recorded run cannot be changed"):
        c.predict(position=3, api_name="/lattice_remask")


def test_send_back_and_pin_mid_run(app_url, embedded):
    """Between steps: a committed cell goes back to the mask and the schedule fills it again; a pin on a masked cell
    holds from the next step to the end."""
    c = Client(app_url, verbose=False)
    _run(c, PIN_PROMPT, api="/lattice_step", **PIN_SETTINGS)
    _run(c, PIN_PROMPT, api="/lattice_step", **PIN_SETTINGS)
    _, trace = _exported(c)
    last = trace.steps[-1]
    committed = int(np.flatnonzero(last.canvas >= 0)[0])
    masked = int(np.flatnonzero(last.canvas < 0)[-1])
    out = c.predict(position=committed, api_name="/lattice_remask")
    assert f"sent position {committed}" in out[0] and "fills it again from step 2" in out[0]
    out = c.predict(prompt=PIN_PROMPT, settings=PIN_SETTINGS, position=masked, token=" the", api_name="/lattice_pin")
    assert f"pinned ' the' at position {masked}: it holds from step 2" in out[0] and "Step 1" in out[0]
    with pytest.raises(Exception, match=f"cell {masked} is masked already|a committed cell"):
        c.predict(position=int(np.flatnonzero(last.canvas < 0)[0]), api_name="/lattice_remask")
    assert "Step 2" in _run(c, PIN_PROMPT, api="/lattice_step", **PIN_SETTINGS)[0]  # the same run carries on
    final = _run(c, PIN_PROMPT, **PIN_SETTINGS)
    assert "finished" in final[0] and final[-1]["summary"]["sent_back"] == 1
    _, trace = _exported(c)
    step2 = trace.steps[2]
    assert step2.intervention[committed] == 2 and step2.intervention[masked] == 1
    assert step2.canvas[committed] < 0 or step2.cell_state[committed] == 1  # masked, or refilled by this step
    assert trace.steps[-1].canvas[committed] >= 0  # filled again by the end
    the = _token_id(embedded, " the")
    assert all(s.canvas[masked] == the and s.pinned[masked] for s in trace.steps[2:])
    assert not any(s.pinned.any() for s in trace.steps[:2])


def test_bad_interventions_are_refused_clearly(app_url):
    fresh = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="nothing to send back yet: run or step first"):
        fresh.predict(position=3, api_name="/lattice_remask")
    for position, token, message in [(3, "hello world", "is 2 tokens"), (3, "", "type the token to pin"),
                                     (99, " the", "position 99 is off the canvas"),
                                     ("abc", " the", "position must be a whole number"),
                                     (3, "water", "did you mean ' water'")]:
        with pytest.raises(Exception, match=message):
            fresh.predict(prompt=PIN_PROMPT, settings=PIN_SETTINGS, position=position, token=token,
                          api_name="/lattice_pin")
    with pytest.raises(Exception, match="pins need the diffusion method"):
        fresh.predict(prompt=PIN_PROMPT, settings={"method": "jacobi"}, position=1, token=" the",
                      api_name="/lattice_pin")
    # the session was not harmed: a normal step, then a send-back of a masked cell is refused by name
    assert "Step 0" in _run(fresh, PIN_PROMPT, api="/lattice_step", **PIN_SETTINGS)[0]
    _, trace = _exported(fresh)
    masked = int(np.flatnonzero(trace.steps[-1].canvas < 0)[0])
    with pytest.raises(Exception, match=f"cell {masked} is masked already"):
        fresh.predict(position=masked, api_name="/lattice_remask")
