"""The Diffusion tab: masked / block diffusion and Jacobi decoding on a lattice of steps × positions.

Same controller as the Speculative tab: Run / Step stream one record per step, model work
shares the "model" queue, each browser session keeps its own `Session` in `gr.State`, and the
scrubber, signal switch and cell inspector re-render from the stored `DiffusionStep`s
without calling the model. Each record becomes its view data once
(`viz.live.LatticeLiveView`): a streamed step draws the last rows of the lattice, the
whole lattice renders on scrub and at the end.

The lattice is an SVG grid in a `gr.HTML` whose own `js_on_load` turns a click on a cell into a click event
carrying its step and position (`DiffusionTab.pick_cell`): no script is injected at launch, nothing polls.
"""
from __future__ import annotations

import html

import gradio as gr
import numpy as np

from ..config import EMBEDDED_MODEL_ID, LATTICE_KNOBS, SEED, TEMPERATURE, ConfigError, shown
from ..decoding.schedules import SCHEDULE_HELP, SCHEDULES
from ..models import ModelStore
from ..runs import ARTiming, Intervenable, against_ar, ar_decoder, prepare_lattice_run
from ..settings import GEN_LENGTH, TINY_MDM_ID, LatticeSettings
from ..textio import check_prompt_fits, encode_prompt, shown_text, single_token, token_label
from ..trace import CELL_STATE_NAMES, summarize_diffusion
from ..viz.lattice import SIGNALS, cell_topk_html, empty_lattice_html, lattice_svg, progress_figure, user_note
from ..viz.live import LatticeLiveView
from ..viz.palette import INK_COLOR, LATTICE_CURRENT_COLOR
from ..viz.tree import empty_figure
from .controller import (Session, Sharing, TabController, TabSpec, export_panel, request_key, run_buttons,
                         scrubber_update, session_state, step_scrubber, trace_panel, user_errors, wire,
                         wire_trace_panel)
from .inputs import PromptBox, named_choice, whole_number
from .links import share_link_box, wire_share_link
from .replay import ReplayedDecoder
from .speculative import knob_control

OVERLAYS = {"commit order": "commit_order", "block boundaries": "blocks", "all-in marks": "threshold"}
MODEL_CHOICES = [(f"{TINY_MDM_ID} · trained tiny masked diffusion (offline)", TINY_MDM_ID),
                 (f"{EMBEDDED_MODEL_ID} · AR, for Jacobi", EMBEDDED_MODEL_ID)]
# a prompt the shipped toy was trained on: its answer reads as English, so the schedules' differences show
PROMPT = "How do I keep basil alive on a kitchen windowsill?"
LATTICE_NAMES = tuple(k.name for k in LATTICE_KNOBS)
# The tab opens on these instead of the knobs' defaults (which suit real diffusion LMs such as LLaDA: one cell
# per step, Fast-dLLM's 0.9, Prophet's gap of 5). The shipped toy is never that sure of itself, so under those
# defaults low-confidence, threshold and Prophet all take 32 steps to the same text. Measured on PROMPT, 32
# cells in blocks of 8: low_confidence 16 steps; threshold 22 steps and a different text (it waits for
# confident cells); prophet 12 steps (all-in in the last blocks), the low-confidence text.
TOY_DEFAULTS = {"steps": 16, "threshold": 0.4, "prophet_gap": 1.0, "remask_below": 0.4}
TOY_NOTE = ("**tiny-mdm is a toy** (1.9 M parameters, trained for 11 minutes on one CPU thread): its text is "
            "half word salad, so watch how each schedule fills the canvas, not what it says.")
