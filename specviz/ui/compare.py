"""The Compare tab: two to four lanes (speculative methods, plain AR, Jacobi, diffusion schedules) race on one
prompt in lockstep.

Each round steps every unfinished lane once, and every lane step is one turn on the shared model
(`controller.Sharing`): the comparison takes turns with other sessions like a Run does, never holding the model
for a whole round. A lane is an ordinary tab session (`SpeculativeSpec.start` / `DiffusionSpec.start`), so its
step records, views and timings are the tabs' own. The comparison lives in the browser session's `gr.State`.

API: `/compare` takes `prompt` and `lanes` (a list of settings objects, as `/run` and `/lattice_run` take them;
`"kind": "speculative" | "lattice"` picks the engine, else `diffusion` and `jacobi` are lattice methods) and its
last output is JSON with one entry per lane.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from ..config import ConfigError, shown
from ..runs import ARTiming, ar_decoder, prepare_run
from ..settings import LATTICE_METHODS, LatticeSettings, RunSettings
from ..textio import TokenText, encode_prompt, trace_file_dict
from ..trace import MAX_TRACE_CHARS
from ..viz.compare import (ar_diff_html, equals_reference, first_divergence, lane_result, lanes_html, race_figure,
                           table_html)
from ..viz.lattice import CommitState, lattice_svg
from ..viz.tree import empty_figure, tree_html
from .controller import (Session, Sharing, TabController, TabSpec, request_key, run_buttons, scrubber_update,
                         session_state, user_errors, write_trace)
from .diffusion import TOY_DEFAULTS, DiffusionSpec
from .inputs import PromptBox, StepSlider
from .replay import PUBLIC_MAX_CHARS, read_trace_file
from .speculative import SpeculativeSpec

MIN_LANES, MAX_LANES = 2, 4
FILE_KIND = "specviz-comparison"
NONE = "(no lane)"
# the lane presets: a settings dict each (the knobs box adds to it)
PRESETS = {
    "AR": {"method": "ar"},
    "auto": {"method": "auto"},
    "n-gram tree": {"method": "ngram_tree"},
    "EAGLE": {"method": "eagle"},
    "retrieval": {"method": "retrieval"},
    "prompt lookup": {"method": "prompt_lookup"},
    "SpS (early-exit draft)": {"method": "sps"},
    "Jacobi": {"method": "jacobi"},
    "diffusion: threshold": {"method": "diffusion", "schedule": "threshold", **TOY_DEFAULTS},
    "diffusion: low_confidence": {"method": "diffusion", "schedule": "low_confidence", **TOY_DEFAULTS},
}
DEFAULT_LANES = ("AR", "auto", "Jacobi", "diffusion: threshold")
PROMPT = "Repeat after me: one two three, one two three, one two three."
LATTICE_ROWS = 4  # a lattice lane shows its last rows, the current one outlined


@dataclass(frozen=True)
class Lane:
    kind: str  # speculative or lattice
    settings: object  # RunSettings or LatticeSettings
    label: str


@dataclass(frozen=True)
class CompareSettings:
    lanes: tuple

    @property
    def method(self) -> str:  # the controller names a run by its method
        return "comparison of " + ", ".join(lane.label for lane in self.lanes)

    def to_dict(self) -> dict:
        return {"lanes": [{"kind": lane.kind, **lane.settings.to_dict()} for lane in self.lanes]}


def lane_kind(data: dict) -> str:
    kind = data.get("kind")
    if kind is None:
        return "lattice" if data.get("method") in LATTICE_METHODS else "speculative"
    if kind not in ("speculative", "lattice"):
        raise ConfigError(f"kind must be speculative or lattice, got {shown(kind)}")
    return kind


def lane_label(i: int, kind: str, settings) -> str:
    if kind == "lattice":
        what = settings.label if settings.method == "jacobi" else f"diffusion · {settings.label}"
    else:
        what = "AR" if settings.method == "ar" else settings.method
    return f"{i + 1} · {what}"


@dataclass
class LaneRun:
    """One lane of a comparison: its tab session and its per-step series."""

    lane: Lane
    session: Session
    tokens: list = field(default_factory=list)
    forwards: list = field(default_factory=list)
    wall_s: list = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.session.done

    @property
    def n_steps(self) -> int:
        return len(self.tokens)

    def record(self, step) -> None:
        """The series after one more step record."""
        if self.lane.kind == "lattice":
            end = step.eos_at + 1 if step.eos_at >= 0 else step.length
            tokens = int(np.count_nonzero(step.canvas[:end] >= 0))
            fw = step.forwards
        else:
            tokens = (self.tokens[-1] if self.tokens else 0) + int(step.committed_ids.shape[0])
            fw = step.target_forwards
        self.tokens.append(tokens)
        self.forwards.append((self.forwards[-1] if self.forwards else 0) + int(fw))

    def output_ids(self, k: int | None = None) -> list:
        """The lane's output after its step k (default: the latest)."""
        records = self.session.decoder.records
        if not records:
            return []
        k = len(records) - 1 if k is None else min(k, len(records) - 1)
        if self.lane.kind == "lattice":
            s = records[k]
            end = s.eos_at + 1 if s.eos_at >= 0 else s.length
            masked = np.flatnonzero(s.canvas[:end] < 0)
            return s.canvas[: int(masked[0]) if masked.size else end].tolist()
        return [int(t) for r in records[: k + 1] for t in r.committed_ids]


