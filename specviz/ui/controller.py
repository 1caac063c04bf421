"""One tab controller for run / step / pause / reset / scrub / export, shared by every tab.

A tab supplies what differs (`TabSpec`): how settings become a session, how a session
renders while streaming and in full, and its status line. The controller owns the rest:
the session lifecycle (resume, live knob changes, new runs), the streaming loop, the
pause flag, the scrubber, trace export and the user-facing errors.

API shape: every run endpoint takes `prompt` and one `settings` dict by name (missing
fields take their defaults) and its last output is the run summary as JSON, so adding
a knob never changes an endpoint's shape.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import torch

from ..config import ConfigError
from ..models import ModelLoadError
from ..policy import ServerPolicy
from ..trace import MAX_TRACE_CHARS, TraceError
from .inputs import StepSlider, recorded_index
from ..textio import TokenText, trace_file_dict
from .replay import PUBLIC_MAX_CHARS, read_trace_file
from .sharing import Limits, ServerFull, Sessions, Turns


@contextlib.contextmanager
def user_errors(smaller: str, policy: ServerPolicy | None = None):
    """Errors the user can fix become a clear message in the app; the session and the server carry on.

    Only user-fixable input becomes a message (bad settings, a model that cannot load, a prompt that
    does not fit, memory, a full server); anything else stays an internal error, which Gradio shows
    without its text. `smaller` says what to shrink when memory runs out, e.g. "pick a smaller model or
    fewer new tokens". On a public server the message is scrubbed of server paths."""
    scrub = policy.scrub if policy is not None else str
    try:
        yield
    except (ConfigError, ModelLoadError, ServerFull) as err:
        raise gr.Error(scrub(str(err)), print_exception=False) from None
    except TraceError as err:
        raise gr.Error(f"This trace cannot be replayed: {scrub(str(err))}", print_exception=False) from None
    except torch.cuda.OutOfMemoryError:
        raise gr.Error(f"Out of GPU memory: {smaller}.", print_exception=False) from None
    except MemoryError:
        raise gr.Error(f"Out of memory: {smaller}.", print_exception=False) from None


@dataclass
class Sharing:
    """What every tab of one server shares: its policy, the turns on the model, the session limits, and
    the wrapper that puts one step on a GPU where the platform lends one per call (ZeroGPU)."""

    policy: ServerPolicy = field(default_factory=ServerPolicy)
    limits: Limits = field(default_factory=Limits)
    turns: Turns = field(default_factory=Turns)
    sessions: Sessions = None
    on_gpu: object = None  # a decorator: on_gpu(fn) -> fn run with a GPU attached, or fn itself

    def __post_init__(self):
        if self.sessions is None:
            self.sessions = Sessions(self.limits)
        if self.on_gpu is None:
            self.on_gpu = lambda fn: fn

    @classmethod
    def for_server(cls, policy: ServerPolicy, environ=None) -> "Sharing":
        from .gpu import on_gpu

        return cls(policy, Limits.from_env(policy.public, environ), on_gpu=on_gpu(STEP_GPU_S))

    def run_in_turn(self, key: str, what: str, work):
        """Blocking form of a turn, for handlers that do not stream: wait in line, then run `work()`."""
        return self.turns.run(key, what, work)


# seconds of GPU one step may hold on a platform that lends a GPU per call (ZeroGPU): a step, not a run
STEP_GPU_S = 30
_call_numbers = itertools.count()
LOADING = "Loading the model and preparing the run…"
# how long a session's new request waits for its previous one to stop after its current step
HANDOVER_S = 15.0


def request_key(request) -> str:
    """The session a request belongs to (Gradio's session hash); calls without one each get their own."""
    key = getattr(request, "session_hash", None) if request is not None else None
    return str(key) if key else f"call-{next(_call_numbers)}"


@dataclass
class Session:
    """One browser session's run: its settings, decoder, incremental view and flags (lives in gr.State)."""

    prompt: str
    settings: object  # RunSettings or LatticeSettings
    run: object  # PreparedRun or LatticeRun
    decoder: object  # a Decoder
    view: object  # the tab's incremental view (viz.live)
    extra: dict = field(default_factory=dict)  # tab-specific results, e.g. the speedup against AR
    paused: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def done(self) -> bool:
        return self.decoder.done

    @property
    def n_steps(self) -> int:
        return len(self.decoder.records)

    def close(self) -> None:
        """Stop a run in flight at its next step (reset, or the session expired)."""
        self.paused = True


