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


@contextlib.contextmanager
def user_errors(smaller: str):
    """Errors the user can fix become a clear message in the app; the session and the server carry on.

    Only user-fixable input becomes a message (bad settings, a model that cannot load, a prompt that
    does not fit, memory); anything else stays an internal error. `smaller` says what to shrink when
    memory runs out, e.g. "pick a smaller model or fewer new tokens"."""
    try:
        yield
    except (ConfigError, ModelLoadError) as err:
        raise gr.Error(str(err), print_exception=False) from None
    except torch.cuda.OutOfMemoryError:
        raise gr.Error(f"Out of GPU memory: {smaller}.", print_exception=False) from None
    except MemoryError:
        raise gr.Error(f"Out of memory: {smaller}.", print_exception=False) from None


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

    def __init__(self, store):
        self.store = store

    def parse(self, settings: dict | None):
        """The settings dict an endpoint received, checked into the tab's settings object."""
        return self.settings_type.from_dict(settings)

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

    def finish(self, session: Session) -> str:
        """Work after the last step (e.g. the AR comparison); returns a status note."""
        return ""

    def status(self, session: Session | None, note: str = "") -> str:
        raise NotImplementedError

    def outputs_empty(self, status: str) -> tuple:
        raise NotImplementedError

    def outputs_live(self, session: Session, status: str, view: dict) -> tuple:
        raise NotImplementedError

    def outputs_full(self, session: Session, status: str, k: int | None, view: dict) -> tuple:
        raise NotImplementedError

    def summary(self, session: Session) -> dict:
        raise NotImplementedError


class TabController:
    def __init__(self, spec: TabSpec):
        self.spec = spec

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

    # handlers ----------------------------------------------------------------------
    def drive(self, prompt, settings, view, session, max_steps):
        spec = self.spec
        view = view or {}
        with user_errors(spec.smaller):
            checked = spec.parse(settings)
            if not isinstance(prompt, str):
                raise ConfigError(f"the prompt must be text, got {type(prompt).__name__}")
            if not prompt.strip():
                raise ConfigError("the prompt is empty: type a question or pick an example")
            fresh = session is None or session.done or session.prompt != prompt or \
                spec.live_changes(session, checked) is None
            if fresh:
                yield spec.outputs_empty("Loading the model and preparing the run…") if session is None else \
                    spec.outputs_full(session, "Loading the model and preparing the run…", None, view)
            session, note = self._session_for(session, prompt, checked)
            session.paused = False
            taken = 0
            while not session.done and not session.paused and (max_steps is None or taken < max_steps):
                with session.lock:
                    spec.advance(session)
                taken += 1
                yield spec.outputs_live(session, spec.status(session, note), view)
            if session.done:
                with session.lock:
                    note = spec.finish(session) or ""
            yield spec.outputs_full(session, spec.status(session, note), None, view)

    def pause(self, session):
        if session is None:
            return "Nothing is running."
        session.paused = True
        return self.spec.status(session, "pause requested")

    def reset(self, session):
        if session is not None:
            session.close()  # a Run streaming in this session stops at its next step (through the API too)
        return self.spec.outputs_empty("Reset. Press Run or Step to start.")

    def scrub(self, step, view, session):
        """Re-render any recorded step from the stored records, without the model."""
        if session is None or session.n_steps == 0:
            return self.spec.outputs_empty("Nothing recorded yet.")[1:]
        with user_errors(self.spec.smaller):
            k = _index("step", step, session.n_steps)
        return self.spec.outputs_full(session, self.spec.status(session, f"showing recorded step {k}"), k,
                                      view or {})[1:]

    def export(self, session):
        if session is None or session.n_steps == 0:
            raise gr.Error("Nothing to export yet: run or step first.", print_exception=False)
        return write_trace(session.decoder.trace(), self.spec.trace_name)


def _index(name: str, value, n: int) -> int:
    try:
        k = int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if not 0 <= k < n:
        raise ConfigError(f"{name} {k} is not recorded: this run has steps 0 to {n - 1}")
    return k


def run_buttons(prefix: str):
    with gr.Row():
        run = gr.Button("Run", variant="primary", elem_id=f"{prefix}-run")
        step = gr.Button("Step", elem_id=f"{prefix}-step")
        pause = gr.Button("Pause", elem_id=f"{prefix}-pause")
        reset = gr.Button("Reset", elem_id=f"{prefix}-reset")
    return run, step, pause, reset


def step_scrubber(prefix: str):
    return gr.Slider(0, 1, value=0, step=1, label="Recorded step", interactive=False, elem_id=f"{prefix}-slider",
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


def write_trace(trace, name: str) -> str:
    """Save a Trace for download, in a folder of its own (never shared between sessions); the file replays
    in any view without the model."""
    try:
        folder = Path(tempfile.mkdtemp(prefix="specviz-trace-"))
        path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(trace.to_json())
    except OSError as err:
        raise gr.Error(f"Could not write the trace file ({err.strerror or 'write failed'}): the server's "
                       "temporary folder is not writable.", print_exception=False) from None
    return str(path)


def wire(controller: TabController, *, collect, collect_inputs, prompt, settings_box, view_state, state,
         outputs, buttons, slider, export_button, export_file, view_controls=()):
    """Connect one tab's buttons to the controller. The settings controls are gathered into one settings
    dict in the browser's session first (`collect`), so the API endpoints take `prompt` and `settings`."""
    run_btn, step_btn, pause_btn, reset_btn = buttons
    api = controller.spec.api_prefix

    def run(prompt, settings=None, view=None, session=None):
        yield from controller.drive(prompt, settings, view, session, None)

    def step(prompt, settings=None, view=None, session=None):
        yield from controller.drive(prompt, settings, view, session, 1)

    run_event = run_btn.click(collect, collect_inputs, settings_box, queue=False, api_name=False).then(
        run, [prompt, settings_box, view_state, state], outputs, api_name=f"{api}run",
        concurrency_id="model", concurrency_limit=1)
    step_btn.click(collect, collect_inputs, settings_box, queue=False, api_name=False).then(
        step, [prompt, settings_box, view_state, state], outputs, api_name=f"{api}step",
        concurrency_id="model", concurrency_limit=1)
    pause_btn.click(controller.pause, state, outputs[1], queue=False, api_name=f"{api}pause")
    reset_btn.click(controller.reset, state, outputs, cancels=[run_event], api_name=f"{api}reset")
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
    return run_event
