"""Every API endpoint against bad input: one table of cases, sent through gradio_client and, for shapes that
client will not send (NaN, infinities, unpaired surrogates, missing arguments), as raw HTTP.

Each case either must fail with a clear message, or is legitimately accepted (`ok=True`, with the reason) and
must answer normally. A clear message is not a bare "Error", names what was wrong (the field, or what to do
first), is short, and leaks nothing of the server: no traceback, no server path, no environment value. After
the whole sweep the server still serves a normal Step. The last test prints how many inputs were sent and
how many got a clear message."""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

NAN, INF = float("nan"), float("inf")
S = {"max_new_tokens": 2}  # a tiny speculative run
L = {"gen_length": 8, "block_size": 8, "steps": 8}  # a tiny lattice run
MB = "x" * 1_000_000
CONTROL = "Hi\x00 there\x01\x07\x1b[2J\x7f\u200b!"
SERVER_MARKERS = ("Traceback", 'File "', "/work", "/root", "/tmp", "/home", "/usr", "site-packages", ".py:",
                  "specviz/", "gradio/")
GRADIO_BARE = "has not enabled verbose error reporting"  # gradio_client's stand-in for an error without text
MAX_MESSAGE = 1500  # characters: a message echoes a bad value shortened, never a megabyte of it


@dataclass
class Case:
    api: str  # the endpoint, e.g. "/step"
    args: tuple  # positional inputs, as sent
    expect: tuple  # words the message (or, when ok, the output) must contain, any of them
    ok: bool = False  # legitimately accepted: must succeed (the reason is in `why`)
    via: str = "client"  # "client" (gradio_client) or "http" (raw Gradio HTTP API)
    session: str = "shared"  # "shared": a session that has runs in both tabs; "fresh": nothing run yet
    why: str = ""

    @property
    def id(self) -> str:
        shown = json.dumps(self.args, default=repr)
        shown = shown if len(shown) < 60 else shown[:57] + "..."
        return f"{self.via}:{self.api}:{self.session}:{shown}"


def _words(*w):
    return tuple(w)


# ---------------------------------------------------------------------------------------------------------------
# the table

RUNS = (("/run", S), ("/step", S), ("/lattice_run", L), ("/lattice_step", L), ("/lattice_compare", L))
SPEC_RUNS = ("/run", "/step")
LATTICE_RUNS = ("/lattice_run", "/lattice_step", "/lattice_compare")
OK_RUN = ("Step", "lattice")  # a successful run's status (or the comparison's table)
COMPARE_DEFAULTS = ("low_confidence", "threshold", "confidence")


def _full(api: str, *args) -> tuple:
    """Every input of the endpoint: the raw HTTP API, unlike gradio_client, fills in no defaults."""
    return args + COMPARE_DEFAULTS[len(args) - 2:] if api == "/lattice_compare" else args


CASES: list[Case] = []

# the prompt, on every endpoint that takes one
for api, good in RUNS:
    CASES += [
        Case(api, ("", good), _words("prompt")),
        Case(api, (" \t\n  ", good), _words("prompt")),
        Case(api, (MB, good), _words("prompt")),
        Case(api, (None, good), _words("prompt")),
        Case(api, (42, good), _words("prompt")),
        Case(api, ([1, 2], good), _words("prompt")),
        Case(api, ({"text": "Hi"}, good), _words("prompt")),
        Case(api, (True, good), _words("prompt")),
        Case(api, (CONTROL, good), OK_RUN, ok=True,
             why="control characters and NUL are text: the tokenizer takes them and every view escapes them"),
        # gradio_client cannot encode these (httpx writes UTF-8): raw HTTP, JSON-escaped
        Case(api, _full(api, "\ud800", good), _words("prompt"), via="http"),
        Case(api, _full(api, "ab\udc80cd", good), _words("prompt"), via="http"),
    ]

