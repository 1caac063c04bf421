"""The Speculative tab: controls, the Run / Step / Pause / Reset handlers, and the step slider.

Handlers are generators that stream one render per decoding step. All model
work shares one queue (`concurrency_id="model"`), so sessions take turns on the
CPU/GPU while each keeps its own state in `gr.State`.
"""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from ..config import EMBEDDED_MODEL_ID, MAX_NEW_TOKENS, SEED, SHAPE_KNOBS, TEMPERATURE, TOP_P, ConfigError
from ..decoding.registry import METHODS, knob_table
from ..models import ModelLoadError, ModelStore
from ..models.trained import available_kinds
from ..runner import prepare_run, what_if
from ..textio import check_prompt_fits, encode_prompt
from ..viz.whatif import whatif_figure, whatif_table_html
from ..viz.tree import empty_figure
from .controls import export_panel, run_buttons, scrubber_update, step_scrubber, user_errors, write_trace
from .session import SpecSession, measure_speedup, new_session, render

ASSETS = Path(__file__).resolve().parents[2] / "assets"
KNOBS = tuple(knob_table().values())  # every method's knobs, each once, in registry order
KNOB_NAMES = tuple(k.name for k in KNOBS)
DEFAULT_METHOD = "sps"


def load_examples() -> list:
    path = ASSETS / "examples.json"
    return json.loads(path.read_text()) if path.exists() else []


def _control(knob, **kw):
    if knob.choices:
        return gr.Dropdown(list(knob.choices), value=knob.default, label=knob.name, info=knob.help,
                           allow_custom_value=knob.free_text, elem_id=f"sv-knob-{knob.name}", **kw)
    return gr.Slider(knob.low, knob.high, value=knob.default, step=1 if knob.integer else 0.01,
                     label=knob.name, info=knob.help, elem_id=f"sv-knob-{knob.name}", **kw)


def _method_info(name: str) -> str:
    m = METHODS.get(name)
    if m is None:
        return ""
    info = f"**{m.label}** — {m.summary} *({'lossless' if m.lossless else 'lossy'})*"
    if m.uses_trained:
        if m.uses_trained in available_kinds(None):
            info += " Uses the drafter shipped for the embedded model (its training recipe is in assets/drafters/)."
        else:
            info += (" ⚠ **Not installed:** no trained drafter of this kind is shipped for the embedded model; "
                     "rebuild it with `python -m specviz train`, or give a head checkpoint for a Hub target.")
    return info


def _method_label(m) -> str:
    if m.uses_trained and m.uses_trained not in available_kinds(None):
        return f"{m.label} — not installed"
    return m.label


DRAFT_FIELD = {"label": "Draft model", "info": "empty = early-exit self-draft of the target; else an id sharing the target's tokenizer"}
HEAD_FIELD = {"label": "Trained head (EAGLE / Medusa checkpoint)",
              "info": "empty = the drafter shipped for the embedded model; for a Hub target, a head id or local directory"}


def _knob_visibility(name: str):
    """Show the method's knobs at its own defaults (EAGLE opens on its 60-node tree), and its draft field."""
    m = METHODS.get(name)
    used = {k.name for k in m.knobs} if m else set()
    updates = [gr.update(visible=True, value=m.default(k)) if k.name in used else gr.update(visible=False) for k in KNOBS]
    field = HEAD_FIELD if m and m.uses_trained else DRAFT_FIELD
    draft = gr.update(visible=bool(m and (m.uses_draft_model or m.uses_trained)), **field)
    return [_method_info(name), *updates, draft]