# a browser session's run is forgotten this long after its last update, and its caches freed
SESSION_TTL_S = float(os.environ.get("SPECVIZ_SESSION_TTL", 1800))


def session_state():
    """The gr.State holding one browser session's `Session`; it expires when idle and stops its run."""
    return gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=lambda s: s.close() if s is not None else None)


class TabSpec:
    """What a tab must provide to the controller."""

    prefix: str = ""  # element ids and API names
    api_prefix: str = ""  # "" for the Speculative tab, "lattice_" for the Diffusion tab
    smaller: str = "pick a smaller model or fewer new tokens"
    trace_name: str = "specviz"
    settings_type: type = object  # RunSettings or LatticeSettings
    trace_kind: str = "speculative"  # the kind of trace (`Trace.kind`) the tab replays
    tab_label: str = "Speculative"

    def __init__(self, store, sharing: Sharing | None = None):
        self.store = store
        self.sharing = sharing or Sharing()

    @property
    def policy(self) -> ServerPolicy:
        return self.sharing.policy

    def parse(self, settings: dict | None):
        """The settings dict an endpoint received, checked into the tab's settings object and against
        this server's policy (its allow-lists and caps)."""
        checked = self.settings_type.from_dict(settings)
        self.policy.check_settings(checked)
        return checked

    def check_prompt(self, prompt) -> str:
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be text, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ConfigError("prompt is empty: type a question or pick an example")
        self.policy.check_prompt(prompt)
        return prompt

    def start(self, prompt: str, settings) -> Session:
        raise NotImplementedError

    def live_changes(self, session: Session, settings) -> dict | None:
        """Knobs to apply to the running session, or None when the settings need a new run."""
        return {} if session.settings == settings else None

    def apply_live(self, session: Session, changes: dict, settings) -> None:
        """Apply live knob changes to the running decoder from its next step."""
        session.decoder.update_shape(changes, settings=settings)
        session.settings = settings

    def advance(self, session: Session) -> None:
        raise NotImplementedError

    def finish_work(self, session: Session, view: dict):
        """Model work after the last step (e.g. the AR baseline), as a generator: each `next()` does one
        piece (one step), so it takes turns with other sessions like the run itself."""
        return iter(())

    def status(self, session: Session | None, note: str = "", k: int | None = None) -> str:
        """The status line for recorded step k (default: the latest), which is the step the views show."""
        raise NotImplementedError

    def outputs_empty(self, status: str) -> tuple:
        raise NotImplementedError

    def outputs_live(self, session: Session, status: str, view: dict) -> tuple:
        raise NotImplementedError

    def outputs_full(self, session: Session, status: str, k: int | None, view: dict) -> tuple:
        raise NotImplementedError

    def summary(self, session: Session) -> dict:
        raise NotImplementedError

    def control_updates(self, settings) -> list:
        """Updates of the tab's settings controls (`TabHandle.collect_inputs`, in order) that give these
        checked settings: how a lesson or a share link sets the controls to the run it opens."""
        raise NotImplementedError

    def replay(self, trace, tokenizer, prompt: str | None = None) -> Session:
        """A finished session made of a recorded trace (`replay.ReplayedDecoder`), its views built from the
        records with `tokenizer` (the file's own token text, or a stand-in), no model loaded. `prompt`: as typed,
        when the file has it (else the prompt ids decoded, chat template and all)."""
        raise NotImplementedError

    def export_tokenizer(self, session: Session):
        """The tokenizer whose text goes into an exported trace file, or None (a replayed session keeps the
        text it was opened with)."""
        return session.extra.get("tokenizer")