# the settings object: its shape, and each kind of bad field value
NOT_A_DICT = ("sps", [1, 2], 3, 2.5, True, [{"method": "sps"}])
for api in SPEC_RUNS + LATTICE_RUNS:
    prompt = "Hi"
    for bad in NOT_A_DICT:
        CASES.append(Case(api, (prompt, bad), _words("settings")))
    CASES += [
        Case(api, (prompt, {"colour": "red"}), _words("colour")),
        Case(api, (prompt, {"y" * 200_000: 1}), _words("settings", "field")),
        Case(api, (prompt, {"": 1}), _words("settings", "field")),
    ]
CASES += [
    Case("/step", ("Hi", None), OK_RUN, ok=True, why="settings null means every default (as {} does)"),
    Case("/step", ("Hi", {}), OK_RUN, ok=True, why="{} is the default run"),
    Case("/lattice_step", ("Hi", None), OK_RUN, ok=True, why="settings null means every default"),
]

# numeric fields: wrong types, non-finite, negative, huge
NUMERIC_BAD = (-1, -1e308, 1e308, 10**30, 10**400, "two", "", " ", [3], {"v": 3}, None, True, 2.5, "1" * 200_000)
for api, name in (("/step", "max_new_tokens"), ("/run", "temperature"), ("/step", "top_p"), ("/step", "seed"),
                  ("/step", "draft_len"), ("/lattice_step", "gen_length"), ("/lattice_step", "block_size"),
                  ("/lattice_run", "steps"), ("/lattice_step", "threshold"), ("/lattice_compare", "seed")):
    base = dict(S if api in SPEC_RUNS else L)
    for bad in NUMERIC_BAD:
        if name in ("temperature", "threshold", "top_p") and bad == 2.5:
            bad = 7.5  # 2.5 is whole-number trouble only for the integer fields
        if name == "threshold" and bad == -1:
            bad = -0.5
        CASES.append(Case(api, ("Hi", {**base, name: bad}), _words(name)))
    for bad in (NAN, INF, -INF):
        CASES.append(Case(api, _full(api, "Hi", {**base, name: bad}), _words(name), via="http"))
CASES += [
    Case("/step", ("Hi", {"max_new_tokens": "2"}), OK_RUN, ok=True,
         why="a number written as text is still that number (CLI flags and form posts send text)"),
    Case("/step", ("Hi", {"max_new_tokens": 2.0}), OK_RUN, ok=True, why="2.0 is the whole number 2"),
]