# label, then prompt, method, model, schedule: each shows something the others do not
EXAMPLES = [
    ("low-confidence: a fixed number of cells a step", [PROMPT, "diffusion", TINY_MDM_ID, "low_confidence"]),
    ("threshold: waits for confident cells", [PROMPT, "diffusion", TINY_MDM_ID, "threshold"]),
    ("Prophet: commits all at once when sure", [PROMPT, "diffusion", TINY_MDM_ID, "prophet"]),
    ("remask: takes weak cells back", ["Write a short poem about the sea.", "diffusion", TINY_MDM_ID, "remask"]),
    ("Jacobi on SmolLM2: lossless, a repetitive answer converges faster",
     ["Write the word 'hello' ten times.", "jacobi", EMBEDDED_MODEL_ID, "low_confidence"]),
]


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


def _schedule_info(method: str, schedule: str) -> str:
    if method != "diffusion":
        return ("**Jacobi**: the AR model guesses a window of positions and refines them in parallel; a guess is "
                "kept once every guess before it was right, so greedy output equals plain AR.")
    return f"**{schedule}**: {SCHEDULE_HELP.get(schedule, '')}"


# knobs that belong to one schedule (its registry entry's `params`): shown only while it is picked
SCHEDULE_PARAMS = frozenset(p for s in SCHEDULES.values() for p in s.params)
# schedules that never read the step budget: threshold reveals whatever passes it, however many steps that takes
BUDGET_FREE = frozenset({"threshold"})


def _knob_shown(name: str, method: str, schedule: str, adaptive: bool) -> bool:
    """Whether the tab shows knob `name`: the method's knobs, of the schedule knobs only those the picked schedule
    reads, the step budget only for schedules that spend it, the delimiter threshold only with adaptive blocks."""
    diffusion = method == "diffusion"
    own = set(LatticeSettings(method=method).knob_names) if method in ("diffusion", "jacobi") else set()
    if name not in own:
        return False
    if diffusion and name in SCHEDULE_PARAMS:
        return schedule in SCHEDULES and name in SCHEDULES[schedule].params
    if diffusion and name == "steps":
        return schedule not in BUDGET_FREE
    if diffusion and name == "delimiter_threshold":
        return bool(adaptive)
    return True


def _same_run(settings, method: str, model: str, schedule: str) -> bool:
    """Whether a session's settings are already these method, model and schedule."""
    same_model = (settings.model or "").strip() == (model or "").strip()
    if settings.method != method or not same_model:
        return False
    return method == "jacobi" or settings.knobs.get("schedule") == schedule


def _knob_visibility(method: str, schedule: str, adaptive: bool = False) -> list:
    return [gr.update(visible=_knob_shown(k.name, method, schedule, adaptive)) for k in LATTICE_KNOBS]


def _controls_changed(method: str, schedule: str, adaptive: bool):
    return [_schedule_info(method, schedule), *_knob_visibility(method, schedule, adaptive)]


def _method_changed(method: str, model: str, schedule: str, adaptive: bool):
    diffusion = method == "diffusion"
    if diffusion and (model or "").strip() in ("", EMBEDDED_MODEL_ID):
        model = TINY_MDM_ID
    elif not diffusion and (model or "").strip() == TINY_MDM_ID:
        model = EMBEDDED_MODEL_ID
    return [gr.update(value=model), *_controls_changed(method, schedule, adaptive)]


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


CELL_HINT = "Click a cell of the lattice to see its top candidates at that step."
INTERVENE_HINT = ("**Pin** holds a token at a canvas position: before a run (pin several, then Run: they are in place "
                  "from step 0) or between steps of a paused run. **Send back** returns a committed cell to the mask, "
                  "so the schedule fills it again (a pinned cell loses its pin; a finished block or run reopens). "
                  "Both act from the next step, and the lattice marks them in violet.")


def _position_of(cell) -> object:
    """The position of a cell typed or clicked as 'step, position' (nothing when it is not one)."""
    try:
        return int(str(cell).replace(";", ",").split(",")[1])
    except (IndexError, ValueError):
        return gr.skip()
COMPARE_EMPTY = (empty_lattice_html("Schedule A"), empty_lattice_html("Schedule B"),
                 empty_figure("Steps against generated length", height=220), "", None)


