"""The Diffusion tab: masked / block diffusion and Jacobi decoding on a lattice of steps × positions.

Same controller as the Speculative tab: Run / Step stream one record per step, model work
shares the "model" queue, each browser session keeps its own `Session` in `gr.State`, and the
scrubber, signal switch and cell inspector re-render from the stored `DiffusionStep`s
without calling the model. Each record becomes its view data once
(`viz.live.LatticeLiveView`): a streamed step draws the last rows of the lattice, the
whole lattice renders on scrub and at the end.
"""
from __future__ import annotations

import html

import gradio as gr

from ..config import EMBEDDED_MODEL_ID, LATTICE_KNOBS, SEED, TEMPERATURE, ConfigError, shown
from ..decoding.schedules import SCHEDULE_HELP, SCHEDULES
from ..models import ModelStore
from ..runs import prepare_lattice_run
from ..settings import GEN_LENGTH, TINY_MDM_ID, LatticeSettings
from ..textio import check_prompt_fits, encode_prompt, token_label
from ..trace import CELL_STATE_NAMES, summarize_diffusion
from ..viz.lattice import SIGNALS, cell_topk_html, lattice_figure, progress_figure
from ..viz.live import LatticeLiveView
from ..viz.tree import empty_figure
from .controller import (Session, Sharing, TabController, TabSpec, export_panel, request_key, run_buttons,
                         scrubber_update, session_state, step_scrubber, user_errors, wire)
from .inputs import PromptBox, named_choice
from .speculative import knob_control

OVERLAYS = {"commit order": "commit_order", "block boundaries": "blocks", "all-in marks": "threshold"}
MODEL_CHOICES = [(f"{TINY_MDM_ID} · trained tiny masked diffusion (offline)", TINY_MDM_ID),
                 (f"{EMBEDDED_MODEL_ID} · AR, for Jacobi", EMBEDDED_MODEL_ID)]
PROMPT = "Write a short poem about the sea."
LATTICE_NAMES = tuple(k.name for k in LATTICE_KNOBS)


def _remote_code_note(store) -> str:
    """Whether models may run their repositories' code is the server's setting: the page says which."""
    if store.trust_remote_code:
        return ("⚠ This server runs modelling code from model repositories (LLaDA, Dream, Fast-dLLM v2, SDAR, MDLM, "
                "BD3-LM need it): its operator started it with SPECVIZ_TRUST_REMOTE_CODE=1.")
    if store.remote_code_revisions:
        listed = ", ".join(f"{m} @ {r[:12]}" for m, r in sorted(store.remote_code_revisions.items()))
        return f"This server runs its repository's code only for the models its operator pinned: {listed}."
    return ("Models that ship their own code (LLaDA, Dream, Fast-dLLM v2, SDAR, MDLM, BD3-LM) need the server "
            "started with SPECVIZ_TRUST_REMOTE_CODE=1; this one runs no remote code.")


def _schedule_info(schedule: str) -> str:
    return f"**{schedule}**: {SCHEDULE_HELP.get(schedule, '')}"


# knobs that belong to one schedule (its registry entry's `params`): shown only while it is picked
SCHEDULE_PARAMS = frozenset(p for s in SCHEDULES.values() for p in s.params)


def _knob_visibility(method: str, schedule: str) -> list:
    """The method's knobs, and of the schedule knobs only those the picked schedule reads."""
    diffusion = method == "diffusion"
    own = set(LatticeSettings(method=method).knob_names) if method in ("diffusion", "jacobi") else set()
    reads = set(SCHEDULES[schedule].params) if diffusion and schedule in SCHEDULES else set()
    return [gr.update(visible=k.name in own and (k.name not in SCHEDULE_PARAMS or k.name in reads))
            for k in LATTICE_KNOBS]


def _schedule_changed(method: str, schedule: str):
    return [_schedule_info(schedule), *_knob_visibility(method, schedule)]