class TabController:
    def __init__(self, spec: TabSpec):
        self.spec = spec
        self.sharing = spec.sharing
        self._advance = self.sharing.on_gpu(spec.advance)
        # finishing work (the cost curve, the AR baseline) is model work too: a GPU on ZeroGPU as well
        self._finish_piece = self.sharing.on_gpu(_next_piece)
        self._n_outputs = len(spec.outputs_empty(""))
        self._running: dict = {}  # session key -> its Session while a request of it streams

    # session lifecycle ----------------------------------------------------------
    def _session_for(self, session: Session | None, prompt: str, settings) -> tuple:
        """Resume the session when nothing that shapes the run changed and it is not finished; apply
        live knob changes from its next step; otherwise start afresh."""
        if session is not None and not session.done and session.prompt == prompt:
            changes = self.spec.live_changes(session, settings)
            if changes == {}:
                return session, ""
            if changes:
                self.spec.apply_live(session, changes, settings)
                return session, ("changed " + ", ".join(f"{n}={v}" for n, v in sorted(changes.items()))
                                 + " from this step")
        return self.spec.start(prompt, settings), "new run"

    def _status_only(self, status: str) -> tuple:
        return (gr.skip(), status) + (gr.skip(),) * (self._n_outputs - 2)

    def _on_model(self, key: str, what: str, work, session: Session | None):
        """Run `work()` in this session's turn on the model (`Sharing.turns`). A generator: while the job
        waits in line it yields a status with its place. Returns (True, the result), or (False, None) when
        the session was paused or reset before its turn came. A client that leaves (the generator is
        closed) gives its place up."""
        turns, report_s = self.sharing.turns, self.sharing.limits.wait_report_s
        job = turns.submit(key, what, work)
        try:
            # a short first wait, so that a visible wait is reported at once, then one every wait_report_s
            timeout = min(0.25, report_s)
            while not turns.wait(job, timeout):
                timeout = report_s
                if session is not None and session.paused and turns.cancel(job):
                    return False, None
                if job.started:  # its own turn has come: a slow step is not a wait in line
                    continue
                ahead, busy = turns.ahead(job)
                yield self._status_only(
                    f"**In line for the model** (it is shared one step at a time): {ahead} ahead of you"
                    + (f"; now running: {busy}" if busy else "") + ".")
        except BaseException:
            turns.cancel(job)  # one that already started finishes on its own; nobody reads it
            raise
        return True, turns.outcome(job)

    def _step(self, session: Session) -> None:
        with session.lock:
            self._advance(session)

    # handlers ----------------------------------------------------------------------
    def drive(self, prompt, settings, view, session, max_steps, key: str | None = None):
        """Run (max_steps None) or step a session. Each step takes its own turn on the model."""
        spec = self.spec
        view = view or {}
        key = key or request_key(None)
        try:
            with user_errors(spec.smaller, spec.policy):
                checked = spec.parse(settings)
                spec.check_prompt(prompt)
                sessions = self.sharing.sessions
                # e.g. Step pressed while a Run streams: the Run stops after its current step and this request
                # carries on with its session (Gradio hands a request the state as it was when the Run began)
                previous = self._running.get(key)
                if previous is not None:
                    previous.paused = True
                sessions.enter(key, f"a {'run' if max_steps is None else 'step'} of {checked.method}",
                               wait_s=HANDOVER_S)
                try:
                    yield from self._drive(prompt, checked, view, previous or session, max_steps, key)
                finally:
                    self._running.pop(key, None)
                    sessions.leave(key)
        except gr.Error as err:
            # the status line says what failed instead of keeping "Loading…"; the message also pops up
            yield self._status_only(f"**Failed**: {err.message}")
            raise
        except Exception:
            yield self._status_only("**Failed**: the run stopped on an internal error (the server log has it).")
            raise

    def _drive(self, prompt, checked, view, session, max_steps, key):
        spec, sharing = self.spec, self.sharing
        started = time.monotonic()
        fresh = session is None or session.done or session.prompt != prompt or \
            spec.live_changes(session, checked) is None
        if fresh:
            # a new run clears what the last one left (its tree, cards, metrics) while the model loads; the
            # session stays in the state until the new one replaces it, so a run that fails to start loses nothing
            yield (gr.skip(), *spec.outputs_empty(LOADING)[1:])
            _, (session, note) = yield from self._on_model(
                key, f"preparing a run of {checked.method}", lambda: self._session_for(session, prompt, checked), None)
        else:
            session, note = self._session_for(session, prompt, checked)
        session.paused = False
        self._running[key] = session
        taken = 0
        limit_s = sharing.limits.request_s
        while not session.done and not session.paused and (max_steps is None or taken < max_steps):
            if limit_s is not None and time.monotonic() - started > limit_s:
                note = f"stopped after {limit_s:.0f} s, this server's limit per request: press Run to go on"
                break
            delay = sharing.sessions.step_delay(key)
            if delay > 0:
                yield self._status_only(f"**Slowed down**: this session is stepping faster than this server allows "
                                        f"({sharing.limits.steps_per_minute:.0f} steps a minute); next step in "
                                        f"{delay:.1f} s.")
                time.sleep(min(delay, 5.0))
                continue
            ran, _ = yield from self._on_model(key, f"a step of {session.settings.method}",
                                               lambda: self._step(session), session)
            if not ran:
                break
            taken += 1
            yield spec.outputs_live(session, spec.status(session, note), view)
        if not session.done and max_steps is not None and taken >= max_steps:
            session.paused = True  # stepped: it waits for the next Step or Run, and says so
        if session.done and not session.paused:
            work = spec.finish_work(session, view)
            more = True
            while more and not session.paused:
                ran, more = yield from self._on_model(key, "a step of the AR baseline (or the cost curve)",
                                                      lambda: self._finish_piece(work), session)
                more = ran and more
        yield spec.outputs_full(session, spec.status(session, note), None, view)

    def pause(self, session, key: str | None = None):
        session = self._running.get(key) or session  # the state a request gets may predate a streaming Run
        if session is None:
            return "Nothing is running."
        if session.done:  # a finished run has nothing to pause: say what it is, not "pause requested"
            return self.spec.status(session, "")
        session.paused = True
        return self.spec.status(session, "pause requested")

    def reset(self, session, key: str | None = None):
        for s in {id(x): x for x in (session, self._running.get(key)) if x is not None}.values():
            s.close()  # a Run streaming in this session stops at its next step (through the API too)
        return self.spec.outputs_empty("Reset. Press Run or Step to start.")

    def scrub(self, step, view, session):
        """Re-render any recorded step from the stored records, without the model. The step (as sent: the
        slider passes it through) must be a whole number, and a recorded one once there are records."""
        with user_errors(self.spec.smaller):
            k = recorded_index("step", step, 0 if session is None else session.n_steps)
        if k is None:
            return self.spec.outputs_empty("Nothing recorded yet.")[1:]
        return self.spec.outputs_full(session, self.spec.status(session, f"showing recorded step {k}", k), k,
                                      view or {})[1:]

    def export(self, session):
        if session is None or session.n_steps == 0:
            raise gr.Error("Nothing to export yet: run or step first.", print_exception=False)
        return write_trace(trace_file_dict(session.decoder.trace(), self.spec.export_tokenizer(session),
                                           session.prompt), self.spec.trace_name)

    def open_trace(self, text: str, name: str, view: dict | None) -> tuple:
        """A trace file's text replayed in this tab: every view and the scrubber, from its records alone.
        A file that is not a trace of this tab's kind gets a message saying what is wrong with it."""
        spec = self.spec
        limit = PUBLIC_MAX_CHARS if spec.policy.public else MAX_TRACE_CHARS
        with user_errors(spec.smaller, spec.policy):
            opened = read_trace_file(text, limit)
            trace, texts = opened.trace, opened.token_text
            if trace.kind != spec.trace_kind:
                other = "Diffusion" if trace.kind == "diffusion" else "Speculative"
                raise ConfigError(f"this is a {trace.kind} trace ({trace.method}): open it in the {other} tab")
            if not trace.steps:
                raise ConfigError("the trace holds no steps, so there is nothing to replay")
            # without the file's own token text, ids show as #id: no tokenizer is loaded for a file
            session = spec.replay(trace, texts or TokenText({}), opened.prompt)
        session.extra["opened"] = name
        words = "" if texts else " (the file has no token text, so tokens show as #id)"
        status = (f"**Replaying {name}**: {trace.method} on {trace.target_id}, {len(trace.steps)} steps, recorded on "
                  f"{trace.backend}; no model is loaded{words}. Drag the step slider to scrub.")
        return spec.outputs_full(session, status, 0, view or {})