class DiffusionSpec(TabSpec):
    prefix = "sd"
    api_prefix = "lattice_"
    trace_kind = "diffusion"
    tab_label = "Diffusion"
    smaller = "pick a smaller model or a shorter canvas"
    trace_name = "specviz-lattice"
    settings_type = LatticeSettings

    def __init__(self, store, sharing=None):
        super().__init__(store, sharing)
        self.ar_timings = ARTiming.cache(256)

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
        session.extra.update(labels={}, tokenizer=run.tokenizer, model_id=run.model_id, warnings=list(run.warnings))
        return session

    def replay(self, trace, tokenizer, prompt: str | None = None) -> Session:
        try:
            settings = LatticeSettings.from_dict(trace.settings)
        except ConfigError:  # a knob of a newer version: the views need only the records
            settings = LatticeSettings(method="jacobi" if trace.method == "jacobi" else "diffusion")
        prompt = prompt if prompt is not None else tokenizer.decode(trace.prompt_ids.tolist())
        session = Session(prompt, settings, None, ReplayedDecoder(trace),
                          LatticeLiveView(f"{trace.method} on {trace.target_id}", trace.backend))
        session.extra.update(labels={}, tokenizer=tokenizer, model_id=trace.target_id, warnings=[])
        for step in trace.steps:
            self._add_step(session, step)
        return session

    def control_updates(self, settings) -> list:
        k = settings.knobs
        schedule = k.get("schedule", "low_confidence")
        adaptive = bool(k.get("adaptive_block", False))
        shown_now = [_knob_shown(knob.name, settings.method, schedule, adaptive) for knob in LATTICE_KNOBS]
        knobs = [gr.update(value=k[knob.name], visible=v) if knob.name in k else gr.update(visible=v)
                 for knob, v in zip(LATTICE_KNOBS, shown_now)]
        return [gr.update(value=settings.method), gr.update(value=settings.model), *knobs, settings.gen_length,
                settings.temperature, settings.seed]

    @staticmethod
    def label(session, token_id: int) -> str:
        if token_id < 0:
            return ""
        labels = session.extra["labels"]
        if token_id not in labels:
            labels[token_id] = token_label(session.extra["tokenizer"], token_id)
        return labels[token_id]

    def advance(self, session) -> None:
        s = session.decoder.step()
        if s is not None:
            self._add_step(session, s)

    def _add_step(self, session, s) -> None:
        """One step record into the session's views (a live step, or one read back from a trace)."""
        lab = self.label
        session.view.add(s, [lab(session, int(t)) for t in s.canvas], [lab(session, int(t)) for t in s.proposal])

    def finish_work(self, session, view):
        """Jacobi only: plain AR on the same model, prompt and length, one AR step per turn, for the speedup and
        the lossless check (as the CLI's lattice bench reports them). A prompt already timed reuses its time."""
        if session.settings.method != "jacobi" or "speedup" in session.extra:
            return
        trace = session.decoder.trace()
        s = session.settings
        n = max(int(trace.output_ids.shape[0]), 1)
        key = (session.run.model_id, tuple(trace.prompt_ids.tolist()), n, s.temperature, s.seed)
        timed = self.ar_timings.peek(key)
        if timed is None:
            dec = ar_decoder(session.run.spec, trace.prompt_ids, n, record=True)
            for _ in dec.steps():
                yield
            timed = ARTiming.of(dec.trace())
            self.ar_timings.put(key, timed)
            session.extra["speedup"] = against_ar(trace, timed, s.temperature == 0)
        else:
            result = against_ar(trace, timed, s.temperature == 0)
            result["how"] += f" (the AR time is from an earlier run of this prompt, {timed.age()} ago)"
            session.extra["speedup"] = result

    def status(self, session, note: str = "", k: int | None = None) -> str:
        if session is None or session.n_steps == 0:
            return note or "Ready."
        s = session.decoder.records[-1 if k is None else k]
        state = {"eos": "finished (end of sequence)", "length": "finished (canvas full)"}.get(
            session.decoder.finish_reason, "paused" if session.paused else "running")
        return (f"**Step {s.step}** · block {s.block} [{s.block_start}, {s.block_end}) · {s.rule} · "
                f"{s.n_masked} masked · {state}" + (f" · {note}" if note else ""))

    def _context(self, session) -> dict:
        d = session.decoder
        jacobi = session.settings.method == "jacobi"
        speedup = session.extra.get("speedup")
        # a replayed run (no model) times no AR: nothing is pending
        pending = jacobi and speedup is None and session.run is not None
        return dict(finish=d.finish_reason, wall_s=d.wall_s, speedup=speedup, ar_pending=pending)

    # outputs: state, status, text, slider, lattice, schedule, tpf, progress, cell box, cell card, the compare
    # panel's five, metrics, summary. The cell card and the comparison belong to a run: a new run (and a reset)
    # clears them; its own steps and scrubs leave them.
    def outputs_empty(self, status):
        r = LatticeLiveView().live()
        return (None, status, r["text"], scrubber_update(0, 0), r["lattice"], r["schedule"], r["tpf"], r["progress"],
                "", CELL_HINT, *COMPARE_EMPTY, "", None)

    def outputs_live(self, session, status, view):
        signal, overlays = _view_keys(view)
        r = session.view.live(signal=signal, overlays=overlays, **self._context(session))
        n = session.n_steps
        return (session, status, r["text"], scrubber_update(n, n - 1), r["lattice"], gr.skip(), gr.skip(), gr.skip(),
                *(gr.skip(),) * 7, r["metrics"], gr.skip())

    def outputs_full(self, session, status, k, view):
        signal, overlays = _view_keys(view)
        r = session.view.full(k, signal=signal, overlays=overlays, **self._context(session))
        n = session.n_steps
        return (session, status, r["text"], scrubber_update(n, n - 1 if k is None else k), r["lattice"],
                r["schedule"], r["tpf"], r["progress"], *(gr.skip(),) * 7, r["metrics"], self.summary(session))

    def summary(self, session) -> dict | None:
        if session is None or session.n_steps == 0:
            return None
        tr = session.decoder.trace()
        out = tr.output_ids
        return {
            "prompt": session.prompt, "method": tr.method, "model": session.extra["model_id"], "settings": tr.settings,
            "text": session.extra["tokenizer"].decode(out.tolist(), skip_special_tokens=True),
            "prompt_ids": tr.prompt_ids.tolist(), "output_ids": out.tolist(),
            "finished": tr.finish_reason or None, "kernels": tr.backend,
            "lossless": bool(tr.lossless and session.settings.method == "jacobi" and session.settings.temperature == 0),
            "summary": tr.summary(), "speedup_vs_ar": session.extra.get("speedup"), "warnings": session.extra["warnings"],
        }