class Lockstep:
    """The comparison's decoder: a round steps every unfinished lane once; `step_one` does one lane step (one
    turn on the model). `records` holds one entry per finished round (the scrubber's steps)."""

    def __init__(self, lanes: list):
        self.lanes = lanes
        self.records: list = []
        self._pending: list = []  # lanes still to step in the round under way

    @property
    def done(self) -> bool:
        return not self._pending and all(lane.done for lane in self.lanes)

    def pending(self) -> int:
        """Lane steps left in the round under way (a whole round when none is under way)."""
        return len(self._pending) if self._pending else sum(not lane.done for lane in self.lanes)

    def step_one(self, advance) -> bool:
        """One lane step; True when it completed a round."""
        if not self._pending:
            self._pending = [i for i, lane in enumerate(self.lanes) if not lane.done]
            if not self._pending:
                return False
        lane = self.lanes[self._pending.pop(0)]
        before = lane.session.n_steps
        advance(lane)
        for step in lane.session.decoder.records[before:]:
            lane.record(step)
            lane.wall_s.append(float(lane.session.decoder.wall_s))
        if not self._pending:
            self.records.append(len(self.records))
            return True
        return False

    @property
    def finish_reason(self) -> str:
        return "done" if self.done else ""

    @property
    def wall_s(self) -> float:
        return sum(lane.session.decoder.wall_s for lane in self.lanes)

    def at(self, lane: LaneRun, k: int) -> int:
        """The lane's step on show at round k (a finished lane stays on its last step)."""
        return min(k, lane.n_steps - 1)


