"""Share links: a link that reopens a tab on a run's prompt and settings at the step shown, and its parsing.

The link carries the settings, not the trace: opening it reruns the run on the server that serves the link (greedy
and seeded runs give the same steps), so a link never needs the server to keep anything, and a link from a
stranger is only a run request like any other, checked like any other (`TabSpec.parse`, the server's policy).
"""
from __future__ import annotations

import json

import gradio as gr

from ..config import ConfigError
from .controller import TabHandle

TAB_IDS = {"learn": "learn", "speculative": "speculative", "diffusion": "diffusion"}
MAX_SHARED_PROMPT = 4000  # characters of a prompt carried in a share link
MAX_SHARED_STEP = 4096

SHARE_JS = """(settings, prompt, step) => {
  const q = new URLSearchParams({tab: '%s', prompt: prompt || '', settings: JSON.stringify(settings || {}),
                                 step: String(step ?? 0)});
  return window.location.origin + window.location.pathname + '?' + q.toString();
}"""


def share_link_box(prefix: str):
    """A button that writes a link restoring this tab's run (prompt, settings, shown step), and the box for it."""
    with gr.Row():
        button = gr.Button("Share link to this run and step", elem_id=f"{prefix}-share", size="sm", scale=1)
        box = gr.Textbox(label="Share link", elem_id=f"{prefix}-share-link", buttons=["copy"], scale=3,
                         info="opens the app on this prompt and settings and replays the run to the step shown")
    return button, box


def wire_share_link(handle: TabHandle, tab: str, button, box) -> None:
    button.click(None, [handle.settings_box, handle.prompt, handle.slider], box, js=SHARE_JS % tab, api_name=False)


def parse_shared_run(params: dict, handles: dict) -> tuple | None:
    """(tab, prompt, settings dict, steps) from a share link's query, or None when it names no run. Bad values
    raise ConfigError (the page then opens as usual and says why)."""
    tab = params.get("tab")
    if tab not in handles or "settings" not in params:
        return None
    prompt = params.get("prompt", "")
    if len(prompt) > MAX_SHARED_PROMPT:
        raise ConfigError(f"the shared prompt is over {MAX_SHARED_PROMPT} characters")
    try:
        settings = json.loads(params["settings"])
    except (ValueError, RecursionError):
        raise ConfigError("the link's settings are not valid JSON") from None
    if not isinstance(settings, dict):
        raise ConfigError("the link's settings must be a JSON object")
    try:
        step = int(params.get("step", 0))
    except ValueError:
        raise ConfigError("the link's step must be a whole number") from None
    if not 0 <= step < MAX_SHARED_STEP:
        raise ConfigError("the link's step is out of range")
    return tab, prompt, settings, step + 1


