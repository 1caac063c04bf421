"""Where the app listens, and whether it runs on a Hugging Face Space.

A Space runs `python app.py` with SPACE_ID set and expects the server on 0.0.0.0:7860 (it also sets
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT); a local start listens on 127.0.0.1 only. SPECVIZ_HOST / SPECVIZ_PORT
override both.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_PORT = 7860


def on_space(environ: Mapping[str, str] | None = None) -> bool:
    """Whether we run on a Hugging Face Space (which sets SPACE_ID, e.g. "user/specviz")."""
    environ = os.environ if environ is None else environ
    return bool(environ.get("SPACE_ID", "").strip())


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def listen_address(environ: Mapping[str, str]) -> tuple[str, int]:
    """(host, port) for the server: SPECVIZ_HOST, else GRADIO_SERVER_NAME, else 0.0.0.0 on a Space and 127.0.0.1
    elsewhere; SPECVIZ_PORT, else GRADIO_SERVER_PORT, else 7860. Unset and empty variables count as absent.
    A port that is not a number in 1-65535 is a ValueError naming its variable."""
    host = _first(environ, "SPECVIZ_HOST", "GRADIO_SERVER_NAME")
    host = host[1] if host else ("0.0.0.0" if on_space(environ) else "127.0.0.1")
    port = _first(environ, "SPECVIZ_PORT", "GRADIO_SERVER_PORT")
    if port is None:
        return host, DEFAULT_PORT
    name, text = port
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise ValueError(f"{name}={text!r} is not a port number (1-65535)")
    return host, number
