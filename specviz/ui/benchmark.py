"""The Benchmark panel: the Spec-Bench harness of `python -m specviz bench`, run from the app.

One harness, two front ends: the panel advances `runs.benchmark.bench_pieces` (the CLI drains the same
generator) one decode step per turn on the shared model (`Sharing.turns`), so a benchmark never holds the
model while other sessions wait. It shows a line per question as it goes and stops between questions when
cancelled; the results (τ, tok/s, speedup against AR measured in the same run, greedy = AR, by category,
acceptance per draft position, accepted lengths per step) render through `viz.bench` and download as CSV
and JSON. The `/benchmark` endpoint takes `methods`, `categories`, `per_category` and `max_new_tokens`;
its last output is the results JSON.
"""
from __future__ import annotations

import json
import math
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr

from ..config import ConfigError
from ..decoding.registry import METHODS
from ..runs import prepare_run
from ..runs.benchmark import DEV_QUESTIONS, bench_pieces, category_sizes, entry_settings, load_questions, method_entries
from ..viz.bench import (TABLE_HEADERS, accepted_length_figure, acceptance_figure, category_figure, report_csv,
                         table_rows)
from .controller import Sharing, request_key, user_errors

# what one benchmark may ask for: at most this many questions per category on any server (the largest
# dev category has 40), and on a public server the caps of `policy.PUBLIC_CAPS` ("bench_*")
DEFAULT_METHODS = ["prompt_lookup"]
DEFAULT_CATEGORIES = ["writing", "math"]
IDLE = "Pick methods and categories, then press **Run benchmark**. AR runs on every question as the baseline."
_DONE = object()