# named options: methods, schedules, caches, switches, model ids
CASES += [
    Case("/step", ("Hi", {**S, "method": "nope"}), _words("method", "nope")),
    Case("/step", ("Hi", {**S, "method": 5}), _words("method")),
    Case("/step", ("Hi", {**S, "method": ["sps"]}), _words("method")),
    Case("/step", ("Hi", {**S, "method": "m" * 200_000}), _words("method")),
    Case("/step", ("Hi", {**S, "method": "sps", "window": 4}), _words("window")),
    Case("/step", ("Hi", {**S, "method": "static_tree", "preset": "bushy"}), _words("preset", "tree shape")),
    Case("/step", ("Hi", {**S, "method": "static_tree", "preset": 7}), _words("preset")),
    Case("/step", ("Hi", {**S, "method": "static_tree", "preset": "0;" * 20_000}), _words("preset")),
    Case("/step", ("Hi", {**S, "method": "retrieval", "corpus": {"path": "x"}}), _words("corpus")),
    Case("/step", ("Hi", {**S, "method": "retrieval", "corpus": "/no/such/corpus.txt"}), _words("corpus")),
    Case("/step", ("Hi", {**S, "method": "retrieval", "corpus": "/"}), _words("corpus")),
    Case("/step", ("Hi", {**S, "target": 5}), _words("target")),
    Case("/step", ("Hi", {**S, "target": "no-such-org/no-such-model"}), _words("no-such-org/no-such-model")),
    Case("/step", ("Hi", {**S, "target": "t" * 200_000}), _words("target", "cannot load")),
    Case("/step", ("Hi", {**S, "target": "/"}), _words("cannot load", "target")),
    # a directory spelled relatively: the message names it as sent, never as the server resolved it
    Case("/step", ("Hi", {**S, "target": "."}), _words("cannot load '.'")),
    Case("/step", ("Hi", {**S, "target": "~"}), _words("cannot load '~'")),
    Case("/step", ("Hi", {**S, "target": "a\x00b"}), _words("cannot load", "target")),
    Case("/step", ("Hi", {**S, "method": "sps", "draft": "."}), _words("cannot load '.'")),
    Case("/step", ("Hi", {**S, "method": "sps", "draft": "d" * 5000}), _words("draft")),
    Case("/step", ("Hi", {**S, "method": "medusa", "draft": "~"}), _words("~ has no config.json")),
    Case("/step", ("Hi", {**S, "method": "eagle", "draft": "h" * 300}), _words("head checkpoint")),
    Case("/lattice_step", ("Hi", {"method": "jacobi", "gen_length": 4, "model": "."}), _words("cannot load '.'")),
    Case("/lattice_step", ("Hi", {"method": "jacobi", "gen_length": 4, "model": "m" * 300}), _words("cannot load")),
    Case("/step", ("Hi", {**S, "method": "retrieval", "corpus": "."}), _words("corpus")),
    Case("/step", ("Hi", {**S, "method": "retrieval", "corpus": "c" * 9000}), _words("corpus")),
    Case("/step", ("Hi", {**S, "method": "retrieval", "corpus": "c" * 300}), _words("corpus")),
    Case("/step", ("Hi", {**S, "method": "sps", "draft": ["a"]}), _words("draft")),
    Case("/step", ("Hi", {**S, "method": "ar", "draft": "x"}), _words("draft")),
    Case("/lattice_step", ("Hi", {**L, "method": "nope"}), _words("method", "nope")),
    Case("/lattice_step", ("Hi", {**L, "method": 3}), _words("method")),
    Case("/lattice_step", ("Hi", {**L, "schedule": "nope"}), _words("schedule")),
    Case("/lattice_step", ("Hi", {**L, "schedule": None}), _words("schedule")),
    Case("/lattice_step", ("Hi", {**L, "cache": "maybe"}), _words("cache")),
    Case("/lattice_step", ("Hi", {**L, "adaptive_block": "maybe"}), _words("adaptive_block")),
    Case("/lattice_step", ("Hi", {**L, "adaptive_block": 2}), _words("adaptive_block")),
    Case("/lattice_step", ("Hi", {**L, "adaptive_block": "s" * 200_000}), _words("adaptive_block")),
    Case("/lattice_step", ("Hi", {**L, "window": 4}), _words("window")),
    Case("/lattice_step", ("Hi", {**L, "trust_remote_code": True}), _words("trust_remote_code")),
    Case("/lattice_step", ("Hi", {**L, "model": 5}), _words("model")),
    Case("/lattice_step", ("Hi", {**L, "model": "no-such-org/no-such-mdm"}), _words("no-such-org/no-such-mdm")),
    Case("/lattice_run", ("Hi", {"method": "jacobi", "gen_length": 4, "window": NAN}), _words("window"), via="http"),
    Case("/lattice_step", ("Hi", {**L, "steps": 10**30}), _words("steps"), via="http"),
    Case("/lattice_compare", ("Hi", {**L, "method": "jacobi"}), _words("diffusion", "method")),
    # the comparison's own fields
    Case("/lattice_compare", ("Hi", L, "nope", "threshold"), _words("schedule_a")),
    Case("/lattice_compare", ("Hi", L, "low_confidence", 5), _words("schedule_b")),
    Case("/lattice_compare", ("Hi", L, "low_confidence", None), _words("schedule_b")),
    Case("/lattice_compare", ("Hi", L, "low_confidence", "threshold", "nope"), _words("signal")),
    Case("/lattice_compare", ("Hi", L, "low_confidence", "threshold", ["entropy"]), _words("signal")),
    Case("/lattice_compare", ("Hi", L, "low_confidence", "threshold", NAN), _words("signal"), via="http"),
    Case("/lattice_compare", ("Hi", L, {"a": 1}, "threshold", "confidence"), _words("schedule_a"), via="http"),
    Case("/lattice_compare", ("Hi", L, "random", "margin", "entropy"), ("A: random",), ok=True,
         why="two known schedules and a known signal: the comparison runs"),
]

