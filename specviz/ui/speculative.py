"""The Speculative tab: its controls, its TabSpec for the shared controller, and the what-if replay.

Sessions share the model in turns, one step at a time (`controller.Sharing`), while each
keeps its own `Session` in `gr.State`. Each step record becomes its
view data once, when it arrives (`viz.live.SpecLiveView`); a streamed step renders only
the current step, the full panels render on scrub and at the end.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import gradio as gr

from ..config import (AUTO, EMBEDDED_LAYERS, EMBEDDED_MODEL_ID, EXIT_LAYER, MAX_NEW_TOKENS, SEED, TEMPERATURE, TOP_P,
                      ConfigError)
from ..decoding.costs import run_cost, whatif_speedups
from ..decoding.registry import METHODS, knob_table
from ..models import ModelStore
from ..models.trained import available_kinds
from ..runs import ARTiming, against_ar, ar_decoder, compare_with_ar, prepare_run, what_if
from ..runs.costs import cost_curve, known_cost_curve
from ..settings import DEFAULT_METHOD, RunSettings
from ..textio import PieceDecoder, check_prompt_fits, encode_prompt, token_label
from ..viz.costs import cost_curve_figure, cost_panel_html
from ..viz.mask import ancestor_mask_html
from ..viz.live import SpecLiveView
from ..viz.node_card import card_token_ids, empty_card_html
from ..viz.tree import TREE_CLICK_JS, empty_figure
from ..viz.whatif import whatif_figure, whatif_table_html
from .controller import (Session, Sharing, TabController, TabSpec, export_panel, request_key, run_buttons,
                         scrubber_update, session_state, step_scrubber, trace_panel, user_errors, wire,
                         wire_trace_panel)
from .inputs import PromptBox
from .intervene import InterventionPanel
from .links import share_link_box, wire_share_link
from .replay import ReplayedDecoder

ASSETS = Path(__file__).resolve().parents[2] / "assets"
KNOBS = tuple(knob_table().values())  # every method's knobs, each once, in registry order
KNOB_NAMES = tuple(k.name for k in KNOBS)
TREE_DEPTH_VIEW = 16
LOG = logging.getLogger(__name__)
COST_INTRO = ("<p>Speculation pays only if a step commits more tokens than it costs. After a run this panel puts "
              "the speedup the cost model predicted (from this machine's measured verify cost and the run's own "
              "steps) beside the speedup measured against plain AR.</p>")
COST_INTRO_PLOT = "This machine's verify-cost curve appears after a run"
WHATIF_EMPTY = "Run a greedy decode, then press Replay"


def load_examples() -> list:
    path = ASSETS / "examples.json"
    return json.loads(path.read_text()) if path.exists() else []


def knob_control(knob, prefix: str, value=None, high=None, **kw):
    """The control for one knob: a checkbox, a dropdown of its options, or a slider over its range (up to
    `high` when the model allows less than the knob's own range)."""
    value = knob.default if value is None else value
    common = dict(label=knob.name, info=knob.help, elem_id=f"{prefix}-{knob.name}", **kw)
    if knob.boolean:
        return gr.Checkbox(value=bool(value), **common)
    if knob.choices:
        return gr.Dropdown(list(knob.choices), value=value, allow_custom_value=knob.free_text, **common)
    if knob.auto:
        # "auto" or a number: a dropdown of typical sizes that also takes any other number typed in
        return gr.Dropdown(auto_choices(knob), value=str(value), allow_custom_value=True, **common)
    return gr.Slider(knob.low, knob.high if high is None else high, value=value, step=1 if knob.integer else 0.01,
                     **common)


def exit_layer_range(target: str):
    """The early-exit slider's range for a target: below the embedded model's layer count; for another model
    the knob's own range (its layer count is known once it loads, and the run then names the limit)."""
    embedded = (target or "").strip() in ("", EMBEDDED_MODEL_ID)
    return gr.update(maximum=EMBEDDED_LAYERS - 1 if embedded else EXIT_LAYER.high)


def auto_choices(knob) -> list:
    """'auto', then powers of two and a few sizes between, within the knob's range."""
    sizes = [n for n in (1, 2, 4, 8, 12, 16, 24, 32, 48, 60, 64, 96, 128) if knob.low <= n <= knob.high]
    return [AUTO, *map(str, sizes)]


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
    updates = [gr.update(visible=True, value=str(m.default(k)) if k.auto else m.default(k)) if k.name in used
               else gr.update(visible=False) for k in KNOBS]
    field = HEAD_FIELD if m and m.uses_trained else DRAFT_FIELD
    draft = gr.update(visible=bool(m and (m.uses_draft_model or m.uses_trained)), **field)
    return [_method_info(name), *updates, draft]


def collect_settings(method, *values) -> dict:
    """The controls' values as one settings dict: the method's own knobs only, plus the common fields."""
    knob_values = dict(zip(KNOB_NAMES, values[: len(KNOBS)]))
    max_new, temperature, top_p, seed, target, draft = values[len(KNOBS):]
    m = METHODS.get(method)
    own = {k.name: knob_values[k.name] for k in m.knobs} if m else {}
    uses_draft = bool(m and (m.uses_draft_model or m.uses_trained))
    return {"method": method, **own, "max_new_tokens": max_new, "temperature": temperature, "top_p": top_p,
            "seed": seed, "target": target, "draft": draft if uses_draft else ""}


class SpeculativeSpec(TabSpec):
    prefix = "sv"
    api_prefix = ""
    smaller = "pick a smaller model, fewer new tokens or a smaller draft"
    trace_name = "specviz-speculative"
    settings_type = RunSettings

    def __init__(self, store, sharing=None):
        super().__init__(store, sharing)
        self.ar_timings = ARTiming.cache(256)

    def start(self, prompt, settings) -> Session:
        prepared = prepare_run(self.store, settings)
        ids = encode_prompt(prepared.target.tokenizer, prompt)
        check_prompt_fits(len(ids), settings.max_new_tokens, prepared.target.max_positions)
        session = Session(prompt, settings, prepared, prepared.decoder(ids, record=True), SpecLiveView())
        session.extra["tokenizer"] = prepared.target.tokenizer
        session.extra["pieces"] = PieceDecoder(prepared.target.tokenizer)
        # a curve this machine measured before is shown from the first step; else it is measured at the end
        session.extra["cost_curve"] = known_cost_curve(self.store, prepared.target)
        return session

    def measure_curve(self, session):
        """The target's verify-cost curve (measured now, ~8 s on the embedded model, unless cached): model
        work, so only ever called in a turn. A failure only costs the cost panel its curve."""
        if session.extra.get("cost_curve") is None:
            try:
                session.extra["cost_curve"] = cost_curve(self.store, session.run.target)
            except (RuntimeError, ValueError, OSError, MemoryError):
                LOG.exception("measuring the cost curve failed")
        return session.extra.get("cost_curve")

    def live_changes(self, session, settings):
        return session.settings.live_changes(settings)

    def apply_live(self, session, changes, settings) -> None:
        super().apply_live(session, changes, settings)
        session.run = replace(session.run, settings=settings)

    def advance(self, session) -> None:
        step = session.decoder.step()
        if step is not None:
            self._add_step(session, step)

    def replay(self, trace, tokenizer, prompt: str | None = None) -> Session:
        try:
            settings = RunSettings.from_dict(trace.settings)
        except ConfigError:  # e.g. a method or knob of a newer version: the views need only the records
            settings = RunSettings()
        prompt = prompt if prompt is not None else tokenizer.decode(trace.prompt_ids.tolist())
        session = Session(prompt, settings, None, ReplayedDecoder(trace),
                          SpecLiveView(trace.backend))
        session.extra.update(tokenizer=tokenizer, pieces=PieceDecoder(tokenizer), cost_curve=None)
        for step in trace.steps:
            self._add_step(session, step)
        return session

    def branch(self, session, decoder) -> Session:
        """A fork of `session`'s run (`decoder`, from `SpeculativeDecoder.fork`) as a session of its own, paused,
        with its views built from its records; it joins the original's list of branches."""
        fork = Session(session.prompt, session.settings, session.run, decoder, SpecLiveView(), paused=True)
        tok = session.extra["tokenizer"]
        fork.extra.update(tokenizer=tok, pieces=PieceDecoder(tok), cost_curve=session.extra.get("cost_curve"))
        family = session.extra.setdefault("branches", [session])
        family.append(fork)
        fork.extra["branches"] = family
        for step in decoder.records:
            self._add_step(fork, step)
        return fork

    def control_updates(self, settings) -> list:
        m = METHODS[settings.method]
        own = {k.name for k in m.knobs}
        knobs = [gr.update(visible=True, value=str(settings.knobs[k.name]) if k.auto else settings.knobs[k.name])
                 if k.name in own else gr.update(visible=False) for k in KNOBS]
        uses_draft = bool(m.uses_draft_model or m.uses_trained)
        draft = gr.update(value=settings.draft, visible=uses_draft, **(HEAD_FIELD if m.uses_trained else DRAFT_FIELD))
        return [gr.update(value=settings.method), *knobs, settings.max_new_tokens, settings.temperature,
                settings.top_p, settings.seed, settings.target, draft]

    def _add_step(self, session, step) -> None:
        """One step record into the session's views (a live step, or one read back from a trace)."""
        tok = session.extra["tokenizer"]
        pieces = session.extra["pieces"].extend(step.committed_ids)
        session.view.backend = session.decoder.backend
        session.view.add(step, [token_label(tok, t) for t in step.tree.token_ids],
                         token_label(tok, step.bonus_token) if step.bonus_token >= 0 else "", pieces,
                         {t: token_label(tok, t) for t in card_token_ids(step)})

    def finish_work(self, session, view):
        """The cost curve, if this machine has none yet (one turn), then the AR baseline of the speedup, one
        AR step per turn (so it shares the model fairly), unless the view turned it off. A prompt already
        timed with the same settings reuses that measurement."""
        if session.extra.get("cost_curve") is None:
            self.measure_curve(session)
            yield
        if "speedup" in session.extra or not view.get("compare_ar", True):
            return
        trace = session.decoder.trace()
        if session.run.settings.method == "ar":
            session.extra["speedup"] = compare_with_ar(session.run, trace)
            return
        s = session.run.settings
        n = max(int(trace.output_ids.shape[0]), 1)
        key = (session.run.target.model_id, tuple(trace.prompt_ids.tolist()), n, s.temperature, s.top_p, s.seed)
        timed = self.ar_timings.peek(key)
        if timed is None:
            dec = ar_decoder(session.run, trace.prompt_ids, n, record=True)
            for _ in dec.steps():
                yield
            timed = ARTiming.of(dec.trace())
            self.ar_timings.put(key, timed)
            session.extra["speedup"] = against_ar(trace, timed, s.greedy)
        else:
            result = against_ar(trace, timed, s.greedy)
            result["how"] += f" (the AR time is from an earlier run of this prompt, {timed.age()} ago)"
            session.extra["speedup"] = result

    def status(self, session, note: str = "", k: int | None = None) -> str:
        if session is None or session.n_steps == 0:
            return note or "Ready."
        records = session.decoder.records
        k = len(records) - 1 if k is None else k
        s = records[k]
        accepted = f"{s.n_accepted} of {s.n_drafted} drafted accepted" if s.n_drafted else "nothing drafted"
        finish = session.decoder.finish_reason
        state = {"eos": "finished (end of sequence)", "length": "finished (token limit)"}.get(
            finish, "paused" if session.paused else "running")
        added = f" · + {s.bonus_kind} `{session.view.bonus_labels[k]}`" if s.bonus_token >= 0 else ""
        tokens = sum(int(r.committed_ids.shape[0]) for r in records[: k + 1])
        return (f"**Step {s.step}** · {accepted}{added} · {tokens} tokens · {state}"
                + (f" · {note}" if note else ""))

    def _metrics_context(self, session) -> dict:
        d = session.decoder
        return dict(speedup=session.extra.get("speedup"), finish=d.finish_reason, wall_s=d.wall_s)

    def cost_model(self, session) -> tuple:
        """(the curve, the run's RunCost), either None when unknown."""
        curve = session.extra.get("cost_curve") if session is not None else None
        if curve is None or session.n_steps == 0:
            return curve, None
        return curve, run_cost(curve, session.decoder.records)

    def cost_views(self, session, view) -> tuple:
        """The cost panel: this machine's curve with the run on it, and predicted against measured."""
        if session is None:
            return cost_curve_figure(None, None, COST_INTRO_PLOT), COST_INTRO
        curve, run = self.cost_model(session)
        speedup = session.extra.get("speedup")
        if not session.done:
            why = "measured when the run finishes"
        elif not view.get("compare_ar", True):
            why = "not measured: plain AR was not timed (the 'After a run, time plain AR' box is off)"
        else:
            why = "not measured"
        curve_d = curve.to_dict() if curve is not None else None
        run_d = run.to_dict() if run is not None else None
        return cost_curve_figure(curve_d, run_d), cost_panel_html(curve_d, run_d, speedup, why)

    def outputs_empty(self, status):
        r = SpecLiveView().live()
        return (None, status, r["text"], scrubber_update(0, 0), r["tree"], empty_card_html(), r["rejection"],
                ancestor_mask_html(None), r["confidence"], r["strip"], *self.cost_views(None, {}), r["metrics"], r["depth"], None)

    def outputs_live(self, session, status, view):
        r = session.view.live(tree_depth=view.get("tree_depth", TREE_DEPTH_VIEW), **self._metrics_context(session))
        n = session.n_steps
        # the cost panel is priced over every step, so it renders at the end and on scrub, not per streamed step
        return (session, status, r["text"], scrubber_update(n, n - 1), r["tree"], empty_card_html(), r["rejection"],
                self._mask(session, n - 1), r["confidence"], r["strip"], gr.skip(), gr.skip(), r["metrics"], r["depth"], gr.skip())

    def outputs_full(self, session, status, k, view):
        r = session.view.full(k, tree_depth=view.get("tree_depth", TREE_DEPTH_VIEW), **self._metrics_context(session))
        n = session.n_steps
        k = n - 1 if k is None else k
        # a new step on show closes the card of a node of the step shown before
        return (session, status, r["text"], scrubber_update(n, k), r["tree"], empty_card_html(), r["rejection"],
                self._mask(session, k), r["confidence"], r["strip"], *self.cost_views(session, view), r["metrics"], r["depth"],
                self.summary(session))

    @staticmethod
    def _mask(session, k: int) -> str:
        view = session.view
        return ancestor_mask_html(view.steps[k], view.node_labels[k]) if view.steps else ancestor_mask_html(None)

    def summary(self, session) -> dict | None:
        if session is None or session.n_steps == 0:
            return None
        trace = session.decoder.trace()
        return {
            "prompt": session.prompt,
            "method": trace.method,
            "target": trace.target_id,
            "draft": trace.draft_id,
            "settings": trace.settings,
            "text": session.extra["pieces"].text,
            "prompt_ids": trace.prompt_ids.tolist(),
            "output_ids": trace.output_ids.tolist(),
            "finished": trace.finish_reason or None,
            "kernels": trace.backend,
            "summary": trace.summary(),
            "speedup_vs_ar": session.extra.get("speedup"),
            "cost_model": self._cost_summary(session),
        }

    def _cost_summary(self, session) -> dict | None:
        """This machine's cost curve and the run's prediction from it, as saved with the run summary."""
        curve, run = self.cost_model(session)
        if curve is None:
            return None
        return {"curve": curve.to_dict(), "run": run.to_dict() if run is not None else None}


class SpeculativeTab:
    def __init__(self, store: ModelStore, sharing: Sharing | None = None):
        self.store = store
        self.spec = SpeculativeSpec(store, sharing)
        self.controller = TabController(self.spec)

    def what_if(self, session, request: gr.Request = None):
        """Replay this prompt's greedy output under other shapes and builders (no target forwards)."""
        if session is None or session.n_steps == 0:
            raise gr.Error("Run (or step) a greedy decode first; the what-if replays its output.", print_exception=False)
        if session.run is None:
            raise gr.Error("This run was opened from a trace file: the what-if needs its drafter, so press Run to "
                           "run it live first.", print_exception=False)

        def work():
            replayed = what_if(self.store, session.run, session.decoder.prompt_ids, session.decoder.output_ids)
            return replayed, self.spec.measure_curve(session)

        with user_errors(self.spec.smaller, self.spec.policy), session.lock:
            rows, curve = self.spec.sharing.run_in_turn(request_key(request), "a what-if replay", work)
        tau = len(session.decoder.output_ids) / session.n_steps
        label = f"this run ({session.settings.method})" + ("" if session.done else " (so far)")
        rows = [r.to_dict() for r in rows]
        speedup = session.extra.get("speedup")
        measured = speedup["ratio"] if speedup else None
        if curve is not None:
            run = run_cost(curve, session.decoder.records)
            rows = whatif_speedups(curve, rows, run, {
                "name": label, "detail": f"the run itself, priced step by step; drafting measured "
                                         f"({run.draft_ms_per_step:.1f} ms per step)"})
        return whatif_figure(rows, tau, label, measured), whatif_table_html(rows, tau, label, measured)

    # layout --------------------------------------------------------------------
    def build(self):
        examples = load_examples()
        empty = SpecLiveView().live()
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                prompt = PromptBox(label="Prompt", lines=4, value=examples[0]["prompt"] if examples else "",
                                   placeholder="Ask the model something…", elem_id="sv-prompt")
                method = gr.Dropdown([(_method_label(m), m.name) for m in METHODS.values()], value=DEFAULT_METHOD,
                                     label="Method", elem_id="sv-method")
                method_info = gr.Markdown(_method_info(DEFAULT_METHOD))
                default_method = METHODS[DEFAULT_METHOD]
                own = {k.name for k in default_method.knobs}
                knob_controls = [knob_control(k, "sv-knob", default_method.default(k), visible=k.name in own,
                                              high=EMBEDDED_LAYERS - 1 if k.name == EXIT_LAYER.name else None)
                                 for k in KNOBS]
                with gr.Accordion("Sampling and length", open=False):
                    max_new = knob_control(MAX_NEW_TOKENS, "sv-knob")
                    temperature = gr.Slider(TEMPERATURE.low, TEMPERATURE.high, value=TEMPERATURE.default, step=0.05,
                                            label="temperature", info="0 = greedy; > 0 = lossless speculative sampling")
                    top_p = gr.Slider(TOP_P.low, TOP_P.high, value=TOP_P.default, step=0.01, label="top_p")
                    seed = gr.Number(value=SEED.default, precision=0, label="seed")
                with gr.Accordion("Models", open=False):
                    target = gr.Textbox(value=EMBEDDED_MODEL_ID, label="Target model",
                                        info=self.spec.policy.model_hint("target") or
                                        "the embedded model, or any Hugging Face causal LM id / local path")
                    draft = gr.Textbox(value="", **DRAFT_FIELD)
                buttons = run_buttons("sv")
                compare_ar = gr.Checkbox(True, label="After a run, time plain AR on the same prompt for the speedup",
                                         elem_id="sv-compare-ar",
                                         info="off saves a server's time; a prompt timed before reuses its time")
                examples_at = gr.Column()
                trace_picks = trace_panel("sv", "speculative")
            with gr.Column(scale=2):
                status = gr.Markdown("Ready. Press **Run** to stream steps, or **Step** to advance one.", elem_id="sv-status")
                text = gr.HTML(empty["text"], label="Generated text", elem_id="sv-text")
                slider = step_scrubber("sv")
                tree_depth = gr.Slider(1, 16, value=TREE_DEPTH_VIEW, step=1, label="Tree view: show depth ≤",
                                       elem_id="sv-tree-depth",
                                       info="deeper nodes collapse into a '+n' marker (the accepted path always shows); "
                                            "click a node for its card, hover it for its probabilities")
                tree = gr.HTML(empty["tree"], label="Draft tree", elem_id="sv-tree", js_on_load=TREE_CLICK_JS)
                node_card = gr.HTML(empty_card_html(), label="Node card", elem_id="sv-node-card")
                intervention = InterventionPanel(self.spec, self.controller).build()
                with gr.Accordion("Why it is lossless: the rejection-sampling test of this step", open=False,
                                  elem_id="sv-rejection-accordion"):
                    rejection = gr.HTML(empty["rejection"], elem_id="sv-rejection")
                with gr.Accordion("One forward for the whole tree: the ancestor mask of this step", open=False,
                                  elem_id="sv-mask-accordion"):
                    mask = gr.HTML(ancestor_mask_html(None), elem_id="sv-mask")
                # the figures carry their own titles: a component label would sit on top of them
                confidence = gr.Plot(empty["confidence"], label="Per-position confidence", show_label=False,
                                     elem_id="sv-confidence")
                strip = gr.Plot(empty["strip"], label="Running strip", show_label=False, elem_id="sv-strip")
                with gr.Row():
                    metrics = gr.HTML("", label="Metrics", elem_id="sv-metrics")
                    depth = gr.Plot(empty["depth"], label="Acceptance by depth", elem_id="sv-depth")
                empty_cost = self.spec.cost_views(None, {})
                with gr.Accordion("Cost model: does speculation pay on this machine?", open=True,
                                  elem_id="sv-cost-accordion"):
                    with gr.Row():
                        cost_html = gr.HTML(empty_cost[1], label="Predicted and measured speedup", elem_id="sv-cost")
                        cost_plot = gr.Plot(empty_cost[0], label="Verify cost on this machine", show_label=False,
                                            elem_id="sv-cost-curve")
                with gr.Accordion("What if? Replay this prompt under other tree shapes", open=False):
                    gr.Markdown("In greedy decoding the output is the same for every drafter, so the recorded output "
                                "alone decides how far any tree would have been accepted at each step. This replays "
                                "the run's drafting model under chains, static shapes and shapes fitted to the ranks "
                                "it measured here, and the model-free builders; no target forward is needed. Each "
                                "shape is ranked by the speedup the cost model predicts for it on this machine: its τ "
                                "against what verifying (and drafting) its nodes costs.")
                    whatif_btn = gr.Button("Replay other shapes", elem_id="sv-whatif-run")
                    whatif_plot = gr.Plot(empty_figure(WHATIF_EMPTY, height=220),
                                          label="Predicted speedup by tree shape", elem_id="sv-whatif")
                    whatif_table = gr.HTML("", elem_id="sv-whatif-table")
                settings_box, export_btn, export_file, summary = export_panel("sv")
                share_button, share_box = share_link_box("sv")

        state = session_state()
        view_state = gr.State({"tree_depth": TREE_DEPTH_VIEW, "compare_ar": True})
        outputs = [state, status, text, slider, tree, node_card, rejection, mask, confidence, strip, cost_plot,
                   cost_html, metrics, depth, summary]
        # a method picked by hand shows its knobs at its defaults; one set by a lesson or a link keeps its values
        knob_outputs = [method_info, *knob_controls, draft]
        method.input(_knob_visibility, method, knob_outputs, queue=False, api_name=False)
        method.change(_method_info, method, method_info, queue=False, api_name=False)
        if examples:
            with examples_at:
                gr.Examples([[e["prompt"], e["method"]] for e in examples], [prompt, method], knob_outputs,
                            fn=lambda _prompt, name: _knob_visibility(name), run_on_click=True, label="Examples")
        wire(self.controller, collect=collect_settings,
             collect_inputs=[method, *knob_controls, max_new, temperature, top_p, seed, target, draft],
             prompt=prompt, settings_box=settings_box, view_state=view_state, state=state, outputs=outputs,
             buttons=buttons, slider=slider, export_button=export_btn, export_file=export_file,
             view_controls=[("tree_depth", tree_depth), ("compare_ar", compare_ar)])
        wire_trace_panel(self.controller, trace_picks, view_state, outputs)
        target.change(exit_layer_range, target, knob_controls[KNOB_NAMES.index(EXIT_LAYER.name)], queue=False,
                      api_name=False)
        wire_share_link(self.controller.handle, "speculative", share_button, share_box)
        # the what-if replays one run: Run, Step or Reset clears it, so it never shows an earlier run's rows
        for button in (buttons[0], buttons[1], buttons[3]):
            button.click(lambda: (empty_figure(WHATIF_EMPTY, height=220), ""), None, [whatif_plot, whatif_table],
                         queue=False, api_name=False, show_progress="hidden")
        whatif_btn.click(self.what_if, state, [whatif_plot, whatif_table], api_name="what_if",
                         concurrency_limit=None)
        # a click on a tree node opens its card and picks it for an edit
        example_pick, open_button, upload = trace_picks
        intervention.wire(self.controller.handle, tree, node_card, buttons, (open_button.click, upload.upload))
