"""The Speculative tab: controls, the Run / Step / Pause / Reset handlers, and the step slider.

Handlers are generators that stream one render per decoding step. All model
work shares one queue (`concurrency_id="model"`), so sessions take turns on the
CPU/GPU while each keeps its own state in `gr.State`.
"""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import torch

from ..config import DRAFT_LEN, EMBEDDED_MODEL_ID, EXIT_LAYER, MAX_NEW_TOKENS, NGRAM, SEED, TEMPERATURE, TOP_P, ConfigError
from ..decoding.registry import METHODS
from ..models import ModelLoadError, ModelStore
from ..runner import prepare_run
from ..textio import check_prompt_fits, encode_prompt
from .session import SpecSession, measure_speedup, new_session, render

ASSETS = Path(__file__).resolve().parents[2] / "assets"
KNOBS = (DRAFT_LEN, EXIT_LAYER, NGRAM)


def load_examples() -> list:
    path = ASSETS / "examples.json"
    return json.loads(path.read_text()) if path.exists() else []


def _slider(knob, **kw):
    return gr.Slider(knob.low, knob.high, value=knob.default, step=1 if knob.integer else 0.05,
                     label=knob.name, info=knob.help, **kw)


def _method_info(name: str) -> str:
    m = METHODS.get(name)
    if m is None:
        return ""
    return f"**{m.label}** — {m.summary} *({'lossless' if m.lossless else 'lossy'})*"


def _knob_visibility(name: str):
    m = METHODS.get(name)
    used = {k.name for k in m.knobs} if m else set()
    updates = [gr.update(visible=k.name in used) for k in KNOBS]
    return [_method_info(name), *updates, gr.update(visible=bool(m and m.uses_draft_model))]