# the scrubber: a recorded step's index
SCRUB_BAD = (-1, 99, 1e308, 10**30, 10**400, 0.5, "abc", "", [0], {"step": 0}, None, True)
for api in ("/scrub", "/lattice_scrub"):
    CASES += [Case(api, (bad,), _words("step")) for bad in SCRUB_BAD]
    CASES += [Case(api, (bad,), _words("step"), via="http") for bad in (NAN, INF, -INF)]
    CASES += [
        Case(api, (0,), ("showing recorded step 0",), ok=True, why="step 0 of a recorded run"),
        Case(api, ("0",), ("showing recorded step 0",), ok=True, why="a whole number written as text"),
        Case(api, (0,), ("Nothing recorded",), ok=True, session="fresh",
             why="nothing to show yet is a status line, not an error: the slider is idle before a run"),
        Case(api, ("abc",), _words("step"), session="fresh"),
        Case(api, (NAN,), _words("step"), session="fresh", via="http"),
    ]

# the cell inspector: "step, position" typed in a box, so a bad one is a hint in the card, not an error popup
CELL_BAD = ("", "3", "a, b", "1e308, 0", "1e309, 0", "nan, 1", "inf, 2", "0, 10**30", "-1, 0", "0, -1",
            "0, 99999", "99999, 0", CONTROL, MB, None, 3, [0, 1], {"step": 0})
CASES += [Case("/lattice_cell", (bad,), ("cell", "step", "Step", "Position"), ok=True,
               why="the cell box is typed into: an unusable value is a hint in the card (an error popup "
                   "would interrupt every keystroke)") for bad in CELL_BAD]
CASES += [
    Case("/lattice_cell", ("0, 0",), ("sv-", "<"), ok=True, why="a real cell's top-k card"),
    Case("/lattice_cell", ("\ud800, 1",), ("cell",), ok=True, via="http", why="as above"),
    Case("/lattice_cell", ("0, 0",), ("Run or step first",), ok=True, session="fresh",
         why="before a run the card says what to do"),
]

# interventions on the diffusion canvas: /lattice_pin (prompt, settings, position, token), /lattice_remask (position)
PIN = ("Hi", L)
CASES += [Case("/lattice_pin", (*PIN, bad, " the"), _words("position")) for bad in ("abc", None, [1], 2.5, True, "")]
CASES += [Case("/lattice_remask", (bad,), _words("position")) for bad in ("abc", None, [1], 2.5, True, {"p": 1})]
CASES += [
    Case("/lattice_pin", (*PIN, 10**30, " the"), _words("off the canvas")),
    Case("/lattice_pin", (*PIN, -1, " the"), _words("off the canvas")),
    Case("/lattice_pin", (*PIN, NAN, " the"), _words("position"), via="http"),
    Case("/lattice_pin", (*PIN, 1, "hello world"), _words("2 tokens")),
    Case("/lattice_pin", (*PIN, 1, ""), _words("token to pin")),
    Case("/lattice_pin", (*PIN, 1, None), _words("token to pin")),
    Case("/lattice_pin", (*PIN, 1, 42), _words("token to pin")),
    Case("/lattice_pin", (*PIN, 1, ["the"]), _words("token to pin")),
    Case("/lattice_pin", (*PIN, 1, MB), _words("characters")),
    Case("/lattice_pin", (*PIN, 1, CONTROL), _words("tokens")),
    Case("/lattice_pin", (*PIN, 1, "\ud800"), _words("not valid text"), via="http"),
    Case("/lattice_pin", ("", L, 1, " the"), _words("prompt")),
    Case("/lattice_pin", ("Hi", "sps", 1, " the"), _words("settings")),
    Case("/lattice_pin", ("Hi", {"method": "jacobi", "gen_length": 8}, 1, " the"), _words("diffusion method")),
    Case("/lattice_pin", ("Hi", L), _words("position"), via="http"),
    Case("/lattice_pin", (*PIN, 1, " the"), ("Pinned ' the' at position 1", "pinned ' the' at position 1"), ok=True,
         why="a pin in the run"),
    Case("/lattice_remask", (1,), ("sent position 1",), ok=True, why="the pinned cell goes back to the mask"),
    Case("/lattice_remask", (99,), _words("off the canvas")),
    Case("/lattice_remask", (-1,), _words("off the canvas")),
    Case("/lattice_remask", (INF,), _words("position"), via="http"),
    Case("/lattice_remask", (), _words("position"), via="http"),
    Case("/lattice_remask", (3,), ("run or step first",), session="fresh"),
    Case("/lattice_pin", (*PIN, 3, " the"), ("for a new run",), ok=True, session="fresh",
         why="before a run a pin prepares one; Run starts it with the pin in place"),
]