def _method_changed(method: str, model: str, schedule: str):
    diffusion = method == "diffusion"
    if diffusion and (model or "").strip() in ("", EMBEDDED_MODEL_ID):
        model = TINY_MDM_ID
    elif not diffusion and (model or "").strip() == TINY_MDM_ID:
        model = EMBEDDED_MODEL_ID
    return [gr.update(value=model), gr.update(visible=diffusion), *_knob_visibility(method, schedule)]


def collect_settings(method, model, *values) -> dict:
    knobs = dict(zip(LATTICE_NAMES, values[: len(LATTICE_KNOBS)]))
    gen_length, temperature, seed = values[len(LATTICE_KNOBS):]
    own = LatticeSettings(method=method).knob_names if method in ("diffusion", "jacobi") else ()
    return {"method": method, **{n: knobs[n] for n in own}, "model": model, "gen_length": gen_length,
            "temperature": temperature, "seed": seed}


def _view_keys(view: dict) -> tuple:
    overlays = view.get("overlays")
    return view.get("signal", "confidence"), tuple(OVERLAYS[o] for o in (overlays if overlays is not None else OVERLAYS)
                                                   if o in OVERLAYS)


class DiffusionSpec(TabSpec):
    prefix = "sd"
    api_prefix = "lattice_"
    smaller = "pick a smaller model or a shorter canvas"
    trace_name = "specviz-lattice"
    settings_type = LatticeSettings

    def live_changes(self, session, settings):
        return session.settings.live_changes(settings)

    def prepare(self, prompt, settings):
        run = prepare_lattice_run(self.store, settings)
        ids = encode_prompt(run.tokenizer, prompt)
        check_prompt_fits(len(ids), run.max_new_tokens, run.max_positions)
        return run, ids

    def start(self, prompt, settings) -> Session:
        run, ids = self.prepare(prompt, settings)
        if run.warnings:
            gr.Warning(" ".join(run.warnings))
        decoder = run.decoder(ids, record=True)
        session = Session(prompt, settings, run, decoder, LatticeLiveView(run.label, decoder.backend))
        session.extra["labels"] = {}
        return session

    @staticmethod
    def label(session, token_id: int) -> str:
        if token_id < 0:
            return ""
        labels = session.extra["labels"]
        if token_id not in labels:
            labels[token_id] = token_label(session.run.tokenizer, token_id)
        return labels[token_id]

    def advance(self, session) -> None:
        s = session.decoder.step()
        if s is None:
            return
        lab = self.label
        session.view.add(s, [lab(session, int(t)) for t in s.canvas], [lab(session, int(t)) for t in s.proposal])

    def status(self, session, note: str = "") -> str:
        if session is None or session.n_steps == 0:
            return note or "Ready."
        s = session.decoder.records[-1]
        state = {"eos": "finished (end of sequence)", "length": "finished (canvas full)"}.get(
            session.decoder.finish_reason, "paused" if session.paused else "running")
        return (f"**Step {s.step}** · block {s.block} [{s.block_start}, {s.block_end}) · {s.rule} · "
                f"{s.n_masked} masked · {state}" + (f" · {note}" if note else ""))

    def _context(self, session) -> dict:
        d = session.decoder
        return dict(finish=d.finish_reason, wall_s=d.wall_s)

    def outputs_empty(self, status):
        r = LatticeLiveView().live()
        return (None, status, r["text"], scrubber_update(0, 0), r["lattice"], r["schedule"], r["tpf"], r["progress"],
                "", None)

    def outputs_live(self, session, status, view):
        signal, overlays = _view_keys(view)
        r = session.view.live(signal=signal, overlays=overlays, **self._context(session))
        n = session.n_steps
        return (session, status, r["text"], scrubber_update(n, n - 1), r["lattice"], gr.skip(), gr.skip(), gr.skip(),
                r["metrics"], gr.skip())

    def outputs_full(self, session, status, k, view):
        signal, overlays = _view_keys(view)
        r = session.view.full(k, signal=signal, overlays=overlays, **self._context(session))
        n = session.n_steps
        return (session, status, r["text"], scrubber_update(n, n - 1 if k is None else k), r["lattice"],
                r["schedule"], r["tpf"], r["progress"], r["metrics"], self.summary(session))

    def summary(self, session) -> dict | None:
        if session is None or session.n_steps == 0:
            return None
        tr = session.decoder.trace()
        out = tr.output_ids
        return {
            "prompt": session.prompt, "method": tr.method, "model": session.run.model_id, "settings": tr.settings,
            "text": session.run.tokenizer.decode(out.tolist(), skip_special_tokens=True),
            "prompt_ids": tr.prompt_ids.tolist(), "output_ids": out.tolist(),
            "finished": tr.finish_reason or None, "kernels": tr.backend,
            "lossless": bool(tr.lossless and session.settings.method == "jacobi" and session.settings.temperature == 0),
            "summary": tr.summary(), "warnings": session.run.warnings,
        }


