"""The Diffusion tab: masked / block diffusion and Jacobi decoding on a lattice of steps × positions.

Same pattern as the Speculative tab: handlers are generators streaming one render per
step, model work shares the "model" queue, each browser session keeps its own
`LatticeSession` in `gr.State`, and the scrubber, signal switch and cell inspector
re-render from the stored `DiffusionStep`s without calling the model.
"""
from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass, field, replace

import gradio as gr
import numpy as np

from ..config import EMBEDDED_MODEL_ID, LATTICE_KNOBS, MAX_NEW_TOKENS, SEED, TEMPERATURE, ConfigError, Knob
from ..decoding.schedules import SCHEDULE_HELP, SCHEDULES
from ..models import ModelLoadError, ModelStore
from ..runner import TINY_MDM_ID, LatticeRun, prepare_lattice_run
from ..textio import check_prompt_fits, encode_prompt, token_label
from ..trace import CELL_STATE_NAMES, summarize_diffusion
from ..viz.lattice import (SIGNALS, cell_topk_html, diffusion_metrics_html, lattice_figure, progress_figure,
                           schedule_figure, tokens_per_forward_figure)
from ..viz.palette import LATTICE_STATE_COLORS
from ..viz.tree import empty_figure
from .controls import export_panel, run_buttons, scrubber_update, step_scrubber, user_errors, write_trace

CANVAS = replace(MAX_NEW_TOKENS, name="gen_length", default=32, high=256,
                 help="canvas cells after the prompt (Jacobi: tokens to generate at most)")
DIFFUSION_KNOBS = tuple(k.name for k in LATTICE_KNOBS if k.name != "window")
JACOBI_KNOBS = ("window",)
OVERLAYS = {"commit order": "commit_order", "block boundaries": "blocks", "all-in marks": "threshold"}
MODEL_CHOICES = [(f"{TINY_MDM_ID} · trained tiny masked diffusion (offline)", TINY_MDM_ID),
                 (f"{EMBEDDED_MODEL_ID} · AR, for Jacobi", EMBEDDED_MODEL_ID)]
PROMPT = "Write a short poem about the sea."