# endpoints without inputs, before any run
CASES += [
    Case("/export", (), ("run or step",), session="fresh"),
    Case("/lattice_export", (), ("run or step",), session="fresh"),
    Case("/what_if", (), ("Run (or step)",), session="fresh"),
    Case("/pause", (), ("Nothing is running",), ok=True, session="fresh", why="pausing nothing is a no-op"),
    Case("/lattice_pause", (), ("Nothing is running",), ok=True, session="fresh", why="as above"),
    Case("/reset", (), ("Reset",), ok=True, session="fresh", why="resetting nothing is a no-op"),
    Case("/lattice_reset", (), ("Reset",), ok=True, session="fresh", why="as above"),
]

# /replay: a trace's JSON text in, its checked summary out (tests/test_trace_fuzz.py mutates traces at length)
def _trace_text(**change):
    from tests.test_trace import synthetic_trace

    doc = json.loads(synthetic_trace().to_json())
    doc.update(change)
    return json.dumps(doc)


CASES += [
    Case("/replay", ("",), ("trace",)),
    Case("/replay", ("{",), ("not valid JSON",)),
    Case("/replay", ("[]",), ("holds no traces",)),
    Case("/replay", ("/etc/passwd",), ("not valid JSON",)),
    Case("/replay", (_trace_text(steps="many"),), ("steps must be a list",)),
    Case("/replay", (_trace_text(prompt_ids=[1, -5]),), ("prompt_ids",)),
    Case("/replay", (json.dumps({"method": "ar"}),), ("missing",)),
    Case("/replay", (42,), ("trace",), via="http"),
    Case("/replay", (None,), ("trace",), via="http"),
    Case("/replay", (_trace_text(),), ("tau",), ok=True, why="a real trace: its summary"),
    Case("/replay", ("[" + _trace_text() + "]",), ("tau",), ok=True, why="the CLI's --trace list: one summary each"),
]