class SpeculativeTab:
    def __init__(self, store: ModelStore):
        self.store = store

    # the settings ------------------------------------------------------------
    def _key(self, prompt, method, draft_len, exit_layer, ngram, max_new, temperature, top_p, seed, target, draft):
        return (prompt, method, draft_len, exit_layer, ngram, max_new, temperature, top_p, seed,
                (target or "").strip(), (draft or "").strip())

    def _start(self, key) -> SpecSession:
        prompt, method, draft_len, exit_layer, ngram, max_new, temperature, top_p, seed, target, draft = key
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}")
        m = METHODS[method]
        values = {"draft_len": draft_len, "exit_layer": exit_layer, "ngram": ngram}
        knobs = {k.name: values[k.name] for k in m.knobs}
        if not prompt or not str(prompt).strip():
            raise ConfigError("the prompt is empty: type a question or pick an example")
        prepared = prepare_run(self.store, method, target or None, draft if m.uses_draft_model else None,
                               knobs, max_new, temperature, top_p, seed)
        ids = encode_prompt(prepared.target.tokenizer, prompt)
        check_prompt_fits(len(ids), prepared.config.max_new_tokens, prepared.target.max_positions)
        return new_session(key, prepared, prompt, ids)

    def _session_for(self, session: SpecSession | None, key):
        """Resume the session when the settings are unchanged and it is not finished; else start afresh."""
        if session is not None and session.key == key and not session.done:
            return session, False
        return self._start(key), True

    # rendering ---------------------------------------------------------------
    def _outputs(self, session, status: str, k=None):
        r = render(session, k)
        slider = gr.update(minimum=0, maximum=max(r["n_steps"] - 1, 1), value=r["k"],
                           interactive=r["n_steps"] > 1)
        summary = _run_summary(session)
        return (session, status, r["text"], slider, r["tree"], r["confidence"], r["strip"], r["metrics"],
                r["depth"], summary)

    def _status(self, session: SpecSession, note: str = "") -> str:
        if not session.steps:
            return note or "Ready."
        s = session.steps[-1]
        accepted = f"{s.n_accepted} of {s.n_drafted} drafted accepted" if s.n_drafted else "nothing drafted"
        state = {"eos": "finished (end of sequence)", "length": "finished (token limit)"}.get(session.decoder.finish_reason, "paused" if session.paused else "running")
        return (f"**Step {s.step}** · {accepted} · + {s.bonus_kind} `{session.bonus_labels[-1]}` · "
                f"{len(session.pieces.ids)} tokens · {state}" + (f" · {note}" if note else ""))

    # handlers ----------------------------------------------------------------
    def run(self, *args):
        *settings, session = args
        yield from self._drive(settings, session, max_steps=None)

    def step(self, *args):
        *settings, session = args
        yield from self._drive(settings, session, max_steps=1)

    def _drive(self, settings, session, max_steps):
        key = self._key(*settings)
        try:
            if session is None or session.key != key or session.done:
                yield self._outputs(session, "Loading the model and preparing the run…")
            session, fresh = self._session_for(session, key)
            session.paused = False
            note = "new run" if fresh else ""
            taken = 0
            while not session.done and not session.paused and (max_steps is None or taken < max_steps):
                with session.lock:
                    session.advance()
                taken += 1
                yield self._outputs(session, self._status(session, note))
            if session.done and session.speedup is None:
                yield self._outputs(session, self._status(session, "measuring plain AR on the same prompt…"))
                session.speedup = measure_speedup(session)
            yield self._outputs(session, self._status(session))
        except (ConfigError, ModelLoadError, ValueError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except torch.cuda.OutOfMemoryError:
            raise gr.Error("Out of GPU memory: pick a smaller model, fewer new tokens or a smaller draft.",
                           print_exception=False) from None
        except MemoryError:
            raise gr.Error("Out of memory: pick a smaller model or fewer new tokens.", print_exception=False) from None

    def pause(self, session):
        if session is None:
            return "Nothing is running."
        session.paused = True
        return self._status(session, "pause requested")

    def reset(self, session):
        return self._outputs(None, "Reset. Press Run or Step to start.")

    def scrub(self, k, session):
        if session is None or not session.steps:
            return self._outputs(session, "Nothing recorded yet.")[1:]
        r = self._outputs(session, self._status(session, f"showing recorded step {int(k)}"), k)
        return r[1:]

    # layout --------------------------------------------------------------------
    def build(self):
        examples = load_examples()
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                prompt = gr.Textbox(label="Prompt", lines=4, value=examples[0]["prompt"] if examples else "",
                                    placeholder="Ask the model something…", elem_id="sv-prompt")
                method = gr.Dropdown([(m.label, m.name) for m in METHODS.values()], value="sps", label="Method",
                                     elem_id="sv-method")
                method_info = gr.Markdown(_method_info("sps"))
                knob_sliders = [_slider(k, visible=k.name in {"draft_len", "exit_layer"}) for k in KNOBS]
                with gr.Accordion("Sampling and length", open=False):
                    max_new = _slider(MAX_NEW_TOKENS)
                    temperature = gr.Slider(TEMPERATURE.low, TEMPERATURE.high, value=TEMPERATURE.default, step=0.05,
                                            label="temperature", info="0 = greedy; > 0 = lossless speculative sampling")
                    top_p = gr.Slider(TOP_P.low, TOP_P.high, value=TOP_P.default, step=0.01, label="top_p")
                    seed = gr.Number(value=SEED.default, precision=0, label="seed")
                with gr.Accordion("Models", open=False):
                    target = gr.Textbox(value=EMBEDDED_MODEL_ID, label="Target model",
                                        info="the embedded model, or any Hugging Face causal LM id / local path")
                    draft = gr.Textbox(value="", label="Draft model (SpS)",
                                       info="empty = early-exit self-draft of the target; else an id sharing the target's tokenizer")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="sv-run")
                    step_btn = gr.Button("Step", elem_id="sv-step")
                    pause_btn = gr.Button("Pause", elem_id="sv-pause")
                    reset_btn = gr.Button("Reset", elem_id="sv-reset")
                if examples:
                    gr.Examples([[e["prompt"], e["method"]] for e in examples], [prompt, method], label="Examples")
            with gr.Column(scale=2):
                status = gr.Markdown("Ready. Press **Run** to stream steps, or **Step** to advance one.", elem_id="sv-status")
                text = gr.HTML(render(None)["text"], label="Generated text", elem_id="sv-text")
                slider = gr.Slider(0, 1, value=0, step=1, label="Recorded step", interactive=False, elem_id="sv-slider",
                                   info="re-renders any recorded step from the stored trace, without calling the model")
                tree = gr.Plot(render(None)["tree"], label="Draft tree", elem_id="sv-tree")
                confidence = gr.Plot(render(None)["confidence"], label="Per-position confidence", elem_id="sv-confidence")
                strip = gr.Plot(render(None)["strip"], label="Running strip", elem_id="sv-strip")
                with gr.Row():
                    metrics = gr.HTML("", label="Metrics", elem_id="sv-metrics")
                    depth = gr.Plot(render(None)["depth"], label="Acceptance by depth", elem_id="sv-depth")
                with gr.Accordion("Export: run summary (JSON)", open=False):
                    summary = gr.JSON(label="Run summary", elem_id="sv-summary")

        state = gr.State(None)
        settings = [prompt, method, *knob_sliders, max_new, temperature, top_p, seed, target, draft]
        outputs = [state, status, text, slider, tree, confidence, strip, metrics, depth, summary]
        method.change(_knob_visibility, method, [method_info, *knob_sliders, draft], queue=False)
        run_event = run_btn.click(self.run, [*settings, state], outputs, api_name="run",
                                  concurrency_id="model", concurrency_limit=1)
        step_btn.click(self.step, [*settings, state], outputs, api_name="step",
                       concurrency_id="model", concurrency_limit=1)
        pause_btn.click(self.pause, state, status, queue=False, api_name="pause")
        reset_btn.click(self.reset, state, outputs, cancels=[run_event], api_name="reset")
        for event in (slider.release, slider.input):
            event(self.scrub, [slider, state], outputs[1:], api_name=False, trigger_mode="always_last")


def _run_summary(session: SpecSession | None) -> dict | None:
    if session is None or not session.steps:
        return None
    trace = session.trace()
    return {
        "method": trace.method,
        "target": trace.target_id,
        "draft": trace.draft_id,
        "config": trace.config,
        "text": session.pieces.text,
        "prompt_ids": trace.prompt_ids.tolist(),
        "output_ids": trace.output_ids.tolist(),
        "finished": trace.finish_reason or None,
        "summary": trace.summary(),
        "speedup_vs_ar": session.speedup,
    }
