"""API inputs the handlers check themselves, so every bad one gets a message that names its field.

Gradio's components coerce or check a value before a handler sees it, in their own words: a Textbox turns
42 or {"a": 1} into text, a Slider says "Value 99 is greater than maximum value 9" (which field?) or fails
without a message on "abc" or NaN, a Dropdown lists its choices without naming itself, and an endpoint
called with too few inputs fails with no message at all. So:

- `PromptBox` and `StepSlider` hand the raw value to the handler, which refuses bad input by name;
- `named_choice` checks an option by the endpoint's parameter name (the comparison's schedules, signal);
- `recorded_index` reads a step index (finite, whole, recorded);
- `AppBlocks` answers a call with too few inputs with the endpoint's parameter names, an input no component
  could read with that input's name, and anything else that fails (a bug; the page's own plumbing events,
  which raw HTTP can reach too) with a short message naming the endpoint instead of Gradio's empty error.
"""
from __future__ import annotations

import inspect
import logging
import math
import re

import gradio as gr
from gradio.exceptions import ComponentProcessingError

from ..config import ConfigError, shown


class PromptBox(gr.Textbox):
    """A Textbox whose value reaches the handler as sent: a prompt that is not text is refused by name
    (`TabSpec.check_prompt`) instead of becoming the text "42"."""

    is_template = True  # the browser draws it as a plain Textbox

    def preprocess(self, payload):
        return payload


class StepSlider(gr.Slider):
    """The step scrubber: its value reaches the handler as sent, which checks it against the recorded
    steps (`recorded_index`) and names the field."""

    is_template = True  # the browser draws it as a plain Slider

    def preprocess(self, payload):
        return payload


def whole_number(name: str, value) -> int:
    """A finite whole number from an API value (or such a number as text), or a ConfigError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be a whole number, got {shown(value)}")
    try:
        v = float(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{name} must be a whole number, got {shown(value)}") from None
    if not math.isfinite(v) or v != int(v):
        raise ConfigError(f"{name} must be a finite whole number, got {shown(value)}")
    return int(v)


def recorded_index(name: str, value, n: int) -> int | None:
    """A recorded step's index from an API value: a finite whole number (or such a number as text) in
    [0, n). None when nothing is recorded yet (n == 0) and the value is a valid number."""
    k = whole_number(name, value)
    if n == 0:
        return None
    if not 0 <= k < n:
        raise ConfigError(f"{name} {shown(k, 24)} is not recorded: this run has steps 0 to {n - 1}")
    return k


def named_choice(name: str, value, options) -> str:
    """`value` if it is one of `options` (the names an API parameter takes), else a message naming it."""
    options = list(options)
    if isinstance(value, str) and value.strip() in options:
        return value.strip()
    raise ConfigError(f"{name}={shown(value)} is not an option: use one of {', '.join(options)}")


LOG = logging.getLogger(__name__)


def _parameters(block_fn) -> list:
    try:
        return [p.name for p in inspect.signature(block_fn.fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.annotation not in (gr.Request, "gr.Request")]
    except (TypeError, ValueError):  # no function (a browser-only event), or one without a signature
        return []


def api_parameter_names(block_fn) -> list:
    """The names a client sends an endpoint's inputs under (the handler's parameters; session state,
    which a client never sends, left out)."""
    params = _parameters(block_fn)
    return [params[i] if i < len(params) else f"input {i + 1}"
            for i, block in enumerate(block_fn.inputs) if not getattr(block, "skip_api", False)]


def _endpoint(block_fn) -> str:
    name = getattr(block_fn, "api_name", None)
    return f"/{name}" if isinstance(name, str) and name else "this endpoint"


class AppBlocks(gr.Blocks):
    """The app's Blocks: what Gradio would answer with an empty error gets a message naming the endpoint
    and its inputs: a call with too few of them (the raw HTTP API sends exactly what it is given), a value
    an input's control cannot read, and any other failure (logged with its traceback, never sent)."""

    def validate_inputs(self, block_fn, inputs):
        if len(inputs) < len(block_fn.inputs):
            names = api_parameter_names(block_fn)
            endpoint = _endpoint(block_fn)
            raise gr.Error(f"{endpoint} takes {len(names)} input(s), in order: {', '.join(names) or 'none'}; got "
                           f"{len(inputs)}. Send exactly these (gradio_client fills in the defaults).",
                           print_exception=False)
        super().validate_inputs(block_fn, inputs)

    async def process_api(self, block_fn, *args, **kwargs):
        try:
            return await super().process_api(block_fn, *args, **kwargs)
        except gr.Error:
            raise
        except ComponentProcessingError as err:
            fn = self.fns[block_fn] if isinstance(block_fn, int) else block_fn
            found = re.search(r"input component at index (\d+)", str(err))
            i = int(found.group(1)) if found else -1
            params = _parameters(fn)
            name = params[i] if 0 <= i < len(params) else "an input"
            raise gr.Error(f"{_endpoint(fn)}: {name} is not a value its control can take (wrong type or out of "
                           f"range); its inputs are {', '.join(api_parameter_names(fn)) or 'none'}",
                           print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - a bug, or a browser-only event called by hand: say so briefly
            fn = self.fns[block_fn] if isinstance(block_fn, int) else block_fn
            LOG.exception("%s failed", _endpoint(fn))
            raise gr.Error(f"{_endpoint(fn)} failed on the server ({type(err).__name__}); the server log has the "
                           f"details. Check its inputs: {', '.join(api_parameter_names(fn)) or 'none'}.",
                           print_exception=False) from None