# opening recorded runs: a shipped example by its label (never a path), or an uploaded trace file
_EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "traces"
_FILE = {"meta": {"_type": "gradio.FileData"}}
CASES += [
    Case("/open_example", ("nope",), ("not in the list of choices",), session="fresh"),
    Case("/open_example", ("../../README.md",), ("not in the list of choices",), session="fresh"),
    Case("/open_example", (None,), ("No example trace",), session="fresh"),
    Case("/lattice_open_example", ("x",), ("not in the list of choices",), session="fresh"),
    Case("/lattice_open_example", ("Jacobi decoding of the embedded model (greedy): the AR model fills a lattice",),
         ("Replaying",), ok=True, session="fresh", why="a shipped example"),
    Case("/open_trace", (None,), ("No file chosen",), ok=True, session="fresh", why="no file: a hint, no error"),
    Case("/open_trace", ({"path": "/etc/passwd", **_FILE},), ("Invalid file type",), session="fresh"),
    Case("/open_trace", ({"path": "/etc/passwd.json", **_FILE},), ("passwd", "allowed", "not", "Invalid"),
         session="fresh", via="http"),
    Case("/lattice_open_trace", (handle_file(str(_EXAMPLES / "eagle-sampled.json")),),
         ("open it in the Speculative tab",), session="fresh"),
    Case("/lesson_1", (), ("lesson",), ok=True, session="fresh", why="a lesson's run takes no input"),
]
# the Compare tab: /compare takes prompt and lanes (a list of settings objects); a bad lane is named
_LANES = [{"method": "ar", "max_new_tokens": 2}, {"method": "prompt_lookup", "max_new_tokens": 2}]
CASES += [
    Case("/compare", ("Hi", [{"method": "ar"}]), ("2 to 4 lanes",)),
    Case("/compare", ("Hi", [{"method": "ar"}] * 5), ("2 to 4 lanes",)),
    Case("/compare", ("Hi", "ar"), ("lanes must be a list",)),
    Case("/compare", ("Hi", None), ("lanes must be a list",)),
    Case("/compare", ("Hi", [{"method": "ar"}, {"method": "warp"}]), ("lane 2",)),
    Case("/compare", ("Hi", [{"method": "ar"}, {"method": "auto", "budget": NAN}]), ("lane 2",), via="http"),
    Case("/compare", ("Hi", [{"method": "ar"}, 7]), ("lane 2",)),
    Case("/compare", ("", _LANES), _words("prompt")),
    Case("/compare", (None, _LANES), _words("prompt"), via="http"),
    Case("/compare_step", ("Hi", [{"method": "ar"}, {"method": "jacobi", "window": 0}]), ("lane 2",)),
    Case("/compare_step", ("Hi", [{"method": "ar", "kind": "lattice"}, {"method": "ar"}]), ("lane 1",)),
    Case("/compare_scrub", ("abc",), _words("step"), session="fresh"),
    Case("/compare_scrub", (0,), ("Nothing recorded",), ok=True, session="fresh", why="nothing to show yet"),
    Case("/compare_scrub", (NAN,), _words("step"), via="http"),
    Case("/compare_export", (), ("run or step",), session="fresh"),
    Case("/compare_pause", (), ("Nothing is running",), ok=True, session="fresh", why="pausing nothing is a no-op"),
    Case("/compare_reset", (), ("Reset",), ok=True, session="fresh", why="resetting nothing is a no-op"),
    Case("/compare_open", (None,), ("No file",), ok=True, session="fresh", why="no file: a hint, no error"),
    Case("/compare_open", (handle_file(str(_EXAMPLES / "eagle-sampled.json")),), ("not a comparison file",),
         session="fresh"),
    Case("/compare_open", ({"path": "/etc/passwd", **_FILE},), ("Invalid file type",), session="fresh"),
]
# the Benchmark panel: /benchmark takes methods, categories, per_category and max_new_tokens
_B = (["prompt_lookup"], ["math"], 1, 2)
CASES += [
    Case("/benchmark", (["hydra"], *_B[1:]), ("unknown method 'hydra'",)),
    Case("/benchmark", (["m" * 200_000], *_B[1:]), ("unknown method",)),
    Case("/benchmark", ([7], *_B[1:]), ("method name or a settings dict",)),
    Case("/benchmark", ([{"method": ["sps"]}], *_B[1:]), ("unknown method",)),
    Case("/benchmark", ([{"method": "sps", "draft_len": 999}], *_B[1:]), ("draft_len",)),
    Case("/benchmark", (["eagle:budget"], *_B[1:]), ("knob=value",)),
    Case("/benchmark", (42, *_B[1:]), ("methods must be a list",)),
    Case("/benchmark", (_B[0], ["poetry"], 1, 2), ("unknown category 'poetry'",)),
    Case("/benchmark", (_B[0], [{"a": 1}], 1, 2), ("unknown category",)),
    Case("/benchmark", (_B[0], 42, 1, 2), ("categories must be a list",)),
    Case("/benchmark", (_B[0], ["math"], 0, 2), ("per_category=0 is out of range",)),
    Case("/benchmark", (_B[0], ["math"], 10**9, 2), ("per_category=1000000000 is out of range",)),
    Case("/benchmark", (_B[0], ["math"], "lots", 2), ("per_category must be a whole number",)),
    Case("/benchmark", (_B[0], ["math"], NAN, 2), ("per_category must be a whole number",), via="http"),
    Case("/benchmark", (_B[0], ["math"], INF, 2), ("per_category must be a whole number",), via="http"),
    Case("/benchmark", (_B[0], ["math"], 1, 0), ("max_new_tokens",)),
    Case("/benchmark", (_B[0], ["math"], 1, 10**9), ("max_new_tokens",)),
    Case("/benchmark", (_B[0], ["math"], 1, None), ("max_new_tokens",), via="http"),
    Case("/benchmark", (), ("methods",), via="http", session="fresh"),
    Case("/benchmark_cancel", (), ("No benchmark is running",), ok=True, session="fresh",
         why="cancelling nothing is a no-op"),
]
# Intervene: /intervene takes edit, step, node, candidate, token; /branch a branch's name. The shared session's
# run is a 2-token default run, whose step 0 may or may not have drafted
_EDIT = ("node 0 is the root", "drafted nothing")
CASES += [
    Case("/intervene", ("cut", 0, 1, None, ""), ("nothing is recorded",), session="fresh"),
    Case("/intervene", ("replace", 0, 0, None, "#5"), _EDIT),
    Case("/intervene", ("replace", 99, 1, None, "#5"), ("step 99 is not recorded",)),
    Case("/intervene", ("replace", NAN, 1, None, "#5"), ("whole number",), via="http"),
    Case("/intervene", ("replace", 0, "one", None, "#5"), ("whole number",), via="http"),
    Case("/intervene", ("replace", 0, 10**12, None, "#5"), ("no drafted node", "drafted nothing")),
    Case("/intervene", ("replace", 0, 1, None, MB[:5000]), ("one token is a word", "drafted nothing")),
    # the candidate dropdown only takes the ids it offers (Gradio checks it against the session's choices)
    Case("/intervene", ("replace", 0, 1, "../../etc/passwd", ""), ("not in the list of choices",)),
    Case("/intervene", ("swap", 0, 1, None, "#5"), ("not in the list of choices",), via="http"),
    Case("/branch", ("nope",), ("not in the list of choices", "no branch called")),
]
# /lesson_2 … /lesson_9 are the same handler as /lesson_1 with another lesson's settings, and take no input
SAME_AS_COVERED = {f"/lesson_{i}" for i in range(2, 10)}

