"""Replaying a trace without its model: the `/replay` API endpoint, and the pieces the tabs use to open a
trace file in every view with the scrubber.

It takes the trace's JSON *text* (the file the app exports, or one element of the CLI's `--trace` list; a whole
`--trace` list gives one summary per trace), never a path: an endpoint that opened a path a client named could be
pointed at the server's own files. Everything in the text is checked by `Trace.from_json` (types, lengths,
ranges, the record contract), so a malformed or hostile file gets a message naming the problem.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr
import numpy as np

from ..textio import TokenText, read_prompt_text, read_token_text
from ..trace import MAX_TRACE_CHARS, Trace, TraceError

PUBLIC_MAX_CHARS = 8_000_000  # a public server reads traces up to this size
@dataclass
class ReplayedDecoder:
    """A finished decoder made of a trace: what a tab's views read from a live decoder (records, ids, timing,
    finish), and nothing that runs a model."""

    recorded: Trace

    @property
    def records(self) -> list:
        return self.recorded.steps

    done = True

    def step(self):
        return None

    def trace(self) -> Trace:
        return self.recorded

    @property
    def prompt_ids(self) -> np.ndarray:
        return self.recorded.prompt_ids

    @property
    def output_ids(self) -> np.ndarray:
        return self.recorded.output_ids

    @property
    def finish_reason(self) -> str:
        return self.recorded.finish_reason

    @property
    def wall_s(self) -> float:
        return self.recorded.wall_s

    @property
    def backend(self) -> str:
        return self.recorded.backend


@dataclass
class TraceFile:
    """A trace file read and checked: the trace, its tokens' text (None: the file has none) and the prompt as
    typed (None: the file has only its ids)."""

    trace: Trace
    token_text: TokenText | None
    prompt: str | None


def read_trace_file(text: str, max_chars: int = MAX_TRACE_CHARS) -> TraceFile:
    """A trace file's text read: the app's export, or a CLI `--trace` list holding exactly one trace. Raises
    TraceError with a message naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise TraceError("the file is empty: pick a trace exported by the app or written by the CLI's --trace")
    if len(text) > max_chars:
        raise TraceError(f"the file has {len(text):,} characters, over this server's limit of {max_chars:,}")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError, UnicodeDecodeError):
        raise TraceError("the file is not valid JSON: pick a trace exported by the app or the CLI") from None
    if isinstance(data, list):
        if len(data) != 1:
            raise TraceError(f"the file holds a list of {len(data)} traces (the CLI writes one per prompt): open "
                             "a file with one, e.g. a run exported from the app or the CLI's run with one prompt")
        data = data[0]
    if not isinstance(data, dict):
        raise TraceError("a trace file holds one JSON object")
    return TraceFile(Trace.from_dict(data), read_token_text(data), read_prompt_text(data))


def summary_of(trace: Trace) -> dict:
    """What a client needs to know of a trace without the views."""
    return {"method": trace.method, "kind": trace.kind, "settings": trace.settings, "target_id": trace.target_id,
            "draft_id": trace.draft_id, "steps": len(trace.steps), "prompt_ids": trace.prompt_ids.tolist(),
            "output_ids": trace.output_ids.tolist(), "finish_reason": trace.finish_reason,
            "backend": trace.backend, "lossless": trace.lossless, "summary": trace.summary()}


def replay_summaries(text, max_chars: int = MAX_TRACE_CHARS):
    """The summary of one trace (a JSON object), or a list of summaries (a JSON list of traces)."""
    if not isinstance(text, str) or not text.strip():
        raise TraceError("trace: send the trace file's JSON text (the app's export, or the CLI's --trace output)")
    if len(text) > max_chars:
        raise TraceError(f"trace: {len(text):,} characters is over this server's limit of {max_chars:,}")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise TraceError("trace: the file is not valid JSON") from None
        if not items or not isinstance(items, list):
            raise TraceError("trace: the list holds no traces")
        out = []
        for i, item in enumerate(items[:64]):
            try:
                out.append(summary_of(Trace.from_dict(item)))
            except TraceError as err:
                raise TraceError(f"trace {i} of the list: {err}") from None
        return out
    return summary_of(Trace.from_json(text))


def add_replay_endpoint(public: bool) -> None:
    """Register `/replay` on the Blocks being built."""
    limit = PUBLIC_MAX_CHARS if public else MAX_TRACE_CHARS

    def replay(trace: str) -> dict | list:
        """Check a trace (its JSON text) and return its summary; no model is loaded."""
        try:
            return replay_summaries(trace, limit)
        except TraceError as err:
            raise gr.Error(str(err), print_exception=False) from None

    gr.api(replay, api_name="replay", concurrency_limit=4)