_DONE = object()


def _next_piece(work) -> bool:
    """Run one piece of a finishing-work generator; False once it has none left."""
    return next(work, _DONE) is not _DONE


def run_buttons(prefix: str):
    with gr.Row():
        run = gr.Button("Run", variant="primary", elem_id=f"{prefix}-run")
        step = gr.Button("Step", elem_id=f"{prefix}-step")
        pause = gr.Button("Pause", elem_id=f"{prefix}-pause")
        reset = gr.Button("Reset", elem_id=f"{prefix}-reset")
    return run, step, pause, reset


def step_scrubber(prefix: str):
    return StepSlider(0, 1, value=0, step=1, label="Recorded step", interactive=False, elem_id=f"{prefix}-slider",
                      info="re-renders any recorded step from the stored trace, without calling the model")


def scrubber_update(n_steps: int, k: int):
    return gr.update(minimum=0, maximum=max(n_steps - 1, 1), value=k, interactive=n_steps > 1)


def export_panel(prefix: str):
    """The export accordion: the settings of the last Run / Step (what the API's `settings` takes), a button
    that writes the whole trace (every step record) as JSON with its file, and the run summary."""
    with gr.Accordion("Export: settings, run summary and trace (JSON)", open=False):
        settings = gr.JSON(label="Settings of the last Run / Step (the API's `settings`)", elem_id=f"{prefix}-settings")
        with gr.Row():
            button = gr.Button("Export the trace (JSON)", elem_id=f"{prefix}-export")
            file = gr.File(label="Trace", elem_id=f"{prefix}-trace-file", interactive=False)
        summary = gr.JSON(label="Run summary", elem_id=f"{prefix}-summary")
    return settings, button, file, summary