# raw HTTP shapes no client sends: missing inputs, extra inputs
CASES += [
    Case("/step", (), _words("prompt"), via="http", session="fresh"),
    Case("/lattice_compare", (), _words("prompt"), via="http", session="fresh"),
    Case("/scrub", (), _words("step"), via="http"),
    Case("/lattice_cell", (), ("cell",), via="http"),
    Case("/lattice_compare", ("Hi", L), _words("schedule_a"), via="http"),
    Case("/run", ("Hi",), _words("settings"), via="http"),
    Case("/run", ("Hi", S, "extra"), _words("settings"), via="http"),
    Case("/pause", (1, 2, 3), ("Nothing is running",), ok=True, via="http", session="fresh",
         why="extra inputs are ignored (Gradio's rule for every endpoint)"),
]


# ---------------------------------------------------------------------------------------------------------------
# sending


def _http(url: str, api: str, args: tuple, session_hash: str) -> tuple[bool, object]:
    """Call an endpoint through Gradio's HTTP API: (succeeded, output data or error message)."""
    base = url.rstrip("/") + "/gradio_api/call/" + api.lstrip("/")
    body = json.dumps({"data": list(args), "session_hash": session_hash}, allow_nan=True)  # NaN as JSON's NaN
    with httpx.Client(timeout=300) as http:
        r = http.post(base, content=body.encode(), headers={"content-type": "application/json"})
        if r.status_code != 200:
            return False, r.text
        event_id = r.json()["event_id"]
        event, data = None, None
        with http.stream("GET", f"{base}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    data = json.loads(line.split(":", 1)[1])
                    break
    if event == "complete":
        return True, data
    if isinstance(data, dict):  # Gradio's error payload: {"error": message, ...}
        data = data.get("error")
    return False, data


def _leaks(message: str, sent) -> list:
    """Server details in a message that the request did not itself carry."""
    sent_text = json.dumps(sent, default=repr, ensure_ascii=False)
    env = [v for v in os.environ.values() if len(v) >= 8]
    return [m for m in (*SERVER_MARKERS, *env) if m in message and m not in sent_text]


@dataclass
class Tally:
    sent: int = 0
    clear: int = 0
    accepted: int = 0
    unclear: list = field(default_factory=list)


TALLY = Tally()


@pytest.fixture(scope="module")
def shared(app_url):
    """One client whose session has a recorded run in each tab (scrub and cell have something to show)."""
    c = Client(app_url, verbose=False)
    assert "Step 0" in c.predict("Hi", S, api_name="/step")[0]
    assert "Step 0" in c.predict("Hi", L, api_name="/lattice_step")[0]
    return c


def _send(case: Case, app_url: str, shared: Client) -> tuple[bool, object]:
    if case.via == "http":
        session = shared.session_hash if case.session == "shared" else uuid.uuid4().hex
        return _http(app_url, case.api, case.args, session)
    client = shared if case.session == "shared" else Client(app_url, verbose=False)
    try:
        return True, client.predict(*case.args, api_name=case.api)
    except AppError as err:
        return False, err.message
    # anything else (the client itself refusing) is a failure of the test table, and surfaces as one


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, app_url, shared):
    TALLY.sent += 1
    succeeded, answer = _send(case, app_url, shared)
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str, ensure_ascii=False)
    if case.ok:
        assert succeeded, f"legitimate input refused ({case.why}): {text[:300]}"
        assert any(w in text for w in case.expect), f"expected one of {case.expect} in {text[:300]}"
        TALLY.accepted += 1
        return
    problems = []
    if succeeded:
        problems.append("accepted")
    elif not isinstance(answer, str) or answer.strip() in ("", "Error", "None", "null") or GRADIO_BARE in answer:
        problems.append(f"bare message {answer!r}")
    else:
        if not any(w.lower() in answer.lower() for w in case.expect):
            problems.append(f"does not name {case.expect}")
        if len(answer) > MAX_MESSAGE:
            problems.append(f"{len(answer):,} characters long")
        leaks = _leaks(answer, case.args)
        if leaks:
            problems.append(f"leaks {leaks}")
    if problems:
        TALLY.unclear.append((case.id, problems, text[:160]))
    assert not problems, f"{problems}: {text[:400]}"
    TALLY.clear += 1