class DiffusionTab:
    def __init__(self, store: ModelStore, sharing: Sharing | None = None):
        self.store = store
        self.spec = DiffusionSpec(store, sharing)
        self.controller = TabController(self.spec)

    def card(self, session, k: int, pos: int) -> str:
        """The top-k card of cell `pos` at recorded step `k`, or what is wrong with them."""
        if session is None or session.n_steps == 0:
            return "Run or step first, then click a cell of the lattice."
        records = session.decoder.records
        if not (0 <= k < len(records)):
            return f"Step {shown(k, 24)} is not recorded: this run has steps 0 to {len(records) - 1}."
        step = records[k]
        if not (0 <= pos < step.length):
            return f"Position {shown(pos, 24)} is off the canvas (0 to {step.length - 1})."
        labels = [self.spec.label(session, int(t)) for t in step.topk_ids[pos]]
        return cell_topk_html(step, pos, labels, CELL_STATE_NAMES[int(step.cell_state[pos])],
                              user_note(records, k, pos))

    def inspect(self, cell, session):
        """The top-k candidates of one cell at one step, typed as 'step, position'."""
        if session is None or session.n_steps == 0:
            return "Run or step first, then click a cell of the lattice."
        try:
            k, pos = (int(float(x)) for x in str(cell).replace(";", ",").split(",")[:2])
        except (ValueError, OverflowError):
            return "Type a cell as 'step, position' (for example 3, 12), or click one in the lattice."
        return self.card(session, k, pos)

    def pick_cell(self, session, evt: gr.EventData):
        """A click on a lattice cell: the event carries the cell's step and position (`lattice_svg`'s data-step
        and data-pos). Returns the cell as 'step, position' for the box, and its card."""
        data = getattr(evt, "_data", None)
        data = data if isinstance(data, dict) else {}
        step, pos = data.get("step"), data.get("position")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (step, pos)):
            return gr.skip(), "Click a cell of the lattice (this click carried no cell)."
        return f"{step}, {pos}", self.card(session, step, pos)

    # interventions: pin a token, send a cell back to the mask -------------------------------------------
    def _intervenable(self, session, what: str):
        """The session's decoder if the user may change it, else a ConfigError that says why not."""
        if isinstance(session.decoder, ReplayedDecoder):
            raise ConfigError(f"this run is replayed from a trace: a recorded run cannot be changed. Press Run to run "
                              f"its settings live, then {what}")
        if not isinstance(session.decoder, Intervenable):
            raise ConfigError("Jacobi decoding cannot be pinned or sent back (its guesses must match greedy AR): "
                              "pick Masked / block diffusion")
        return session.decoder

    def pin(self, prompt, settings=None, position=None, token=None, view=None, session=None,
            request: gr.Request = None):
        """Pin `token` (text that is exactly one token) at canvas cell `position`. In the run on show (paused,
        stepped or streaming) it holds from the next step; with no live run of these settings (none yet, a
        finished or a replayed one) a new run is prepared with the pin, and Run or Step starts it with the pin in
        place from step 0 (pin several cells before running: constraints, as in LLaDA's demo)."""
        spec, key = self.spec, request_key(request)
        with user_errors(spec.smaller, spec.policy):
            pos = whole_number("position", position)
            checked = spec.parse(settings)
            spec.check_prompt(prompt)
            if checked.method != "diffusion":
                raise ConfigError("pins need the diffusion method: Jacobi's guesses must match greedy AR")
            session = self.controller._running.get(key) or session
            fresh = session is None or session.done or session.prompt != prompt or \
                spec.live_changes(session, checked) is None
            why = ""
            if fresh and session is not None:
                why = (" (a replayed run cannot be changed)" if isinstance(session.decoder, ReplayedDecoder) else
                       " (the last run had finished)" if session.done else " (the prompt or the settings changed)")
            if fresh:
                session = spec.sharing.run_in_turn(key, "preparing a run to pin", lambda: spec.start(prompt, checked))
            decoder = self._intervenable(session, "pin")
            token_id = single_token(session.extra["tokenizer"], token, session.run.can_pin, "the token to pin")
            with session.lock:
                decoder.pin(pos, token_id)
        label = shown_text(self.spec.label(session, token_id))
        if session.n_steps == 0:
            pins = ", ".join(f"{j} = {shown_text(self.spec.label(session, int(decoder.canvas[j])))}"
                             for j in np.flatnonzero(decoder.pinned))
            note = (f"Pinned {label} at position {pos} for a new run{why}: press **Run** or "
                    f"**Step**, and the pins hold from step 0. Pins: {pins}.")
        else:
            note = f"pinned {label} at position {pos}: it holds from step {session.n_steps} (the next)"
        return spec.outputs_full(session, spec.status(session, note), None, view or {})

    def remask(self, position=None, view=None, session=None, request: gr.Request = None):
        """Send the committed cell at `position` back to the mask: the schedule fills it again from the next step.
        A pinned cell loses its pin; a cell of a finished block reopens that block; a finished run carries on
        (press Run or Step)."""
        spec, key = self.spec, request_key(request)
        with user_errors(spec.smaller, spec.policy):
            pos = whole_number("position", position)
            session = self.controller._running.get(key) or session
            if session is None:
                raise ConfigError("nothing to send back yet: run or step first, then pick a committed cell")
            decoder = self._intervenable(session, "send cells back to the mask")
            was_pinned = 0 <= pos < len(decoder.pinned) and bool(decoder.pinned[pos])
            token = int(decoder.canvas[pos]) if 0 <= pos < len(decoder.canvas) else -1
            finished = session.done
            with session.lock:
                decoder.remask(pos)
        note = (f"sent position {pos} ({shown_text(self.spec.label(session, token))}) back to the mask"
                + (", and took its pin off" if was_pinned else "")
                + (f": the schedule fills it again from step {session.n_steps}" if session.n_steps else "")
                + ("; the run had finished and carries on: press **Run** or **Step**" if finished else ""))
        return spec.outputs_full(session, spec.status(session, note), None, view or {})

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
                runs, lattices = {}, []
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
                    lattices.append(lattice_svg(steps, [[labels(t) for t in s.canvas] for s in steps],
                                                [[labels(t) for t in s.proposal] for s in steps],
                                                signal=signal, title=f"{label}: {len(steps)} steps"))
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
        return lattices[0], lattices[1], progress, table, result

    # layout ----------------------------------------------------------------------------
    def build(self):
        empty = LatticeLiveView().live()
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                prompt = PromptBox(label="Prompt", lines=2, value=PROMPT, elem_id="sd-prompt")
                # Run and Step first, so that they are on screen without scrolling
                buttons = run_buttons("sd")
                method = gr.Radio([("Masked / block diffusion", "diffusion"), ("Jacobi decoding (AR model)", "jacobi")],
                                  value="diffusion", label="Method", elem_id="sd-method")
                schedule_info = gr.Markdown(_schedule_info("diffusion", "low_confidence"), elem_id="sd-schedule-info")
                visible = [_knob_shown(k.name, "diffusion", "low_confidence", False) for k in LATTICE_KNOBS]
                knobs = [knob_control(k, "sd-knob", value=TOY_DEFAULTS.get(k.name), visible=v)
                         for k, v in zip(LATTICE_KNOBS, visible)]
                gen_length = knob_control(GEN_LENGTH, "sd-knob")
                model = gr.Dropdown(MODEL_CHOICES, value=TINY_MDM_ID, allow_custom_value=True, label="Model",
                                    info="tiny-mdm runs offline; or a Hub id: LLaDA, Dream, Fast_dLLM_v2, SDAR, MDLM, "
                                         "BD3-LM, DiffuGPT (diffusion) or any causal LM (Jacobi)",
                                    elem_id="sd-model")
                with gr.Accordion("Sampling, and models with their own code", open=False):
                    temperature = gr.Slider(TEMPERATURE.low, TEMPERATURE.high, value=0.0, step=0.05,
                                            label="temperature", info="0 = each cell proposes its most likely token")
                    seed = gr.Number(value=SEED.default, precision=0, label="seed")
                    gr.Markdown(_remote_code_note(self.store), elem_id="sd-remote-code")
                schedule_knob = knobs[LATTICE_NAMES.index("schedule")]
                gr.Examples([values for _, values in EXAMPLES], [prompt, method, model, schedule_knob],
                            example_labels=[label for label, _ in EXAMPLES],
                            label="Examples: a click fills the settings, then press Run", elem_id="sd-examples")
                trace_picks = trace_panel("sd", "diffusion")
            with gr.Column(scale=2):
                gr.Markdown(TOY_NOTE, elem_id="sd-toy-note")
                status = gr.Markdown("Ready. **Run** streams denoising steps; **Step** advances one.",
                                     elem_id="sd-status")
                text = gr.HTML(empty["text"], elem_id="sd-text")
                lattice = gr.HTML(empty["lattice"], elem_id="sd-lattice", js_on_load=LATTICE_CLICK_JS,
                                  css_template=LATTICE_CSS, apply_default_css=False)
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        cell_card = gr.HTML(CELL_HINT, elem_id="sd-cell-topk", js_on_load=None)
                    with gr.Column(scale=1, min_width=160):
                        cell = gr.Textbox(label="Go to cell (step, position)", placeholder="e.g. 3, 12 then Enter",
                                          elem_id="sd-cell")
                with gr.Accordion("Intervene: pin a token, or send a cell back to the mask", open=True,
                                  elem_id="sd-intervene"):
                    gr.Markdown(INTERVENE_HINT, elem_id="sd-intervene-hint")
                    with gr.Row(equal_height=True):
                        position = gr.Number(None, precision=0, label="Cell position (a click on a cell picks it)",
                                             elem_id="sd-position")
                        pin_token = gr.Textbox(label="Token to pin (exactly one token)", placeholder="e.g. ' water'",
                                               elem_id="sd-pin-token")
                        pin_btn = gr.Button("Pin this token at the position", elem_id="sd-pin")
                        remask_btn = gr.Button("Send the cell back to the mask", elem_id="sd-remask")
                slider = step_scrubber("sd")
                with gr.Row():
                    signal = gr.Radio([(v, k) for k, v in SIGNALS.items()], value="confidence", label="Colour by",
                                      elem_id="sd-signal")
                    overlays = gr.CheckboxGroup(list(OVERLAYS), value=list(OVERLAYS), label="Overlays",
                                                elem_id="sd-overlays")
                metrics = gr.HTML("", elem_id="sd-metrics", js_on_load=None)
                # the figures carry their own titles: a component label would sit on top of them
                schedule_plot = gr.Plot(empty["schedule"], show_label=False, elem_id="sd-schedule")
                with gr.Row():
                    tpf = gr.Plot(empty["tpf"], show_label=False, elem_id="sd-tpf")
                    progress = gr.Plot(empty["progress"], show_label=False, elem_id="sd-progress")
                with gr.Accordion("Compare two schedules on this prompt", open=False):
                    with gr.Row():
                        schedule_a = gr.Dropdown(list(SCHEDULES), value="low_confidence", label="Schedule A",
                                                 elem_id="sd-compare-a")
                        schedule_b = gr.Dropdown(list(SCHEDULES), value="threshold", label="Schedule B",
                                                 elem_id="sd-compare-b")
                    compare_btn = gr.Button("Run both", elem_id="sd-compare")
                    with gr.Row():
                        lattice_a = gr.HTML(COMPARE_EMPTY[0], elem_id="sd-lattice-a", js_on_load=None)
                        lattice_b = gr.HTML(COMPARE_EMPTY[1], elem_id="sd-lattice-b", js_on_load=None)
                    compare_progress = gr.Plot(COMPARE_EMPTY[2], show_label=False, elem_id="sd-compare-progress")
                    compare_table = gr.HTML("", elem_id="sd-compare-table-box", js_on_load=None)
                    compare_json = gr.JSON(label="Comparison (JSON)", elem_id="sd-compare-json")
                settings_box, export_btn, export_file, summary = export_panel("sd")
                share_button, share_box = share_link_box("sd")
        adaptive = knobs[LATTICE_NAMES.index("adaptive_block")]

        state = session_state()
        view_state = gr.State({"signal": "confidence", "overlays": list(OVERLAYS)})
        compare_outputs = [lattice_a, lattice_b, compare_progress, compare_table, compare_json]
        outputs = [state, status, text, slider, lattice, schedule_plot, tpf, progress, cell, cell_card,
                   *compare_outputs, metrics, summary]
        collect_inputs = [method, model, *knobs, gen_length, temperature, seed]
        run_event = wire(self.controller, collect=collect_settings, collect_inputs=collect_inputs, prompt=prompt,
                         settings_box=settings_box, view_state=view_state, state=state, outputs=outputs,
                         buttons=buttons, slider=slider, export_button=export_btn, export_file=export_file,
                         view_controls=[("signal", signal), ("overlays", overlays)])
        for control in (schedule_knob, adaptive):
            control.change(_controls_changed, [method, schedule_knob, adaptive], [schedule_info, *knobs], queue=False,
                           api_name=False)
        method.change(_method_changed, [method, model, schedule_knob, adaptive], [model, schedule_info, *knobs],
                      queue=False, api_name=False)

        # a shown run belongs to its method, model and schedule: changing one clears the tab (and stops a run)
        def settings_changed(method, model, schedule, session=None, request: gr.Request = None):
            what = f"Jacobi on {model}" if method == "jacobi" else f"{schedule} on {model}"
            key = request_key(request)
            shown = [s for s in (self.controller._running.get(key), session) if s is not None]
            if any(_same_run(s.settings, method, model, schedule) for s in shown):
                # a lesson, a share link or an opened trace set these controls to the run on show: keep it
                return (gr.skip(),) * len(outputs)
            cleared = self.controller.reset(session, key)
            return (cleared[0], f"Settings changed to {what}: press **Run** or **Step**.", *cleared[2:])

        for control in (method, model, schedule_knob):
            control.change(settings_changed, [method, model, schedule_knob, state], outputs, cancels=[run_event],
                          queue=False, api_name=False)
        wire_trace_panel(self.controller, trace_picks, view_state, outputs)
        wire_share_link(self.controller.handle, "diffusion", share_button, share_box)
        lattice.click(self.pick_cell, state, [cell, cell_card], api_name=False, queue=False)
        # the picked cell (clicked, or typed as 'step, position') is the one Pin and Send back act on
        cell.change(_position_of, cell, position, api_name=False, queue=False)
        pin_btn.click(collect_settings, collect_inputs, settings_box, queue=False, api_name=False).then(
            self.pin, [prompt, settings_box, position, pin_token, view_state, state], outputs, api_name="lattice_pin",
            preprocess=False, concurrency_limit=None)
        remask_btn.click(self.remask, [position, view_state, state], outputs, api_name="lattice_remask",
                         preprocess=False, concurrency_limit=None)
        cell.submit(self.inspect, [cell, state], cell_card, api_name="lattice_cell", queue=False)
        compare_btn.click(collect_settings, collect_inputs, settings_box, queue=False, api_name=False).then(
            self.compare, [prompt, settings_box, schedule_a, schedule_b, signal], compare_outputs,
            api_name="lattice_compare", preprocess=False, concurrency_limit=None)


# A click on a cell becomes this component's click event with the cell's step and position. The listener sits on
# the component's own element, which keeps its place when a new lattice is drawn into it, so it is bound once.
LATTICE_CLICK_JS = """
element.addEventListener('click', (event) => {
  const cell = event.target.closest ? event.target.closest('[data-pos]') : null;
  const row = cell ? cell.closest('[data-step]') : null;
  if (!row || !element.contains(row)) return;
  element.querySelectorAll('.sv-picked').forEach((el) => el.classList.remove('sv-picked'));
  cell.classList.add('sv-picked');
  trigger('click', {step: Number(row.dataset.step), position: Number(cell.dataset.pos)});
});
"""
LATTICE_CSS = f"""
.sv-cells rect {{ cursor: pointer; }}
.sv-cells rect:hover {{ stroke: {INK_COLOR}; stroke-width: 1.5; }}
.sv-cells rect.sv-picked {{ stroke: {LATTICE_CURRENT_COLOR}; stroke-width: 3; }}
"""