class SpeculativeTab:
    def __init__(self, store: ModelStore):
        self.store = store

    # the settings ------------------------------------------------------------
    def _key(self, prompt, method, *rest):
        knob_values = dict(zip(KNOB_NAMES, rest[: len(KNOBS)]))
        max_new, temperature, top_p, seed, target, draft = rest[len(KNOBS):]
        m = METHODS.get(method)
        used = {k.name: knob_values[k.name] for k in m.knobs} if m else {}
        return (prompt, method, tuple(sorted(used.items())), max_new, temperature, top_p, seed,
                (target or "").strip(), (draft or "").strip())

    @staticmethod
    def _run_part(key):
        """The settings that need a fresh run; tree-shape knobs are left out, they apply mid-run."""
        knobs = tuple((n, v) for n, v in key[2] if n not in SHAPE_KNOBS)
        return (*key[:2], knobs, *key[3:])

    def _start(self, key) -> SpecSession:
        prompt, method, knob_items, max_new, temperature, top_p, seed, target, draft = key
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}")
        m = METHODS[method]
        knobs = dict(knob_items)
        if not prompt or not str(prompt).strip():
            raise ConfigError("the prompt is empty: type a question or pick an example")
        prepared = prepare_run(self.store, method, target or None, draft if (m.uses_draft_model or m.uses_trained) else None,
                               knobs, max_new, temperature, top_p, seed)
        ids = encode_prompt(prepared.target.tokenizer, prompt)
        check_prompt_fits(len(ids), prepared.config.max_new_tokens, prepared.target.max_positions)
        return new_session(key, prepared, prompt, ids)

    def _session_for(self, session: SpecSession | None, key):
        """Resume the session when the settings are unchanged and it is not finished; else start afresh.

        A change of tree-shape knobs alone (depth, top_k, budget, preset, draft length, prune
        threshold) keeps the run and takes effect on its next step."""
        if session is None or session.done or self._run_part(session.key) != self._run_part(key):
            return self._start(key), "new run"
        if session.key != key:
            changed = dict(set(key[2]) - set(session.key[2]))
            checked = session.prepared.method.check_knobs({**dict(session.key[2]), **changed})
            session.decoder.update_shape({n: checked[n] for n in changed})
            session.key = key
            return session, "shape changed: " + ", ".join(f"{n}={v}" for n, v in sorted(changed.items())) + " from this step"
        return session, ""

    # rendering ---------------------------------------------------------------
    def _outputs(self, session, status: str, k=None, tree_depth=None):
        r = render(session, k, tree_depth)
        slider = scrubber_update(r["n_steps"], r["k"])
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
        *settings, tree_depth, session = args
        yield from self._drive(settings, session, None, tree_depth)

    def step(self, *args):
        *settings, tree_depth, session = args
        yield from self._drive(settings, session, 1, tree_depth)

    def _drive(self, settings, session, max_steps, tree_depth=None):
        key = self._key(*settings)
        with user_errors("pick a smaller model, fewer new tokens or a smaller draft"):
            if session is None or self._run_part(session.key) != self._run_part(key) or session.done:
                yield self._outputs(session, "Loading the model and preparing the run…", tree_depth=tree_depth)
            session, note = self._session_for(session, key)
            session.paused = False
            taken = 0
            while not session.done and not session.paused and (max_steps is None or taken < max_steps):
                with session.lock:
                    session.advance()
                taken += 1
                yield self._outputs(session, self._status(session, note), tree_depth=tree_depth)
            if session.done and session.speedup is None:
                yield self._outputs(session, self._status(session, "measuring plain AR on the same prompt…"),
                                    tree_depth=tree_depth)
                session.speedup = measure_speedup(session)
            yield self._outputs(session, self._status(session, "" if session.done else note), tree_depth=tree_depth)

    def pause(self, session):
        if session is None:
            return "Nothing is running."
        session.paused = True
        return self._status(session, "pause requested")

    def reset(self, session):
        return self._outputs(None, "Reset. Press Run or Step to start.")

    def scrub(self, k, tree_depth, session):
        if session is None or not session.steps:
            return self._outputs(session, "Nothing recorded yet.")[1:]
        r = self._outputs(session, self._status(session, f"showing recorded step {int(k)}"), k, tree_depth)
        return r[1:]

    def export(self, session):
        if session is None or not session.steps:
            raise gr.Error("Nothing to export yet: run or step first.", print_exception=False)
        return write_trace(session.trace(), "specviz-speculative")

    def what_if(self, session):
        """Replay this prompt's greedy output under other shapes and builders (no target forwards)."""
        if session is None or not session.steps:
            raise gr.Error("Run (or step) a greedy decode first; the what-if replays its output.", print_exception=False)
        try:
            with session.lock:
                rows = what_if(session.prepared, session.decoder.prompt_ids, session.decoder.output_ids)
        except (ConfigError, ModelLoadError, ValueError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        tau = len(session.pieces.ids) / len(session.steps)
        label = f"this run ({session.prepared.method.name})"
        partial = "" if session.done else " (so far)"
        return (whatif_figure([r.to_dict() for r in rows], tau, label + partial),
                whatif_table_html([r.to_dict() for r in rows], tau, label + partial))

    # layout --------------------------------------------------------------------
    def build(self):
        examples = load_examples()
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                prompt = gr.Textbox(label="Prompt", lines=4, value=examples[0]["prompt"] if examples else "",
                                    placeholder="Ask the model something…", elem_id="sv-prompt")
                method = gr.Dropdown([(_method_label(m), m.name) for m in METHODS.values()], value=DEFAULT_METHOD,
                                     label="Method", elem_id="sv-method")
                method_info = gr.Markdown(_method_info(DEFAULT_METHOD))
                default_knobs = {k.name for k in METHODS[DEFAULT_METHOD].knobs}
                knob_sliders = [_control(k, visible=k.name in default_knobs) for k in KNOBS]
                with gr.Accordion("Sampling and length", open=False):
                    max_new = _control(MAX_NEW_TOKENS)
                    temperature = gr.Slider(TEMPERATURE.low, TEMPERATURE.high, value=TEMPERATURE.default, step=0.05,
                                            label="temperature", info="0 = greedy; > 0 = lossless speculative sampling")
                    top_p = gr.Slider(TOP_P.low, TOP_P.high, value=TOP_P.default, step=0.01, label="top_p")
                    seed = gr.Number(value=SEED.default, precision=0, label="seed")
                with gr.Accordion("Models", open=False):
                    target = gr.Textbox(value=EMBEDDED_MODEL_ID, label="Target model",
                                        info="the embedded model, or any Hugging Face causal LM id / local path")
                    draft = gr.Textbox(value="", **DRAFT_FIELD)
                run_btn, step_btn, pause_btn, reset_btn = run_buttons("sv")
                if examples:
                    gr.Examples([[e["prompt"], e["method"]] for e in examples], [prompt, method], label="Examples")
            with gr.Column(scale=2):
                status = gr.Markdown("Ready. Press **Run** to stream steps, or **Step** to advance one.", elem_id="sv-status")
                text = gr.HTML(render(None)["text"], label="Generated text", elem_id="sv-text")
                slider = step_scrubber("sv")
                tree_depth = gr.Slider(1, 16, value=16, step=1, label="Tree view: show depth ≤", elem_id="sv-tree-depth",
                                       info="deeper nodes collapse into a '+n' marker (the accepted path always shows); "
                                            "drag to pan, scroll or box-select to zoom, hover for probabilities")
                tree = gr.Plot(render(None)["tree"], label="Draft tree", elem_id="sv-tree")
                confidence = gr.Plot(render(None)["confidence"], label="Per-position confidence", elem_id="sv-confidence")
                strip = gr.Plot(render(None)["strip"], label="Running strip", elem_id="sv-strip")
                with gr.Row():
                    metrics = gr.HTML("", label="Metrics", elem_id="sv-metrics")
                    depth = gr.Plot(render(None)["depth"], label="Acceptance by depth", elem_id="sv-depth")
                with gr.Accordion("What if? Replay this prompt under other tree shapes", open=False):
                    gr.Markdown("In greedy decoding the output is the same for every drafter, so the recorded output "
                                "alone decides how far any tree would have been accepted at each step. This replays "
                                "the run's drafting model under chains, static shapes and shapes fitted to the ranks "
                                "it measured here, and the model-free builders; no target forward is needed.")
                    whatif_btn = gr.Button("Replay other shapes", elem_id="sv-whatif-run")
                    whatif_plot = gr.Plot(empty_figure("Run a greedy decode, then press Replay", height=220),
                                          label="τ by tree shape", elem_id="sv-whatif")
                    whatif_table = gr.HTML("", elem_id="sv-whatif-table")
                with gr.Accordion("Export: run summary and trace (JSON)", open=False):
                    export_btn, export_file = export_panel("sv")
                    summary = gr.JSON(label="Run summary", elem_id="sv-summary")

        state = gr.State(None)
        settings = [prompt, method, *knob_sliders, max_new, temperature, top_p, seed, target, draft]
        outputs = [state, status, text, slider, tree, confidence, strip, metrics, depth, summary]
        method.change(_knob_visibility, method, [method_info, *knob_sliders, draft], queue=False)
        run_event = run_btn.click(self.run, [*settings, tree_depth, state], outputs, api_name="run",
                                  concurrency_id="model", concurrency_limit=1)
        step_btn.click(self.step, [*settings, tree_depth, state], outputs, api_name="step",
                       concurrency_id="model", concurrency_limit=1)
        whatif_btn.click(self.what_if, state, [whatif_plot, whatif_table], api_name="what_if",
                         concurrency_id="model", concurrency_limit=1)
        pause_btn.click(self.pause, state, status, queue=False, api_name="pause")
        export_btn.click(self.export, state, export_file, api_name="export")
        reset_btn.click(self.reset, state, outputs, cancels=[run_event], api_name="reset")
        for event in (slider.release, slider.input, tree_depth.release, tree_depth.input):
            event(self.scrub, [slider, tree_depth, state], outputs[1:], api_name=False, trigger_mode="always_last")


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
        "kernels": trace.backend,
        "summary": trace.summary(),
        "speedup_vs_ar": session.speedup,
    }