class CompareSpec(TabSpec):
    prefix = "cmp"
    api_prefix = "compare_"
    smaller = "pick fewer lanes, smaller models or fewer new tokens"
    trace_name = "specviz-comparison"
    tab_label = "Compare"

    def __init__(self, store, sharing=None):
        super().__init__(store, sharing)
        self.speculative = SpeculativeSpec(store, self.sharing)
        self.diffusion = DiffusionSpec(store, self.sharing)

    def _spec(self, kind: str) -> TabSpec:
        return self.diffusion if kind == "lattice" else self.speculative

    # settings ---------------------------------------------------------------------------------------
    def parse(self, settings) -> CompareSettings:
        """`{"lanes": [...]}` (or the list itself): each lane checked by its tab's parser, a bad one named."""
        lanes = settings.get("lanes") if isinstance(settings, dict) else settings
        if not isinstance(lanes, list):
            raise ConfigError("lanes must be a list of settings objects, e.g. [{\"method\": \"ar\"}, "
                              "{\"method\": \"auto\"}]")
        if not MIN_LANES <= len(lanes) <= MAX_LANES:
            raise ConfigError(f"a comparison takes {MIN_LANES} to {MAX_LANES} lanes; got {len(lanes)}")
        checked = []
        for i, data in enumerate(lanes):
            name = f"lane {i + 1}"
            if not isinstance(data, dict):
                raise ConfigError(f"{name}: a lane is a settings object such as {{\"method\": \"auto\"}}, got "
                                  f"{type(data).__name__}")
            try:
                kind = lane_kind(data)
                body = {k: v for k, v in data.items() if k != "kind"}
                lane = self._spec(kind).parse(body)
            except ConfigError as err:
                method = data.get("method")
                raise ConfigError(f"{name}{f' ({shown(method, 40)})' if method is not None else ''}: {err}") from None
            checked.append(Lane(kind, lane, lane_label(i, kind, lane)))
        return CompareSettings(tuple(checked))

    # the session --------------------------------------------------------------------------------------
    def start(self, prompt, settings: CompareSettings) -> Session:
        lanes = [LaneRun(lane, self._spec(lane.kind).start(prompt, lane.settings)) for lane in settings.lanes]
        session = Session(prompt, settings, None, Lockstep(lanes), None)
        session.extra["round_done"] = False
        return session

    def advance(self, session) -> None:
        def one(lane):
            self._spec(lane.lane.kind).advance(lane.session)

        session.extra["round_done"] = session.decoder.step_one(one)

    # the AR reference ---------------------------------------------------------------------------------
    @staticmethod
    def ar_lane(session) -> LaneRun | None:
        return next((lane for lane in session.decoder.lanes
                     if lane.lane.kind == "speculative" and lane.lane.settings.method == "ar"), None)

    def finish_work(self, session, view):
        """With no AR lane: plain AR on the first AR-model lane's target (else the embedded model), as long as the
        longest lane, one AR step per turn, for the equality check and the speedups."""
        if self.ar_lane(session) is not None or "ar" in session.extra:
            return
        lanes = session.decoder.lanes
        n = max([len(lane.output_ids()) for lane in lanes] + [1])
        prepared, greedy = None, True
        for lane in lanes:
            run = lane.session.run
            if lane.lane.kind == "speculative" and run is not None:
                prepared, greedy = run, lane.lane.settings.greedy
                break
            if lane.lane.kind == "lattice" and lane.lane.settings.method == "jacobi" and run is not None:
                prepared, greedy = run.spec, lane.lane.settings.temperature == 0
                break
        if prepared is None:
            prepared = prepare_run(self.store, {"method": "ar", "max_new_tokens": n})
            yield
        ids = encode_prompt(prepared.target.tokenizer, session.prompt)
        dec = ar_decoder(prepared, ids, n, record=True)
        for _ in dec.steps():
            yield
        trace = dec.trace()
        session.extra["ar"] = {"label": f"plain AR on {prepared.target.model_id}, decoded after the race",
                               "output_ids": trace.output_ids.tolist(), "wall_s": float(trace.wall_s),
                               "greedy": greedy, "tokenizer": prepared.target.tokenizer}

    def reference(self, session, k: int | None = None) -> dict | None:
        """AR's output and timing in this comparison: the AR lane (as of round k), or the AR decode after it."""
        lane = self.ar_lane(session)
        if lane is not None:
            j = lane.n_steps - 1 if k is None else session.decoder.at(lane, k)
            if j < 0:
                return None
            finished = lane.done and j == lane.n_steps - 1
            return {"label": f"the AR lane ({lane.lane.label})", "output_ids": lane.output_ids(j),
                    "wall_s": lane.wall_s[j], "tokens": lane.tokens[j], "greedy": lane.lane.settings.greedy,
                    "tokenizer": lane.session.extra["tokenizer"], "finished": finished}
        ar = session.extra.get("ar")
        if ar is None:
            return None
        return {**ar, "tokens": len(ar["output_ids"]), "finished": True}

    # views ----------------------------------------------------------------------------------------------
    def _k(self, session, k) -> int:
        return len(session.decoder.records) - 1 if k is None else k

    def results(self, session, k: int | None = None) -> list:
        """One row per lane as of round k: `lane_result` plus kind, steps, method, output and divergence."""
        k = self._k(session, k)
        ref = self.reference(session, k)
        rows = []
        for lane in session.decoder.lanes:
            j = session.decoder.at(lane, k)
            if j < 0:
                continue
            out = lane.output_ids(j)
            greedy = (lane.lane.settings.greedy if lane.lane.kind == "speculative"
                      else lane.lane.settings.temperature == 0)
            equals, diverge = None, None
            if ref is not None and greedy and ref["greedy"]:
                diverge = first_divergence(out, ref["output_ids"])
                finished = lane.done and j == lane.n_steps - 1
                stopped = lane.session.decoder.finish_reason == "length"
                equals = equals_reference(out, ref["output_ids"], stopped) if finished and ref["finished"] else None
                if equals is None and diverge is not None:
                    equals = False
            timing = {"tokens": ref["tokens"], "wall_s": ref["wall_s"]} if ref is not None and ref["finished"] else None
            row = lane_result(lane.lane.label, lane.tokens[j], lane.forwards[j], lane.wall_s[j], timing, equals)
            row.update(kind=lane.lane.kind, steps=j + 1, method=lane.lane.settings.method, diverge_at=diverge,
                       output_ids=out, finished=lane.done and j == lane.n_steps - 1, greedy=greedy)
            rows.append(row)
        return rows

    def _label(self, session, lane: LaneRun, token_id: int) -> str:
        if token_id < 0:
            return ""
        if lane.lane.kind == "lattice":
            return self.diffusion.label(lane.session, token_id)
        return lane.session.extra["tokenizer"].decode([int(token_id)])

    def _lane_view(self, session, lane: LaneRun, j: int) -> str:
        if lane.lane.kind == "speculative":
            v = lane.session.view
            drawn = tree_html(v.steps[j], v.node_labels[j], v.bonus_labels[j], title=f"step {j}", max_depth=6)
            # nodes here open no card (the Speculative tab's do): drop the hint that says they do
            return re.sub(r'<div class="sv-tree-hint">.*?</div>', "", drawn, count=1, flags=re.S)
        v = lane.session.view
        first = max(0, j - LATTICE_ROWS + 1)
        start = CommitState(v.steps[0].length)
        for s in v.steps[:first]:
            start.advance(s)
        return lattice_svg(v.steps[first: j + 1], v.canvas_labels[first: j + 1], v.proposal_labels[first: j + 1],
                           current_step=j, title=f"step {j}: the last {j + 1 - first} rows", start=start)

    def _cards(self, session, k: int, rows: list) -> list:
        cards = []
        by_label = {r["label"]: r for r in rows}
        for lane in session.decoder.lanes:
            j = session.decoder.at(lane, k)
            r = by_label.get(lane.lane.label)
            if j < 0 or r is None:
                continue
            per = "τ" if lane.lane.kind == "speculative" else "tokens/forward"
            state = "finished" if r["finished"] else "running"
            summary = (f"step {j} · {r['tokens']} tokens · {r['forwards']} forwards · {per} "
                       f"{r['tokens_per_forward']:.2f} · {r['wall_s']:.2f} s · {state}")
            tok = lane.session.extra["tokenizer"]
            text = tok.decode(r["output_ids"], skip_special_tokens=True)
            cards.append({"label": lane.lane.label, "summary": summary, "view": self._lane_view(session, lane, j),
                          "text": text})
        return cards

    def _diff(self, session, k: int, rows: list) -> str:
        ref = self.reference(session, k)
        if ref is None:
            return ar_diff_html(rows, None)
        ref_tok = ref["tokenizer"]
        ar_pieces = [ref_tok.decode([t]) for t in ref["output_ids"]]
        diff_rows = []
        for lane, r in zip([ln for ln in session.decoder.lanes if session.decoder.at(ln, k) >= 0], rows):
            tok = lane.session.extra["tokenizer"]
            diff_rows.append({**r, "pieces": [tok.decode([t]) for t in r["output_ids"]], "ar_pieces": ar_pieces,
                              "sampled": not (r["greedy"] and ref["greedy"])})
        return ar_diff_html(diff_rows, ref["label"])

    def _series(self, session, k: int) -> list:
        out = []
        for lane in session.decoder.lanes:
            j = session.decoder.at(lane, k)
            out.append({"label": lane.lane.label, "kind": lane.lane.kind, "tokens": lane.tokens[: j + 1],
                        "forwards": lane.forwards[: j + 1], "wall_s": lane.wall_s[: j + 1], "at": j})
        return out

    def how(self, session) -> str:
        ref = self.reference(session)
        if ref is None:
            return "Speedups appear once AR's time is known (the AR lane finishes, or AR is decoded after the race)."
        return (f"Speedup vs AR = the lane's tok/s ÷ AR's tok/s, AR timed in this same comparison: {ref['label']}, "
                f"{ref['tokens']} tokens in {ref['wall_s']:.2f} s. Decode seconds are each decoder's own timing "
                "(model loading and drawing excluded).")

    def status(self, session, note: str = "", k: int | None = None) -> str:
        if session is None or session.n_steps == 0:
            return note or "Ready."
        dec = session.decoder
        k = self._k(session, k)
        running = sum(not lane.done for lane in dec.lanes)
        state = ("finished (every lane done)" if dec.done else "paused" if session.paused
                 else f"running ({running} lanes left)")
        return f"**Round {k}** · {len(dec.lanes)} lanes · {state}" + (f" · {note}" if note else "")

    def outputs_empty(self, status):
        fig = empty_figure("Pick two to four lanes and press Run", height=300)
        return (None, status, fig, fig, lanes_html([]), ar_diff_html([], None), "", scrubber_update(0, 0), None)

    def outputs_live(self, session, status, view):
        if not session.extra.get("round_done"):
            # a lane stepped inside a round: the views move once the round is whole
            return (session, gr.skip(), *(gr.skip(),) * 7)
        return self._outputs(session, status, None, summary=False)

    def outputs_full(self, session, status, k, view):
        return self._outputs(session, status, k, summary=True)

    def _outputs(self, session, status, k, summary: bool) -> tuple:
        n = session.n_steps
        if n == 0:
            return (session, *self.outputs_empty(status)[1:])
        k = n - 1 if k is None else k
        rows = self.results(session, k)
        series = self._series(session, k)
        return (session, status, race_figure(series, "forwards"), race_figure(series, "wall_s"),
                lanes_html(self._cards(session, k, rows)), self._diff(session, k, rows),
                table_html(rows, self.how(session)), scrubber_update(n, k),
                self.summary(session) if summary else gr.skip())

    def summary(self, session) -> list | None:
        """The API's result: one entry per lane, as of the last round."""
        if session is None or session.n_steps == 0:
            return None
        keys = ("label", "tokens", "forwards", "wall_s", "speedup_vs_ar", "equals_ar", "tokens_per_forward", "tok_s",
                "kind", "method", "steps", "output_ids")
        out = []
        for lane, r in zip(session.decoder.lanes, self.results(session)):
            entry = {key: r[key] for key in keys}
            entry["settings"] = lane.lane.settings.to_dict()
            entry["text"] = lane.session.extra["tokenizer"].decode(r["output_ids"], skip_special_tokens=True)
            out.append(entry)
        return out

    # export and reload ------------------------------------------------------------------------------------
    def export_dict(self, session) -> dict:
        lanes = []
        for lane in session.decoder.lanes:
            trace = lane.session.decoder.trace()
            lanes.append({"label": lane.lane.label, "kind": lane.lane.kind, "settings": lane.lane.settings.to_dict(),
                          "wall_s_after_step": lane.wall_s,
                          "trace": trace_file_dict(trace, lane.session.extra.get("tokenizer"), session.prompt)})
        ar = session.extra.get("ar")
        ref = None if ar is None else {k: ar[k] for k in ("label", "output_ids", "wall_s", "greedy")}
        return {"kind": FILE_KIND, "version": 1, "prompt": session.prompt, "lanes": lanes, "ar_reference": ref}

    def open_dict(self, data: dict, limit: int) -> Session:
        """A comparison file reopened: every lane replayed from its trace, no model loaded."""
        if not isinstance(data, dict) or data.get("kind") != FILE_KIND:
            raise ConfigError(f"this is not a comparison file (its kind is not {FILE_KIND!r}): a single run's trace "
                              "opens in the Speculative or Diffusion tab")
        lanes_in = data.get("lanes")
        if not isinstance(lanes_in, list) or not MIN_LANES <= len(lanes_in) <= MAX_LANES:
            raise ConfigError(f"a comparison file holds {MIN_LANES} to {MAX_LANES} lanes")
        prompt = data.get("prompt") if isinstance(data.get("prompt"), str) else ""
        lanes, checked = [], []
        for i, d in enumerate(lanes_in):
            if not isinstance(d, dict) or not isinstance(d.get("trace"), dict):
                raise ConfigError(f"lane {i + 1}: no trace")
            kind = "lattice" if d.get("kind") == "lattice" else "speculative"
            opened = read_trace_file(json.dumps(d["trace"]), limit)
            tokenizer = opened.token_text or TokenText({})
            session = self._spec(kind).replay(opened.trace, tokenizer, opened.prompt)
            label = d.get("label") if isinstance(d.get("label"), str) else f"{i + 1} · {opened.trace.method}"
            lane = LaneRun(Lane(kind, session.settings, label[:80]), session)
            for step in session.decoder.records:
                lane.record(step)
            walls = d.get("wall_s_after_step")
            if (isinstance(walls, list) and len(walls) == lane.n_steps
                    and all(isinstance(w, (int, float)) and w >= 0 for w in walls)):
                lane.wall_s = [float(w) for w in walls]
            else:  # the steps' own timings, scaled to the trace's decode time
                ms = np.cumsum([getattr(s, "draft_ms", getattr(s, "forward_ms", 0.0)) +
                                getattr(s, "verify_ms", getattr(s, "select_ms", 0.0)) for s in session.decoder.records])
                total = opened.trace.wall_s or (ms[-1] / 1000 if ms.size else 0.0)
                lane.wall_s = [float(total * m / ms[-1]) if ms[-1] > 0 else 0.0 for m in ms]
            lanes.append(lane)
            checked.append(lane.lane)
        session = Session(prompt, CompareSettings(tuple(checked)), None, Lockstep(lanes), None)
        session.decoder.records = list(range(max(lane.n_steps for lane in lanes)))
        ref = data.get("ar_reference")
        if isinstance(ref, dict) and isinstance(ref.get("output_ids"), list) and isinstance(ref.get("wall_s"), (int, float)):
            tok = next((ln.session.extra["tokenizer"] for ln in lanes), None)
            session.extra["ar"] = {"label": str(ref.get("label", "plain AR"))[:120],
                                   "output_ids": [int(t) for t in ref["output_ids"] if isinstance(t, int)],
                                   "wall_s": float(ref["wall_s"]), "greedy": bool(ref.get("greedy", True)),
                                   "tokenizer": tok}
        return session


