"""Controls both tabs share: run / step / pause / reset, the recorded-step scrubber, and trace export."""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import gradio as gr
import torch

from ..config import ConfigError
from ..models import ModelLoadError


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
    """A button that writes the whole trace (every step record) as JSON, and the file to download."""
    with gr.Row():
        button = gr.Button("Export the trace (JSON)", elem_id=f"{prefix}-export")
        file = gr.File(label="Trace", elem_id=f"{prefix}-trace-file", interactive=False)
    return button, file


def write_trace(trace, name: str) -> str:
    """Save a Trace for download; the file replays in any view without the model."""
    folder = Path(tempfile.gettempdir()) / "specviz-traces"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{id(trace) % 10_000:04d}.json"
    path.write_text(trace.to_json())
    return str(path)


@contextlib.contextmanager
def user_errors(smaller: str):
    """Errors the user can fix become a clear message in the app; the session and the server carry on.

    `smaller` says what to shrink when memory runs out, e.g. "pick a smaller model or fewer new tokens"."""
    try:
        yield
    except (ConfigError, ModelLoadError, ValueError) as err:
        raise gr.Error(str(err), print_exception=False) from None
    except torch.cuda.OutOfMemoryError:
        raise gr.Error(f"Out of GPU memory: {smaller}.", print_exception=False) from None
    except MemoryError:
        raise gr.Error(f"Out of memory: {smaller}.", print_exception=False) from None