@dataclass
class LatticeSession:
    key: tuple
    run: LatticeRun
    decoder: object
    prompt_text: str
    steps: list = field(default_factory=list)
    canvas_labels: list = field(default_factory=list)  # per step: L display strings of the canvas
    proposal_labels: list = field(default_factory=list)  # per step: L display strings of the proposals
    labels: dict = field(default_factory=dict)  # token id -> label, shared by every step
    wall_s: float = 0.0
    paused: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def done(self) -> bool:
        return self.decoder.done

    def label(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        if token_id not in self.labels:
            self.labels[token_id] = token_label(self.run.tokenizer, token_id)
        return self.labels[token_id]

    def advance(self):
        t0 = time.perf_counter()
        s = self.decoder.step()
        self.wall_s += time.perf_counter() - t0
        if s is None:
            return None
        self.steps.append(s)
        self.canvas_labels.append([self.label(int(t)) for t in s.canvas])
        self.proposal_labels.append([self.label(int(t)) for t in s.proposal])
        return s

    def trace(self):
        return self.run.trace(self.decoder, self.steps, self.wall_s)


def _control(knob: Knob, prefix="sd-knob", **kw):
    if knob.choices:
        return gr.Dropdown(list(knob.choices), value=knob.default, label=knob.name, info=knob.help,
                           elem_id=f"{prefix}-{knob.name}", **kw)
    return gr.Slider(knob.low, knob.high, value=knob.default, step=1 if knob.integer else 0.01, label=knob.name,
                     info=knob.help, elem_id=f"{prefix}-{knob.name}", **kw)


def _schedule_info(schedule: str) -> str:
    return f"**{schedule}**: {SCHEDULE_HELP.get(schedule, '')}"


def _method_changed(method: str, model: str):
    diffusion = method == "diffusion"
    if diffusion and (model or "").strip() in ("", EMBEDDED_MODEL_ID):
        model = TINY_MDM_ID
    elif not diffusion and (model or "").strip() == TINY_MDM_ID:
        model = EMBEDDED_MODEL_ID
    updates = [gr.update(visible=diffusion if k.name != "window" else not diffusion) for k in LATTICE_KNOBS]
    return [gr.update(value=model), gr.update(visible=diffusion), *updates]


def generated_html(session: LatticeSession | None, k: int | None = None) -> str:
    """The text so far (at step k): each token shaded by its confidence, hover tells when it was committed."""
    if session is None or not session.steps:
        return '<div class="sv-text" style="color:#94a3b8">The canvas text appears here.</div>'
    k = len(session.steps) - 1 if k is None else k
    step = session.steps[k]
    commit_step = np.full(step.length, -1)
    for s in session.steps[: k + 1]:
        commit_step[s.cell_state == 1] = s.step
        commit_step[s.cell_state == 3] = -1
    spans = []
    end = step.eos_at + 1 if step.eos_at >= 0 else step.length
    for j in range(end):
        tok = int(step.canvas[j])
        if tok < 0:
            spans.append('<span class="sv-tok" style="color:#94a3b8" title="masked">▢</span>')
            continue
        piece = html.escape(session.run.tokenizer.decode([tok], skip_special_tokens=False))
        color = LATTICE_STATE_COLORS["revealed-now" if commit_step[j] == k else "kept"][1]
        title = f"position {j} · committed at step {commit_step[j]} · id {tok}"
        spans.append(f'<span class="sv-tok" style="border-bottom:2px solid {color}" title="{title}">{piece}</span>')
    return '<div class="sv-text">' + "".join(spans) + "</div>"


class DiffusionTab:
    def __init__(self, store: ModelStore):
        self.store = store

    # settings ------------------------------------------------------------------
    def _key(self, prompt, method, model, trust, *rest):
        knobs = dict(zip([k.name for k in LATTICE_KNOBS], rest[: len(LATTICE_KNOBS)]))
        gen_length, temperature, seed = rest[len(LATTICE_KNOBS):]
        used = DIFFUSION_KNOBS if method == "diffusion" else JACOBI_KNOBS
        return (prompt, method, (model or "").strip(), bool(trust), tuple((n, knobs[n]) for n in used), gen_length,
                temperature, seed)

    def _prepare(self, key, knob_overrides=None) -> tuple:
        prompt, method, model, trust, knob_items, gen_length, temperature, seed = key
        if not prompt or not str(prompt).strip():
            raise ConfigError("the prompt is empty: type a prompt or pick an example")
        knobs = {**dict(knob_items), **(knob_overrides or {})}
        run = prepare_lattice_run(self.store, method, model or None, knobs, CANVAS.check(gen_length), temperature,
                                  seed, trust_remote_code=trust)
        ids = encode_prompt(run.tokenizer, prompt)
        check_prompt_fits(len(ids), run.max_new_tokens, run.max_positions)
        return run, ids

    def _start(self, key) -> LatticeSession:
        run, ids = self._prepare(key)
        return LatticeSession(key, run, run.decoder(ids, record=True), key[0])

    # rendering -------------------------------------------------------------------
    def _render(self, session, status, k=None, signal="confidence", overlays=None):
        overlay_keys = tuple(OVERLAYS[o] for o in (overlays if overlays is not None else OVERLAYS))
        if session is None or not session.steps:
            empty = empty_figure("Press Run or Step to fill the canvas", height=260)
            return (session, status, generated_html(None), scrubber_update(0, 0), empty,
                    empty_figure("What the schedule compared, per step", height=220),
                    empty_figure("Tokens per forward", height=220), empty_figure("Steps against length", height=220),
                    "", None)
        n = len(session.steps)
        k = n - 1 if k is None else max(0, min(int(k), n - 1))
        steps = session.steps
        title = f"{session.run.label} · step {k} of {n - 1}"
        lattice = lattice_figure(steps, session.canvas_labels, session.proposal_labels, current_step=k,
                                 signal=signal, overlays=overlay_keys, title=title)
        summary = summarize_diffusion(steps, session.wall_s)
        metrics = diffusion_metrics_html(summary, session.decoder.finish_reason, session.decoder.backend)
        progress = progress_figure({session.run.label: steps})
        return (session, status, generated_html(session, k), scrubber_update(n, k), lattice, schedule_figure(steps),
                tokens_per_forward_figure(steps), progress, metrics, self._summary(session))

    def _summary(self, session: LatticeSession) -> dict:
        tr = session.trace()
        out = tr.output_ids
        return {
            "method": tr.method, "model": session.run.model_id, "config": tr.config,
            "text": session.run.tokenizer.decode(out.tolist(), skip_special_tokens=True),
            "prompt_ids": tr.prompt_ids.tolist(), "output_ids": out.tolist(),
            "finished": tr.finish_reason or None, "kernels": tr.backend, "lossless": bool(
                tr.lossless and session.run.method == "jacobi" and session.run.temperature == 0.0),
            "summary": tr.summary(), "warnings": session.run.warnings,
        }

    def _status(self, session: LatticeSession, note="") -> str:
        if not session.steps:
            return note or "Ready."
        s = session.steps[-1]
        state = {"eos": "finished (end of sequence)", "length": "finished (canvas full)"}.get(
            session.decoder.finish_reason, "paused" if session.paused else "running")
        masked = s.n_masked
        return (f"**Step {s.step}** · block {s.block} [{s.block_start}, {s.block_end}) · {s.rule} · "
                f"{masked} masked · {state}" + (f" · {note}" if note else ""))

    # handlers ----------------------------------------------------------------------
    def run(self, *args):
        *settings, signal, overlays, session = args
        yield from self._drive(settings, session, None, signal, overlays)

    def step(self, *args):
        *settings, signal, overlays, session = args
        yield from self._drive(settings, session, 1, signal, overlays)

    def _drive(self, settings, session, max_steps, signal, overlays):
        key = self._key(*settings)
        with user_errors("pick a smaller model or a shorter canvas"):
            if session is None or session.key != key or session.done:
                yield self._render(session, "Loading the model and preparing the canvas…", signal=signal,
                                   overlays=overlays)
                session = self._start(key)
                if session.run.warnings:
                    gr.Warning(" ".join(session.run.warnings))
            session.paused = False
            taken = 0
            while not session.done and not session.paused and (max_steps is None or taken < max_steps):
                with session.lock:
                    session.advance()
                taken += 1
                yield self._render(session, self._status(session), signal=signal, overlays=overlays)
            yield self._render(session, self._status(session), signal=signal, overlays=overlays)

    def pause(self, session):
        if session is None:
            return "Nothing is running."
        session.paused = True
        return self._status(session, "pause requested")

    def reset(self, session):
        return self._render(None, "Reset. Press Run or Step to start.")

    def scrub(self, k, signal, overlays, session):
        if session is None or not session.steps:
            return self._render(session, "Nothing recorded yet.", signal=signal, overlays=overlays)[1:]
        return self._render(session, self._status(session, f"showing recorded step {int(k)}"), k, signal,
                            overlays)[1:]

    def inspect(self, cell: str, session):
        """The top-k candidates of one cell at one step: 'step, position' (a lattice click fills it)."""
        if session is None or not session.steps:
            return "Run or step first, then click a cell of the lattice."
        try:
            k, pos = (int(float(x)) for x in str(cell).replace(";", ",").split(",")[:2])
        except ValueError:
            return "Type a cell as 'step, position' (for example 3, 12), or click one in the lattice."
        if not (0 <= k < len(session.steps)):
            return f"Step {k} is not recorded: this run has steps 0 to {len(session.steps) - 1}."
        step = session.steps[k]
        if not (0 <= pos < step.length):
            return f"Position {pos} is off the canvas (0 to {step.length - 1})."
        labels = [session.label(int(t)) for t in step.topk_ids[pos]]
        return cell_topk_html(step, pos, labels, CELL_STATE_NAMES[int(step.cell_state[pos])])

    def export(self, session):
        if session is None or not session.steps:
            raise gr.Error("Nothing to export yet: run or step first.", print_exception=False)
        return write_trace(session.trace(), "specviz-lattice")

    def compare(self, *args):
        """Run the same prompt and settings under two schedules, to the end, and show both lattices."""
        *settings, schedule_a, schedule_b, signal = args
        key = self._key(*settings)
        if key[1] != "diffusion":
            raise gr.Error("Comparing schedules needs the diffusion method (Jacobi has no schedule).",
                           print_exception=False)
        runs, figs = {}, []
        try:
            for name in (schedule_a, schedule_b):
                run, ids = self._prepare(key, {"schedule": name})
                session = LatticeSession(key, run, run.decoder(ids, record=True), key[0])
                while not session.done:
                    session.advance()
                label = f"{'A' if not runs else 'B'}: {run.label}"
                runs[label] = session
                figs.append(lattice_figure(session.steps, session.canvas_labels, session.proposal_labels,
                                           signal=signal, title=label))
        except (ConfigError, ModelLoadError, ValueError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        rows = []
        for label, s in runs.items():
            summ = summarize_diffusion(s.steps, s.wall_s)
            text = s.run.tokenizer.decode(s.trace().output_ids.tolist(), skip_special_tokens=True)
            rows.append(f"<tr><td><b>{html.escape(label)}</b></td><td>{summ['steps']}</td><td>{summ['forwards']}</td>"
                        f"<td>{summ['tokens_per_forward']:.2f}</td><td>{summ['new_tokens']}</td>"
                        f"<td>{html.escape(text[:160])}</td></tr>")
        table = ('<table class="sv-metrics" id="sd-compare-table"><tr><td>run</td><td>steps</td><td>forwards</td>'
                 '<td>tokens / forward</td><td>tokens</td><td>text</td></tr>' + "".join(rows) + "</table>")
        return figs[0], figs[1], progress_figure({lbl: s.steps for lbl, s in runs.items()}), table

    # layout ----------------------------------------------------------------------------
    def build(self):
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                prompt = gr.Textbox(label="Prompt", lines=3, value=PROMPT, elem_id="sd-prompt")
                method = gr.Radio([("Masked / block diffusion", "diffusion"), ("Jacobi decoding (AR model)", "jacobi")],
                                  value="diffusion", label="Method", elem_id="sd-method")
                model = gr.Dropdown(MODEL_CHOICES, value=TINY_MDM_ID, allow_custom_value=True, label="Model",
                                    info="tiny-mdm runs offline; or a Hub id: LLaDA, Dream, Fast_dLLM_v2, SDAR, MDLM, "
                                         "BD3-LM, DiffuGPT (diffusion) or any causal LM (Jacobi)",
                                    elem_id="sd-model")
                trust = gr.Checkbox(False, label="trust remote code",
                                    info="⚠ runs Python code from the model's Hub repository; needed by LLaDA, Dream, "
                                         "Fast-dLLM v2, SDAR, MDLM and BD3-LM. Tick only for repositories you trust.",
                                    elem_id="sd-trust")
                schedule_info = gr.Markdown(_schedule_info("low_confidence"))
                knobs = [_control(k, visible=k.name != "window") for k in LATTICE_KNOBS]
                gen_length = _control(CANVAS)
                with gr.Accordion("Sampling", open=False):
                    temperature = gr.Slider(TEMPERATURE.low, TEMPERATURE.high, value=0.0, step=0.05,
                                            label="temperature", info="0 = each cell proposes its most likely token")
                    seed = gr.Number(value=SEED.default, precision=0, label="seed")
                run_btn, step_btn, pause_btn, reset_btn = run_buttons("sd")
            with gr.Column(scale=2):
                status = gr.Markdown("Ready. **Run** streams denoising steps; **Step** advances one.",
                                     elem_id="sd-status")
                text = gr.HTML(generated_html(None), elem_id="sd-text")
                slider = step_scrubber("sd")
                with gr.Row():
                    signal = gr.Radio([(v, k) for k, v in SIGNALS.items()], value="confidence", label="Colour by",
                                      elem_id="sd-signal")
                    overlays = gr.CheckboxGroup(list(OVERLAYS), value=list(OVERLAYS), label="Overlays",
                                                elem_id="sd-overlays")
                lattice = gr.Plot(empty_figure("Press Run or Step to fill the canvas", height=260),
                                  label="Lattice: steps × positions", elem_id="sd-lattice")
                with gr.Row():
                    cell = gr.Textbox(label="Cell (step, position)", placeholder="click a lattice cell, or type 3, 12",
                                      elem_id="sd-cell", scale=1)
                    cell_card = gr.HTML("Click a cell of the lattice to see its top candidates at that step.",
                                        elem_id="sd-cell-topk")
                schedule_plot = gr.Plot(empty_figure("What the schedule compared, per step", height=220),
                                        label="Schedule", elem_id="sd-schedule")
                with gr.Row():
                    tpf = gr.Plot(empty_figure("Tokens per forward", height=220), label="Tokens per forward",
                                  elem_id="sd-tpf")
                    progress = gr.Plot(empty_figure("Steps against length", height=220),
                                       label="Steps against generated length", elem_id="sd-progress")
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
                with gr.Accordion("Export", open=False):
                    export_btn, export_file = export_panel("sd")
                    summary = gr.JSON(label="Run summary", elem_id="sd-summary")

        state = gr.State(None)
        settings = [prompt, method, model, trust, *knobs, gen_length, temperature, seed]
        outputs = [state, status, text, slider, lattice, schedule_plot, tpf, progress, metrics, summary]
        schedule_knob = knobs[[k.name for k in LATTICE_KNOBS].index("schedule")]
        schedule_knob.change(_schedule_info, schedule_knob, schedule_info, queue=False)
        method.change(_method_changed, [method, model], [model, schedule_info, *knobs], queue=False)
        run_event = run_btn.click(self.run, [*settings, signal, overlays, state], outputs, api_name="lattice_run",
                                  concurrency_id="model", concurrency_limit=1)
        step_btn.click(self.step, [*settings, signal, overlays, state], outputs, api_name="lattice_step",
                       concurrency_id="model", concurrency_limit=1)
        pause_btn.click(self.pause, state, status, queue=False, api_name="lattice_pause")
        reset_btn.click(self.reset, state, outputs, cancels=[run_event], api_name="lattice_reset")
        for event in (slider.release, slider.input, signal.change, overlays.change):
            event(self.scrub, [slider, signal, overlays, state], outputs[1:], api_name=False,
                  trigger_mode="always_last")
        cell.change(self.inspect, [cell, state], cell_card, api_name="lattice_cell", queue=False)
        export_btn.click(self.export, state, export_file, api_name="lattice_export")
        compare_btn.click(self.compare, [*settings, schedule_a, schedule_b, signal],
                          [lattice_a, lattice_b, compare_progress, compare_table], api_name="lattice_compare",
                          concurrency_id="model", concurrency_limit=1)


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