class CompareTab:
    def __init__(self, store, sharing: Sharing | None = None):
        self.store = store
        self.spec = CompareSpec(store, sharing)
        self.controller = TabController(self.spec)

    def steps_in_round(self, prompt, settings, session) -> int:
        """Lane steps that make one round: the rest of the round under way, or a whole first round."""
        try:
            checked = self.spec.parse(settings)
        except ConfigError:
            return 1  # the controller names the problem
        if session is None or session.done or session.prompt != prompt or session.settings != checked:
            return len(checked.lanes)
        return max(session.decoder.pending(), 1)

    def export(self, session):
        if session is None or session.n_steps == 0:
            raise gr.Error("Nothing to export yet: run or step a comparison first.", print_exception=False)
        return write_trace(self.spec.export_dict(session), self.spec.trace_name)

    def open_file(self, path, view=None):
        if not path:
            return self.spec.outputs_empty("No file.")
        limit = PUBLIC_MAX_CHARS if self.spec.policy.public else MAX_TRACE_CHARS * MAX_LANES
        try:
            if Path(path).stat().st_size > limit:
                raise gr.Error(f"This file is too large to open (over {limit:,} characters).", print_exception=False)
            text = Path(path).read_text(encoding="utf-8")
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise gr.Error("This comparison cannot be opened: the file is not JSON.", print_exception=False) from None
        except OSError:
            raise gr.Error("The uploaded file could not be read; upload it again.", print_exception=False) from None
        with user_errors(self.spec.smaller, self.spec.policy):
            session = self.spec.open_dict(data, limit)
        name = Path(path).name
        return self.spec.outputs_full(session, f"**Opened {name}**: {len(session.decoder.lanes)} lanes, "
                                               f"{session.n_steps} rounds, replayed without the model. Drag the "
                                               "round slider to scrub.", None, view or {})

    def build(self):
        controller, spec = self.controller, self.spec
        with gr.Row():
            with gr.Column(scale=1, min_width=340):
                prompt = PromptBox(label="Prompt", lines=3, value=PROMPT, elem_id="cmp-prompt")
                buttons = run_buttons("cmp")
                max_new = gr.Slider(4, 128, value=24, step=1, label="Tokens per lane",
                                    info="max_new_tokens of speculative lanes, gen_length of lattice lanes, unless "
                                         "a lane's knobs set their own", elem_id="cmp-max-new")
                presets, knob_boxes = [], []
                for i in range(MAX_LANES):
                    with gr.Group():
                        presets.append(gr.Dropdown([NONE, *PRESETS], value=DEFAULT_LANES[i] if i < 2 else NONE,
                                                   label=f"Lane {i + 1}", elem_id=f"cmp-lane-{i}"))
                        knob_boxes.append(gr.Textbox("", label=f"Lane {i + 1} knobs (JSON, optional)",
                                                     placeholder='e.g. {"budget": 16} or {"temperature": 0.7}',
                                                     lines=1, elem_id=f"cmp-knobs-{i}"))
                gr.Markdown("Lanes step **in lockstep**: each round steps every unfinished lane once, each step one "
                            "turn on the shared model. Speculative lanes run on the embedded target; diffusion lanes "
                            "on their own model (tiny-mdm).", elem_id="cmp-help")
                with gr.Accordion("Export or open a comparison (JSON)", open=False):
                    lanes_box = gr.JSON(label="Lanes of the last Run / Step (the API's `lanes`)", elem_id="cmp-lanes")
                    export_btn = gr.Button("Export the comparison", elem_id="cmp-export")
                    export_file = gr.File(label="Comparison", interactive=False, elem_id="cmp-file")
                    upload = gr.File(label="Open a comparison file (no model needed)", file_types=[".json"],
                                     type="filepath", elem_id="cmp-upload")
            with gr.Column(scale=2):
                empty = spec.outputs_empty("")
                status = gr.Markdown("Ready. Pick lanes, then **Run** races them; **Step** plays one round.",
                                     elem_id="cmp-status")
                slider = StepSlider(0, 1, value=0, step=1, label="Round", interactive=False, elem_id="cmp-slider",
                                    info="re-renders any recorded round (each lane one step per round) from the "
                                         "stored steps, without calling the model")
                with gr.Row():
                    race_fw = gr.Plot(empty[2], show_label=False, elem_id="cmp-race-forwards")
                    race_s = gr.Plot(empty[3], show_label=False, elem_id="cmp-race-time")
                table = gr.HTML("", elem_id="cmp-table")
                lanes_view = gr.HTML(empty[4], elem_id="cmp-lanes-view")
                with gr.Accordion("Each lane's output against AR's (greedy runs)", open=True):
                    diff = gr.HTML(empty[5], elem_id="cmp-diff")
                with gr.Accordion("The comparison as JSON (the API's result: one entry per lane)", open=False):
                    result = gr.JSON(label="Comparison (JSON, one entry per lane)", elem_id="cmp-result")
        state = session_state()
        view_state = gr.State({})
        outputs = [state, status, race_fw, race_s, lanes_view, diff, table, slider, result]

        def collect(length_value=None, *values):
            """The lane rows as the API's `lanes` list (the page's own event; raw junk gets a message)."""
            try:
                tokens = int(float(length_value))
            except (TypeError, ValueError, OverflowError):
                raise gr.Error(f"tokens per lane must be a whole number, got {shown(length_value, 40)}",
                               print_exception=False) from None
            chosen, boxes = values[:MAX_LANES], values[MAX_LANES:]
            lanes = []
            for i, (name, box) in enumerate(zip(chosen, boxes)):
                if not name or name == NONE:
                    continue
                if not isinstance(name, str) or name not in PRESETS:
                    raise gr.Error(f"lane {i + 1}: pick a preset from the list ({', '.join(PRESETS)}), got "
                                   f"{shown(name, 40)}", print_exception=False)
                lane = dict(PRESETS[name])
                length = "gen_length" if lane_kind(lane) == "lattice" else "max_new_tokens"
                lane[length] = tokens
                if box is not None and not isinstance(box, str):
                    raise gr.Error(f"lane {i + 1}: the knobs box holds JSON text, got {shown(box, 40)}",
                                   print_exception=False)
                if box and box.strip():
                    try:
                        extra = json.loads(box)
                    except json.JSONDecodeError as err:
                        raise gr.Error(f"lane {i + 1}: the knobs box is not JSON ({err.msg}); write e.g. "
                                       '{"budget": 16}', print_exception=False) from None
                    if not isinstance(extra, dict):
                        raise gr.Error(f"lane {i + 1}: the knobs box must hold a JSON object, e.g. {{\"budget\": 16}}",
                                       print_exception=False)
                    if "max_new_tokens" in extra and length == "gen_length":
                        extra["gen_length"] = extra.pop("max_new_tokens")
                    lane.update(extra)
                lanes.append(lane)
            return lanes

        def compare(prompt, lanes=None, view=None, session=None, request: gr.Request = None):
            yield from controller.drive(prompt, {"lanes": lanes}, view, session, None, request_key(request))

        def compare_step(prompt, lanes=None, view=None, session=None, request: gr.Request = None):
            key = request_key(request)
            n = self.steps_in_round(prompt, {"lanes": lanes}, controller._running.get(key) or session)
            yield from controller.drive(prompt, {"lanes": lanes}, view, session, n, key)

        run_btn, step_btn, pause_btn, reset_btn = buttons
        inputs = [max_new, *presets, *knob_boxes]
        run_event = run_btn.click(collect, inputs, lanes_box, queue=False, api_name=False).success(
            compare, [prompt, lanes_box, view_state, state], outputs, api_name="compare", concurrency_limit=None)
        step_btn.click(collect, inputs, lanes_box, queue=False, api_name=False).success(
            compare_step, [prompt, lanes_box, view_state, state], outputs, api_name="compare_step",
            concurrency_limit=None)

        def pause(session=None, request: gr.Request = None):
            return controller.pause(session, request_key(request))

        def reset(session=None, request: gr.Request = None):
            return controller.reset(session, request_key(request))

        pause_btn.click(pause, state, status, queue=False, api_name="compare_pause")
        reset_btn.click(reset, state, outputs, cancels=[run_event], api_name="compare_reset")

        def scrub(step, view=None, session=None):
            return controller.scrub(step, view, session)

        slider.release(scrub, [slider, view_state, state], outputs[1:], api_name="compare_scrub",
                       trigger_mode="always_last")
        slider.input(scrub, [slider, view_state, state], outputs[1:], api_name=False, trigger_mode="always_last")
        export_btn.click(self.export, state, export_file, api_name="compare_export")
        upload.upload(self.open_file, [upload, view_state], outputs, api_name="compare_open")
        return run_event