class DiffusionTab:
    def __init__(self, store: ModelStore, sharing: Sharing | None = None):
        self.store = store
        self.spec = DiffusionSpec(store, sharing)
        self.controller = TabController(self.spec)

    def inspect(self, cell, session):
        """The top-k candidates of one cell at one step: 'step, position' (a lattice click fills it)."""
        if session is None or session.n_steps == 0:
            return "Run or step first, then click a cell of the lattice."
        try:
            k, pos = (int(float(x)) for x in str(cell).replace(";", ",").split(",")[:2])
        except (ValueError, OverflowError):
            return "Type a cell as 'step, position' (for example 3, 12), or click one in the lattice."
        records = session.decoder.records
        if not (0 <= k < len(records)):
            return f"Step {shown(k, 24)} is not recorded: this run has steps 0 to {len(records) - 1}."
        step = records[k]
        if not (0 <= pos < step.length):
            return f"Position {shown(pos, 24)} is off the canvas (0 to {step.length - 1})."
        labels = [self.spec.label(session, int(t)) for t in step.topk_ids[pos]]
        return cell_topk_html(step, pos, labels, CELL_STATE_NAMES[int(step.cell_state[pos])])

    def compare(self, prompt, settings=None, schedule_a="low_confidence", schedule_b="threshold", signal="confidence",
                request: gr.Request = None):
        """Run the same prompt and settings under two schedules, to the end, and show both lattices.
        The last output is JSON: one entry per schedule with its summary and text. Each step takes its own
        turn on the model, as a Run's do."""
        sharing, key = self.spec.sharing, request_key(request)
        with user_errors(self.spec.smaller, self.spec.policy):
            checked = self.spec.parse(settings)
            self.spec.check_prompt(prompt)
            # the comparison's own inputs arrive as sent (preprocess=False), so a bad one is named here
            schedule_a = named_choice("schedule_a", schedule_a, SCHEDULES)
            schedule_b = named_choice("schedule_b", schedule_b, SCHEDULES)
            signal = named_choice("signal", signal, SIGNALS)
            if checked.method != "diffusion":
                raise ConfigError("comparing schedules needs the diffusion method (Jacobi has no schedule)")
            sharing.sessions.enter(key, "a schedule comparison")
            try:
                runs, figs = {}, []
                for name in (schedule_a, schedule_b):
                    run, ids = sharing.run_in_turn(key, "preparing a schedule comparison",
                                                   lambda: self.spec.prepare(prompt, checked.changed(schedule=name)))
                    dec = run.decoder(ids, record=True)
                    steps = []
                    while not dec.done:
                        record = sharing.run_in_turn(key, "a step of a schedule comparison", dec.step)
                        if record is not None:
                            steps.append(record)
                    label = f"{'A' if not runs else 'B'}: {run.label}"
                    runs[label] = (run, dec)
                    labels = lambda t: token_label(run.tokenizer, int(t)) if t >= 0 else ""  # noqa: E731
                    figs.append(lattice_figure(steps, [[labels(t) for t in s.canvas] for s in steps],
                                               [[labels(t) for t in s.proposal] for s in steps],
                                               signal=signal if signal in SIGNALS else "confidence", title=label))
            finally:
                sharing.sessions.leave(key)
        rows, result = [], []
        for label, (run, dec) in runs.items():
            tr = dec.trace()
            summ = summarize_diffusion(tr.steps, tr.wall_s)
            text = run.tokenizer.decode(tr.output_ids.tolist(), skip_special_tokens=True)
            result.append({"label": label, "schedule": run.settings.knobs["schedule"], "text": text,
                           "output_ids": tr.output_ids.tolist(), "summary": summ})
            rows.append(f"<tr><td><b>{html.escape(label)}</b></td><td>{summ['steps']}</td><td>{summ['forwards']}</td>"
                        f"<td>{summ['tokens_per_forward']:.2f}</td><td>{summ['new_tokens']}</td>"
                        f"<td>{html.escape(text[:160])}</td></tr>")
        table = ('<table class="sv-metrics" id="sd-compare-table"><tr><td>run</td><td>steps</td><td>forwards</td>'
                 '<td>tokens / forward</td><td>tokens</td><td>text</td></tr>' + "".join(rows) + "</table>")
        progress = progress_figure({lbl: dec.records for lbl, (_, dec) in runs.items()})
        return figs[0], figs[1], progress, table, result

    # layout ----------------------------------------------------------------------------
    def build(self):
        empty = LatticeLiveView().live()
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                prompt = PromptBox(label="Prompt", lines=3, value=PROMPT, elem_id="sd-prompt")
                method = gr.Radio([("Masked / block diffusion", "diffusion"), ("Jacobi decoding (AR model)", "jacobi")],
                                  value="diffusion", label="Method", elem_id="sd-method")
                model = gr.Dropdown(MODEL_CHOICES, value=TINY_MDM_ID, allow_custom_value=True, label="Model",
                                    info="tiny-mdm runs offline; or a Hub id: LLaDA, Dream, Fast_dLLM_v2, SDAR, MDLM, "
                                         "BD3-LM, DiffuGPT (diffusion) or any causal LM (Jacobi)",
                                    elem_id="sd-model")
                gr.Markdown(_remote_code_note(self.store), elem_id="sd-remote-code")
                schedule_info = gr.Markdown(_schedule_info("low_confidence"))
                shown = [u["visible"] for u in _knob_visibility("diffusion", "low_confidence")]
                knobs = [knob_control(k, "sd-knob", visible=v) for k, v in zip(LATTICE_KNOBS, shown)]
                gen_length = knob_control(GEN_LENGTH, "sd-knob")
                with gr.Accordion("Sampling", open=False):
                    temperature = gr.Slider(TEMPERATURE.low, TEMPERATURE.high, value=0.0, step=0.05,
                                            label="temperature", info="0 = each cell proposes its most likely token")
                    seed = gr.Number(value=SEED.default, precision=0, label="seed")
                buttons = run_buttons("sd")
            with gr.Column(scale=2):
                status = gr.Markdown("Ready. **Run** streams denoising steps; **Step** advances one.",
                                     elem_id="sd-status")
                text = gr.HTML(empty["text"], elem_id="sd-text")
                slider = step_scrubber("sd")
                with gr.Row():
                    signal = gr.Radio([(v, k) for k, v in SIGNALS.items()], value="confidence", label="Colour by",
                                      elem_id="sd-signal")
                    overlays = gr.CheckboxGroup(list(OVERLAYS), value=list(OVERLAYS), label="Overlays",
                                                elem_id="sd-overlays")
                lattice = gr.Plot(empty["lattice"], label="Lattice: steps × positions", elem_id="sd-lattice")
                with gr.Row():
                    cell = gr.Textbox(label="Cell (step, position)", placeholder="click a lattice cell, or type 3, 12",
                                      elem_id="sd-cell", scale=1)
                    cell_card = gr.HTML("Click a cell of the lattice to see its top candidates at that step.",
                                        elem_id="sd-cell-topk")
                schedule_plot = gr.Plot(empty["schedule"], label="Schedule", elem_id="sd-schedule")
                with gr.Row():
                    tpf = gr.Plot(empty["tpf"], label="Tokens per forward", elem_id="sd-tpf")
                    progress = gr.Plot(empty["progress"], label="Steps against generated length", elem_id="sd-progress")
                metrics = gr.HTML("", elem_id="sd-metrics")
                with gr.Accordion("Compare two schedules on this prompt", open=False):
                    with gr.Row():
                        schedule_a = gr.Dropdown(list(SCHEDULES), value="low_confidence", label="Schedule A",
                                                 elem_id="sd-compare-a")
                        schedule_b = gr.Dropdown(list(SCHEDULES), value="threshold", label="Schedule B",
                                                 elem_id="sd-compare-b")
                    compare_btn = gr.Button("Run both", elem_id="sd-compare")
                    with gr.Row():
                        lattice_a = gr.Plot(empty_figure("Schedule A", height=240), elem_id="sd-lattice-a")
                        lattice_b = gr.Plot(empty_figure("Schedule B", height=240), elem_id="sd-lattice-b")
                    compare_progress = gr.Plot(empty_figure("Steps against length", height=220),
                                               elem_id="sd-compare-progress")
                    compare_table = gr.HTML("", elem_id="sd-compare-table-box")
                    compare_json = gr.JSON(label="Comparison (JSON)", elem_id="sd-compare-json")
                settings_box, export_btn, export_file, summary = export_panel("sd")

        state = session_state()
        view_state = gr.State({"signal": "confidence", "overlays": list(OVERLAYS)})
        outputs = [state, status, text, slider, lattice, schedule_plot, tpf, progress, metrics, summary]
        schedule_knob = knobs[LATTICE_NAMES.index("schedule")]
        schedule_knob.change(_schedule_changed, [method, schedule_knob], [schedule_info, *knobs], queue=False,
                             api_name=False)
        method.change(_method_changed, [method, model, schedule_knob], [model, schedule_info, *knobs],
                      queue=False, api_name=False)
        collect_inputs = [method, model, *knobs, gen_length, temperature, seed]
        wire(self.controller, collect=collect_settings, collect_inputs=collect_inputs, prompt=prompt,
             settings_box=settings_box, view_state=view_state, state=state, outputs=outputs, buttons=buttons,
             slider=slider, export_button=export_btn, export_file=export_file,
             view_controls=[("signal", signal), ("overlays", overlays)])
        cell.change(self.inspect, [cell, state], cell_card, api_name="lattice_cell", queue=False)
        compare_btn.click(collect_settings, collect_inputs, settings_box, queue=False, api_name=False).then(
            self.compare, [prompt, settings_box, schedule_a, schedule_b, signal],
            [lattice_a, lattice_b, compare_progress, compare_table, compare_json], api_name="lattice_compare",
            preprocess=False,
            concurrency_limit=None)


# a lattice click writes "step, position" into the cell box, which shows that cell's top-k
LATTICE_CLICK_JS = """
() => {
  const onClick = (ev) => {
    const p = ev && ev.points && ev.points[0];
    if (!p || p.curveNumber !== 0) return;
    const box = document.querySelector('#sd-cell textarea, #sd-cell input');
    if (!box) return;
    box.value = `${p.y}, ${p.x}`;
    box.dispatchEvent(new Event('input', {bubbles: true}));
    box.dispatchEvent(new Event('change', {bubbles: true}));
  };
  setInterval(() => {
    document.querySelectorAll('#sd-lattice .js-plotly-plot').forEach((el) => {
      if (typeof el.on !== 'function' || el._svClickFor === el._fullData) return;
      if (el.removeListener) el.removeListener('plotly_click', onClick);
      el.on('plotly_click', onClick);
      el._svClickFor = el._fullData;
    });
  }, 300);
}
"""