EXAMPLE_TRACES = Path(__file__).resolve().parents[2] / "assets" / "traces"


def example_traces(kind: str) -> dict:
    """{label: file name} of the shipped example traces of one kind (`assets/traces/index.json`)."""
    try:
        index = json.loads((EXAMPLE_TRACES / "index.json").read_text())
    except (OSError, ValueError):
        return {}
    return {e["label"]: e["file"] for e in index if e.get("kind") == kind}


def trace_panel(prefix: str, kind: str):
    """The accordion that opens a recorded run: a shipped example, or a file (the app's export, or the CLI's
    --trace output for one prompt)."""
    examples = example_traces(kind)
    with gr.Accordion("Open a recorded run: an example, or a trace file (no model needed)", open=False,
                      elem_id=f"{prefix}-open-accordion"):
        example = gr.Dropdown(list(examples), value=next(iter(examples), None), label="Example traces",
                              elem_id=f"{prefix}-example-trace",
                              info="recorded on the embedded model; every view and the scrubber work")
        open_example = gr.Button("Open the example", elem_id=f"{prefix}-open-example", size="sm")
        upload = gr.File(label="Or open a trace file (.json: the app's export, or the CLI's --trace for one prompt)",
                         file_types=[".json"], type="filepath", elem_id=f"{prefix}-trace-upload")
    return example, open_example, upload


def wire_trace_panel(controller: "TabController", panel, view_state, outputs) -> None:
    """Open the panel's picks in the tab: `open_example` takes a shipped example's label (never a path: the
    server's files are not a client's to name), `open_trace` an uploaded file. Call after `wire`."""
    example, open_button, upload = panel
    api = controller.spec.api_prefix
    kind = controller.spec.trace_kind

    def open_example(label, view=None):
        examples = example_traces(kind)
        if label not in examples:
            raise gr.Error(f"No example trace is called {str(label)[:80]!r}; pick one from the list.",
                           print_exception=False)
        text = (EXAMPLE_TRACES / examples[label]).read_text()
        return controller.open_trace(text, label, view)

    def open_file(path, view=None):
        if not path:
            return controller._status_only("No file chosen.")
        limit = PUBLIC_MAX_CHARS if controller.spec.policy.public else MAX_TRACE_CHARS
        try:
            if os.path.getsize(path) > limit * 4:
                raise gr.Error(f"This trace cannot be replayed: the file is over this server's limit of "
                               f"{limit:,} characters.", print_exception=False)
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise gr.Error("This trace cannot be replayed: the file is not text (a trace is a JSON file).",
                           print_exception=False) from None
        except OSError:
            raise gr.Error("The uploaded file could not be read; upload it again.", print_exception=False) from None
        return controller.open_trace(text, Path(path).name, view)

    # the controls then show the opened run's prompt and settings: Run reruns it live, a share link shares it
    handle = controller.handle

    def show_settings(session):
        if session is None or "opened" not in session.extra:
            return [gr.skip()] * (2 + len(handle.collect_inputs))
        return [session.prompt, session.settings.to_dict(), *controller.spec.control_updates(session.settings)]

    settings_outputs = [handle.prompt, handle.settings_box, *handle.collect_inputs]
    open_button.click(open_example, [example, view_state], outputs, api_name=f"{api}open_example").success(
        show_settings, outputs[0], settings_outputs, queue=False, api_name=False)
    upload.upload(open_file, [upload, view_state], outputs, api_name=f"{api}open_trace").success(
        show_settings, outputs[0], settings_outputs, queue=False, api_name=False)