def _int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be a whole number, got {str(value)[:40]!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value[:40]!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{name} must be a whole number, got {str(value)[:40]!r}")
    return int(number)


def _as_list(value, name: str) -> list:
    """A list input as sent: a list, a comma-separated string, or nothing (empty)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ConfigError(f"{name} must be a list, got {type(value).__name__}")


def parse_methods(methods, overrides: str = "") -> list:
    """The methods box (names) and the overrides box (`eagle:budget=16, prompt_lookup:ngram=2` or a JSON
    list of settings dicts) as one list for `/benchmark`; an override replaces the plain entry of its method."""
    items = _as_list(methods, "methods")
    if overrides is not None and not isinstance(overrides, str):
        raise ConfigError("knob overrides must be text: method:knob=value entries or a JSON list of settings dicts")
    text = (overrides or "").strip()
    if text:
        if text.startswith("[") or text.startswith("{"):
            try:
                extra = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigError(f"knob overrides: not valid JSON ({err.msg}); write a list of settings dicts "
                                  'like [{"method": "eagle", "budget": 16}] or method:knob=value entries') from None
            extra = extra if isinstance(extra, list) else [extra]
        else:
            extra = [e.strip() for e in text.split(",") if e.strip()]
        named = {str(e.get("method")) if isinstance(e, dict) else str(e).split(":")[0].strip() for e in extra}
        items = [m for m in items if not (isinstance(m, str) and m in named)] + extra
    method_entries(items)  # the same checks as /benchmark's, so a bad entry is named before anything runs
    return items


class BenchmarkPanel:
    """`BenchmarkPanel(store, sharing).build()` builds the panel inside the current Blocks context."""

    def __init__(self, store, sharing: Sharing | None = None, questions_path: str | Path = DEV_QUESTIONS):
        self.store = store
        self.sharing = sharing or Sharing()
        self.questions_path = Path(questions_path)
        self.sizes = category_sizes(self.questions_path)
        self._cancel: dict = {}  # session key -> threading.Event of its benchmark in flight
        self._lock = threading.Lock()

    # checks -----------------------------------------------------------------------------------------
    def check(self, methods, categories, per_category, max_new_tokens) -> tuple:
        """The request as (entries, questions, settings by label), or a ConfigError naming what to change."""
        policy = self.sharing.policy
        caps = policy.caps
        if methods is None:
            raise ConfigError("methods: give a list of method names or settings dicts ([] for AR alone, which "
                              "runs as the baseline anyway)")
        entries = method_entries(_as_list(methods, "methods"))
        categories = _as_list(categories, "categories")
        unknown = [c for c in categories if not isinstance(c, str) or c not in self.sizes]
        if unknown:
            raise ConfigError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                              f"{', '.join(repr(str(c)[:40]) for c in unknown[:3])}; choose from {', '.join(self.sizes)}")
        categories = list(dict.fromkeys(categories)) or list(self.sizes)
        per = _int(per_category, "per_category")
        most = max(self.sizes[c] for c in categories)
        if per < 1 or per > most:
            raise ConfigError(f"per_category={per} is out of range: the chosen categories have 1 to {most} "
                              "questions each")
        n_new = _int(max_new_tokens, "max_new_tokens")
        if policy.public:
            n_questions = sum(min(per, self.sizes[c]) for c in categories)
            if n_questions > caps["bench_questions"]:
                raise ConfigError(f"{n_questions} questions is over this public server's cap of "
                                  f"{caps['bench_questions']} per benchmark; pick fewer categories or questions")
            if len(entries) > caps["bench_methods"]:
                raise ConfigError(f"{len(entries)} methods (AR included) is over this public server's cap of "
                                  f"{caps['bench_methods']}; pick fewer")
            if n_new > caps["bench_new_tokens"]:
                raise ConfigError(f"max_new_tokens={n_new} is over this public server's cap of "
                                  f"{caps['bench_new_tokens']} for a benchmark; use {caps['bench_new_tokens']} or less")
        settings = {label: entry_settings(name, knobs, max_new_tokens=n_new) for label, name, knobs in entries}
        for s in settings.values():
            policy.check_settings(s)
        targets = {s.target for s in settings.values()}
        if len(targets) > 1:
            raise ConfigError("every method of one benchmark decodes with the same target model; got "
                              f"{', '.join(sorted(repr(t or 'embedded') for t in targets))}")
        questions = load_questions(self.questions_path, per_category=per, categories=categories)
        return entries, questions, settings

    # the run ----------------------------------------------------------------------------------------
    def benchmark(self, methods=None, categories=None, per_category=1, max_new_tokens=32,
                  request: gr.Request = None):
        """Stream the benchmark: a progress line per question, then the results (last output: its JSON)."""
        key = request_key(request)
        own = f"{key}:benchmark"
        sessions, policy = self.sharing.sessions, self.sharing.policy
        stop = threading.Event()
        try:
            with user_errors("pick fewer questions or fewer new tokens", policy):
                entries, questions, settings = self.check(methods, categories, per_category, max_new_tokens)
                sessions.enter(own, "a benchmark")
        except gr.Error as err:
            yield self._progress_only(f"**Refused**: {err.message}")
            raise
        with self._lock:
            self._cancel[key] = stop
        try:
            with user_errors("pick fewer questions or fewer new tokens", policy):
                yield from self._run(key, entries, questions, settings, stop)
        except gr.Error as err:
            yield self._progress_only(f"**Failed**: {err.message}")
            raise
        finally:
            with self._lock:
                if self._cancel.get(key) is stop:
                    del self._cancel[key]
            sessions.leave(own)

    def _run(self, key, entries, questions, settings, stop):
        turns, limit_s = self.sharing.turns, self.sharing.limits.request_s
        started = time.monotonic()
        sampling = "greedy" if all(s.greedy for s in settings.values()) else "sampled"
        lines = [f"{len(questions)} question(s) × {len(entries)} method(s), max_new_tokens="
                 f"{next(iter(settings.values())).max_new_tokens}, {sampling}. Loading the models…"]
        yield self._progress_only(lines[0])
        prepared = {}
        for label, s in settings.items():
            prepared[label] = turns.run(key, f"preparing {label} for a benchmark",
                                        lambda s=s: prepare_run(self.store, s))
            if stop.is_set():
                yield self._progress_only("**Cancelled** while loading; nothing ran.")
                return
        note = ""

        def cancelled():
            nonlocal note
            if stop.is_set():
                note = "cancelled"
            elif limit_s is not None and time.monotonic() - started > limit_s:
                note = f"stopped after {limit_s:.0f} s, this server's limit per request"
            return bool(note)

        pieces = bench_pieces(prepared, questions, warmup=True, cancelled=cancelled)
        lines[0] = lines[0].replace("Loading the models…", "Running (each decode step takes its turn on the model).")
        while True:
            event = turns.run(key, "a benchmark step", lambda: next(pieces, _DONE))
            if event is _DONE:
                break
            if event is None:
                continue
            if event["event"] == "question":
                lines.append(f"[{event['index']}/{event['of']}] {event['category']} · {event['method']}: "
                             f"τ {event['tau']:.2f}, {event['wall_s']:.2f} s")
                yield self._progress_only(self._progress_text(lines))
            elif event["event"] == "report":
                yield self._results(event, questions, settings, lines, note)

    @staticmethod
    def _progress_text(lines: list) -> str:
        # the header and the latest lines: a long run stays readable
        shown = lines[:1] + (["…"] if len(lines) > 13 else []) + lines[1:][-12:]
        return "  \n".join(shown)

    def _progress_only(self, text: str) -> tuple:
        return (text,) + (gr.skip(),) * 7

    def _results(self, event, questions, settings, lines, note):
        report = event["report"]
        greedy = all(s.greedy for s in settings.values())
        done = event["done"]
        head = (f"**{'Cancelled' if note == 'cancelled' else 'Stopped' if note else 'Finished'}**: {done} of "
                f"{event['of']} question(s)" + (f" ({note})" if note and note != "cancelled" else "")
                + f", {len(settings)} method(s); speedups are AR's wall over each method's, same questions, same run.")
        results = {
            "settings": {label: s.to_dict() for label, s in settings.items()},
            "questions": [{"question_id": q["question_id"], "category": q["category"]} for q in questions[:done]],
            "done": done, "of": event["of"], "cancelled": event["cancelled"], "greedy": greedy,
            "methods": report,
        }
        folder = Path(tempfile.mkdtemp(prefix="specviz-bench-"))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        csv_path, json_path = folder / f"benchmark-{stamp}.csv", folder / f"benchmark-{stamp}.json"
        csv_path.write_text(report_csv(report))
        json_path.write_text(json.dumps(results, indent=1))
        table = {"headers": TABLE_HEADERS, "data": table_rows(report, greedy)}
        return (self._progress_text([head, *lines[1:]]), table, category_figure(report), acceptance_figure(report),
                accepted_length_figure(report), str(csv_path), str(json_path), results)

    def cancel(self, request: gr.Request = None) -> str:
        with self._lock:
            stop = self._cancel.get(request_key(request))
        if stop is None:
            return "No benchmark is running."
        stop.set()
        return "Cancelling: the benchmark stops after the question in progress."

    # the panel --------------------------------------------------------------------------------------
    def build(self) -> "BenchmarkPanel":
        caps = self.sharing.policy.caps if self.sharing.policy.public else {}
        with gr.Column(elem_id="sb-panel"):
            gr.Markdown("### Benchmark: Spec-Bench dev questions\nEvery method, AR included, decodes the same "
                        "questions interleaved in this process, one decode step per turn on the shared model; "
                        "the same harness as `python -m specviz bench`.")
            with gr.Row():
                methods = gr.Dropdown([m for m in METHODS if m != "ar"], value=DEFAULT_METHODS, multiselect=True,
                                      label="Methods (AR is always the baseline)", elem_id="sb-methods", scale=2)
                categories = gr.Dropdown(list(self.sizes), value=DEFAULT_CATEGORIES, multiselect=True,
                                         allow_custom_value=True, label="Categories (none: all)",
                                         elem_id="sb-categories", scale=2)
            with gr.Row():
                overrides = gr.Textbox("", label="Knob overrides (optional)", elem_id="sb-overrides", scale=2,
                                       placeholder="eagle:budget=16:top_k=4, prompt_lookup:ngram=2  or a JSON list "
                                                   "of settings dicts",
                                       info="each entry replaces its method's plain entry; repeat a method with "
                                            "other knobs to compare settings side by side")
                per_category = gr.Number(1, label="Questions per category", precision=0,
                                         elem_id="sb-per-category", scale=1)
                max_new = gr.Number(min(32, caps.get("bench_new_tokens", 32)), label="Max new tokens", precision=0,
                                    elem_id="sb-max-new", scale=1)
            with gr.Row():
                run = gr.Button("Run benchmark", variant="primary", elem_id="sb-run")
                cancel = gr.Button("Cancel", elem_id="sb-cancel")
            progress = gr.Markdown(IDLE, elem_id="sb-progress")
            table = gr.Dataframe(headers=TABLE_HEADERS, value=None, label="Results", interactive=False,
                                 elem_id="sb-table")
            with gr.Row():
                by_category = gr.Plot(category_figure(None), show_label=False, elem_id="sb-by-category")
            with gr.Row():
                acceptance = gr.Plot(acceptance_figure(None), show_label=False, elem_id="sb-acceptance")
                lengths = gr.Plot(accepted_length_figure(None), show_label=False, elem_id="sb-lengths")
            with gr.Row():
                csv_file = gr.File(label="Results (CSV)", interactive=False, elem_id="sb-csv")
                json_file = gr.File(label="Results (JSON)", interactive=False, elem_id="sb-json-file")
            results = gr.JSON(label="Results (JSON)", elem_id="sb-results", visible=False)
            methods_box = gr.JSON(visible=False)
        outputs = [progress, table, by_category, acceptance, lengths, csv_file, json_file, results]

        def collect(names=None, text=None):
            with user_errors("", self.sharing.policy):
                return parse_methods(names, text)

        run.click(collect, [methods, overrides], methods_box, queue=False, api_name=False).then(
            self.benchmark, [methods_box, categories, per_category, max_new], outputs, api_name="benchmark",
            concurrency_limit=None, preprocess=False)
        cancel.click(self.cancel, None, progress, api_name="benchmark_cancel", queue=False)
        self.components = dict(zip(("progress", "table", "by_category", "acceptance", "lengths", "csv", "json",
                                    "results"), outputs))
        return self