def test_the_page_s_own_events_answer_raw_http_clearly(app_url):
    """The page's plumbing (collecting the settings, showing knobs, loading an example, the Reset's cancel) is
    hidden from the API docs but reachable by raw HTTP: junk there gets a message too (or a harmless answer)."""
    deps = Client(app_url, verbose=False).config["dependencies"]
    hidden = [d for d in deps if d.get("api_visibility") != "public" and isinstance(d.get("api_name"), str)]
    assert any(d["api_name"] == "load_example" for d in hidden) and len(hidden) > 5
    problems = []
    for dep in hidden:
        n = len(dep.get("inputs", []))
        for data in ([], ["junk"] * n, [{"a": NAN}] * n, [99] * n, [None] * n):
            TALLY.sent += 1
            succeeded, answer = _http(app_url, "/" + dep["api_name"], tuple(data), uuid.uuid4().hex)
            if succeeded:
                TALLY.accepted += 1
                continue
            text = answer if isinstance(answer, str) else repr(answer)
            if not isinstance(answer, str) or not answer.strip() or answer.strip() in ("Error", "None") or \
                    GRADIO_BARE in answer or len(answer) > MAX_MESSAGE or _leaks(answer, data):
                problems.append((dep["api_name"], data, text[:200]))
            else:
                TALLY.clear += 1
    assert not problems, problems


def test_server_still_serves_after_the_sweep(app_url, shared):
    """After every bad input: a normal Step in a new session and in the swept one."""
    for c in (Client(app_url, verbose=False), shared):
        status = c.predict("List three colours.", {"max_new_tokens": 2}, api_name="/step")[0]
        assert "Step 0" in status, status
    refused = TALLY.sent - TALLY.accepted
    print(f"\nbad-input sweep: {TALLY.sent} inputs sent; {TALLY.accepted} legitimately accepted; "
          f"{TALLY.clear} of {refused} refused with a clear message")
    for case_id, problems, text in TALLY.unclear:
        print("  unclear:", case_id, problems, repr(text))


def test_the_table_covers_every_endpoint(app_url):
    """A new endpoint joins the sweep: every named API endpoint has cases."""
    info = Client(app_url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
    covered = {c.api for c in CASES} | SAME_AS_COVERED
    assert set(info) <= covered, sorted(set(info) - covered)