def write_trace(trace_dict: dict, name: str) -> str:
    """Save a trace file (`replay.trace_file_dict`) for download, in a folder of its own (never shared between
    sessions); the file replays in any view without the model."""
    try:
        folder = Path(tempfile.mkdtemp(prefix="specviz-trace-"))
        path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(trace_dict))
    except OSError as err:
        raise gr.Error(f"Could not write the trace file ({err.strerror or 'write failed'}): the server's "
                       "temporary folder is not writable.", print_exception=False) from None
    return str(path)


@dataclass
class TabHandle:
    """What other parts of the app (the Learn tab, share links) need of a built tab to open a run in it."""

    controller: TabController
    collect_inputs: list  # the settings controls, in the order of the tab's `control_values`
    prompt: object
    settings_box: object
    view_state: object
    state: object
    outputs: list
    slider: object
    run_event: object = None  # the Run and Step events, for what a tab chains after a run's last output
    step_event: object = None


def wire(controller: TabController, *, collect, collect_inputs, prompt, settings_box, view_state, state,
         outputs, buttons, slider, export_button, export_file, view_controls=()):
    """Connect one tab's buttons to the controller. The settings controls are gathered into one settings
    dict in the browser's session first (`collect`), so the API endpoints take `prompt` and `settings`."""
    run_btn, step_btn, pause_btn, reset_btn = buttons
    api = controller.spec.api_prefix

    def run(prompt, settings=None, view=None, session=None, request: gr.Request = None):
        yield from controller.drive(prompt, settings, view, session, None, request_key(request))

    def step(prompt, settings=None, view=None, session=None, request: gr.Request = None):
        yield from controller.drive(prompt, settings, view, session, 1, request_key(request))

    # no concurrency limit here: every Run / Step streams at once, and the model itself is shared in
    # turns, one step at a time (`Sharing.turns`), so no session waits for another's whole run
    run_event = run_btn.click(collect, collect_inputs, settings_box, queue=False, api_name=False).then(
        run, [prompt, settings_box, view_state, state], outputs, api_name=f"{api}run", concurrency_limit=None)
    step_event = step_btn.click(collect, collect_inputs, settings_box, queue=False, api_name=False).then(
        step, [prompt, settings_box, view_state, state], outputs, api_name=f"{api}step", concurrency_limit=None)
    def pause(session=None, request: gr.Request = None):
        return controller.pause(session, request_key(request))

    def reset(session=None, request: gr.Request = None):
        return controller.reset(session, request_key(request))

    pause_btn.click(pause, state, outputs[1], queue=False, api_name=f"{api}pause")
    reset_btn.click(reset, state, outputs, cancels=[run_event], api_name=f"{api}reset")
    export_button.click(controller.export, state, export_file, api_name=f"{api}export")

    def scrub(step, view=None, session=None):
        return controller.scrub(step, view, session)

    slider.release(scrub, [slider, view_state, state], outputs[1:], api_name=f"{api}scrub",
                   trigger_mode="always_last")
    slider.input(scrub, [slider, view_state, state], outputs[1:], api_name=False, trigger_mode="always_last")

    # view options (not run settings): stored in the session's view state, then the step re-renders
    def set_view(view, *values):
        return {**(view or {}), **{name: v for (name, _), v in zip(view_controls, values)}}

    for _, control in view_controls:
        control.change(set_view, [view_state, *(c for _, c in view_controls)], view_state, queue=False,
                       api_name=False).then(scrub, [slider, view_state, state], outputs[1:], api_name=False,
                                            trigger_mode="always_last")
    controller.handle = TabHandle(controller, list(collect_inputs), prompt, settings_box, view_state, state,
                                  list(outputs), slider, run_event, step_event)
    return run_event
