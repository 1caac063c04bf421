"""Load test: N simulated students, each its own gradio_client session, stepping and running their own prompts.

    .venv/bin/python scripts/load_test.py                      # starts the app itself, 30 clients
    .venv/bin/python scripts/load_test.py --url http://host:7860/ [--pid PID]
    .venv/bin/python scripts/load_test.py --clients 3 --rounds 2 --steps 1 --tokens 4 --json out/load.json

Each client, for each round: sends its own prompt ("Student 17, round 2: …"), does --steps /step calls, one /run
to the end, then /reset. Reported: jobs submitted / finished / failed (errors grouped by message), client-side
latency p50/p95 of /step and /run, the longest single wait of any session, wall time, the server's memory
(VmRSS of the app process and its children) after 5 and after 40 completed runs and at the end, and cross-talk:
every answer's run summary must belong to the session that asked (its prompt, its settings, a step count that
grows by one per /step and starts again after /reset). Exit status 1 when any job failed or any cross-talk was
seen, or the load was interrupted (Ctrl-C or SIGTERM: the figures so far are still reported and the app stopped);
2 when the app could not be started.

Without --url the app is started here as a subprocess (`python app.py` on a free port of 127.0.0.1), so its
memory can be read from /proc; with --url give --pid to read the memory of an app started elsewhere.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specviz.config import EMBEDDED_MODEL_ID  # noqa: E402  (a light module: no torch)


def embedded_tokenizer() -> Path | None:
    """The tokenizer.json of the app's converted embedded model (cache_dir() / EMBEDDED_CACHE_NAME, its name
    versioned; looked up here by pattern so this script does not import torch): the newest; None if absent."""
    cache = Path(os.environ.get("SPECVIZ_CACHE", Path.home() / ".cache" / "specviz"))
    found = sorted((p for p in cache.glob("smollm2-135m-instruct*/tokenizer.json") if ".tmp" not in p.parent.name),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


RSS_MARKS = (5, 40)  # completed /run calls at which the server's memory is sampled


def student_prompt(client: int, round_no: int) -> str:
    """Each client's own prompt, different in every round too."""
    return f"Student {client}, round {round_no}: write one sentence about the number {client}."


# cross-talk -------------------------------------------------------------------------------------------------
class PromptOwners:
    """Which (client, round) each prompt's token ids belong to, across all sessions.

    Every (client, round) sends its own prompt, so each token-id sequence must come back to one (client, round)
    only, and every answer of a round must carry the same ids. This holds without any tokenizer; with one
    (`decode`), the ids must also decode to text containing the prompt that was sent."""

    def __init__(self, decode=None):
        self.decode = decode
        self._owner: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def claim(self, ids: tuple, who: tuple) -> tuple | None:
        """Record `who` as the owner of `ids`; returns the other owner when someone else already has them."""
        with self._lock:
            owner = self._owner.setdefault(ids, who)
        return None if owner == who else owner


class SessionChecker:
    """Checks that every answer one client gets belongs to its own session; returns violations as text."""

    def __init__(self, client: int, owners: PromptOwners, tokens: int, method: str | None = None):
        self.client, self.owners, self.tokens, self.method = client, owners, tokens, method
        self.round = None
        self.prompt = None
        self.ids = None  # the prompt ids of this round's answers
        self.steps = None  # the step count of the last answer (None: no run yet, or unknown)
        self.finished = False
        self.known = True  # False after a failed call: the run's step count is unknown until the round ends

    def new_round(self, round_no: int, prompt: str) -> None:
        self.round, self.prompt = round_no, prompt
        self.ids, self.steps, self.finished, self.known = None, None, False, True

    def failed(self) -> None:
        self.known = False

    def _where(self, kind: str) -> str:
        return f"client {self.client} round {self.round} /{kind}"

    def _summary(self, kind: str, summary) -> list[str]:
        """What every step or run answer must satisfy: a summary of this client's prompt and settings."""
        where = self._where(kind)
        if not isinstance(summary, dict):
            return [f"{where}: no run summary in the answer (got {type(summary).__name__})"]
        bad = []
        if "prompt" in summary and summary["prompt"] != self.prompt:
            bad.append(f"{where}: summary prompt {summary['prompt']!r} is not the prompt sent {self.prompt!r}")
        ids = summary.get("prompt_ids")
        if not isinstance(ids, list) or not ids:
            bad.append(f"{where}: summary has no prompt_ids")
        else:
            ids = tuple(ids)
            other = self.owners.claim(ids, (self.client, self.round))
            if other is not None:
                bad.append(f"{where}: got the prompt of client {other[0]} round {other[1]}")
            if self.ids is not None and ids != self.ids:
                bad.append(f"{where}: prompt ids changed within the round")
            self.ids = self.ids or ids
            decode = self.owners.decode
            if decode is not None and summary.get("target") == EMBEDDED_MODEL_ID and "prompt" not in summary:
                text = decode(list(ids))
                if self.prompt not in text:
                    bad.append(f"{where}: summary prompt decodes to {text[-120:]!r}, not the prompt sent "
                               f"{self.prompt!r}")
        settings = summary.get("settings") or {}
        if settings.get("max_new_tokens") != self.tokens:
            bad.append(f"{where}: summary max_new_tokens={settings.get('max_new_tokens')!r}, sent {self.tokens}")
        if self.method and summary.get("method") != self.method:
            bad.append(f"{where}: summary method={summary.get('method')!r}, sent {self.method!r}")
        if len(summary.get("output_ids") or []) > self.tokens:
            bad.append(f"{where}: {len(summary['output_ids'])} output tokens, more than the {self.tokens} asked")
        return bad

    def _steps(self, summary) -> int | None:
        try:
            return int(summary["summary"]["steps"])
        except (KeyError, TypeError, ValueError):
            return None

    def step(self, summary) -> list[str]:
        bad = self._summary("step", summary)
        if not isinstance(summary, dict):
            self.known = False
            return bad
        n = self._steps(summary)
        # a step continues this session's run (one more step), or starts a new one when there is none / it ended
        want = 1 if self.steps is None or self.finished else self.steps + 1
        if n is None:
            bad.append(f"{self._where('step')}: summary has no step count")
        elif self.known and n != want:
            bad.append(f"{self._where('step')}: step count {n}, expected {want}")
        self.steps, self.finished = n, summary.get("finished") is not None
        return bad

    def run(self, summary) -> list[str]:
        bad = self._summary("run", summary)
        if not isinstance(summary, dict):
            self.known = False
            return bad
        n = self._steps(summary)
        # a run continues the stepped run to its end: more steps than before (or a new run if that one ended)
        least = 1 if self.steps is None or self.finished else self.steps + 1
        if n is None:
            bad.append(f"{self._where('run')}: summary has no step count")
        elif self.known and n < least:
            bad.append(f"{self._where('run')}: step count {n}, expected at least {least}")
        if summary.get("finished") is None:
            bad.append(f"{self._where('run')}: the run did not finish")
        self.steps, self.finished = n, summary.get("finished") is not None
        return bad

    def reset(self, outputs) -> list[str]:
        summary = outputs[-1] if isinstance(outputs, (tuple, list)) and outputs else outputs
        self.steps, self.finished, self.ids = None, False, None
        if summary is not None:
            return [f"{self._where('reset')}: reset answered with a run summary ({type(summary).__name__})"]
        return []


def load_decoder(path: Path | None):
    """`decode(ids) -> text` from a tokenizer.json, or None when there is none."""
    if path is None or not Path(path).exists():
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    return lambda ids: tok.decode(ids, skip_special_tokens=False)


# server memory ------------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry))
    return kids


def rss_mib(pid: int | None) -> float | None:
    """VmRSS of `pid` and all its descendants, in MiB; None when unreadable."""
    if pid is None:
        return None
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            if p == pid:
                return None
            continue
        todo.extend(_children(p))
    return total / 1024


# the app --------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except Exception:
        return False


class App:
    """The app as a subprocess of this script (its own process group), on a free local port."""

    def __init__(self, python: str, timeout: float, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="specviz-load-app-", suffix=".log", delete=False)
        environ = {**os.environ, **(env or {}), "SPECVIZ_PORT": str(self.port), "SPECVIZ_HOST": "127.0.0.1"}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([python, "app.py"], cwd=ROOT, env=environ, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        while not answers(self.url):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with status {self.proc.returncode}:\n{self.tail()}")
            if time.perf_counter() - t0 > timeout:
                self.stop()
                raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.5)
        self.startup_s = time.perf_counter() - t0

    def tail(self, n: int = 3000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self.log.close()


# the load --------------------------------------------------------------------------------------------------------
@dataclass
class Call:
    client: int
    round: int
    kind: str  # step / run / reset
    latency_s: float
    ok: bool
    error: str = ""


@dataclass
class Totals:
    calls: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    connect_errors: list = field(default_factory=list)
    runs_done: int = 0
    in_flight: int = 0  # calls submitted and not answered yet
    rss_at: dict = field(default_factory=dict)  # completed runs -> MiB
    lock: threading.Lock = field(default_factory=threading.Lock)


def error_text(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def student(i: int, url: str, args, owners: PromptOwners, totals: Totals, pid: int | None, start: threading.Event):
    from gradio_client import Client

    start.wait()
    try:
        client = Client(url, verbose=False)
    except Exception as err:  # noqa: BLE001 - reported, grouped by message
        with totals.lock:
            totals.connect_errors.append(f"client {i}: {error_text(err)}")
        return
    settings = {"max_new_tokens": args.tokens, **({"method": args.method} if args.method else {})}
    check = SessionChecker(i, owners, args.tokens, args.method)

    def call(kind: str, round_no: int, **inputs):
        with totals.lock:
            totals.in_flight += 1
        t0 = time.perf_counter()
        try:
            out = client.submit(**inputs, api_name=f"/{kind}").result(timeout=args.call_timeout)
        except Exception as err:  # noqa: BLE001
            record = Call(i, round_no, kind, time.perf_counter() - t0, False, error_text(err))
            check.failed()
            with totals.lock:
                totals.in_flight -= 1
                totals.calls.append(record)
            return
        latency = time.perf_counter() - t0
        if kind == "reset":
            bad = check.reset(out)
        else:
            summary = out[-1] if isinstance(out, (tuple, list)) and out else out
            bad = check.step(summary) if kind == "step" else check.run(summary)
        with totals.lock:
            totals.in_flight -= 1
            totals.calls.append(Call(i, round_no, kind, latency, True))
            totals.violations.extend(bad)
            if kind == "run":
                totals.runs_done += 1
                if totals.runs_done in RSS_MARKS:
                    totals.rss_at[totals.runs_done] = rss_mib(pid)

    for r in range(1, args.rounds + 1):
        prompt = student_prompt(i, r)
        check.new_round(r, prompt)
        for _ in range(args.steps):
            call("step", r, prompt=prompt, settings=settings)
        call("run", r, prompt=prompt, settings=settings)
        call("reset", r)


def percentile(values: list, q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def figures(totals: Totals, args, wall_s: float, rss_end, rss_peak, prompt_check: str,
            interrupted: bool = False) -> dict:
    with totals.lock:  # a snapshot: after an interruption the students may still be answering
        calls, violations, connect_errors = list(totals.calls), list(totals.violations), list(totals.connect_errors)
        in_flight, runs_done, rss_at = totals.in_flight, totals.runs_done, dict(totals.rss_at)
    ok = [c for c in calls if c.ok]
    failed = [c for c in calls if not c.ok]

    def lat(kind):
        xs = [c.latency_s for c in ok if c.kind == kind]
        return {"n": len(xs), "p50_s": percentile(xs, 50), "p95_s": percentile(xs, 95), "max_s": max(xs, default=None)}

    longest = {}
    for c in calls:
        if c.client not in longest or c.latency_s > longest[c.client].latency_s:
            longest[c.client] = c
    worst = max(longest.values(), key=lambda c: c.latency_s, default=None)
    errors = Counter(f"/{c.kind}: {c.error}" for c in failed)
    errors.update(f"connect: {e.split(': ', 1)[1]}" for e in connect_errors)
    if in_flight:
        errors[f"unanswered when {'interrupted' if interrupted else 'finished'}"] = in_flight
    return {
        "interrupted": interrupted,
        "clients": args.clients,
        "clients_connected": args.clients - len(connect_errors),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "max_new_tokens": args.tokens,
        "method": args.method or "default",
        "jobs_planned": args.clients * args.rounds * (args.steps + 2),
        "jobs_submitted": len(calls) + in_flight,
        "jobs_ok": len(ok),
        "jobs_failed": len(failed) + len(connect_errors) + in_flight,
        "errors": dict(errors.most_common()),
        "step_latency": lat("step"),
        "run_latency": lat("run"),
        "reset_latency": lat("reset"),
        "longest_session_wait_s": worst.latency_s if worst else None,
        "longest_session_wait": (f"client {worst.client} round {worst.round} /{worst.kind}" if worst else None),
        "wall_s": wall_s,
        "runs_completed": runs_done,
        "rss_mib": {"after_5_runs": rss_at.get(5), "after_40_runs": rss_at.get(40),
                    "end": rss_end, "peak": rss_peak},
        "prompt_check": prompt_check,
        "cross_talk_violations": len(violations),
        "cross_talk_examples": violations[:20],
    }


def table(f: dict) -> str:
    def s(x, unit=" s"):
        return "n/a" if x is None else f"{x:.2f}{unit}"

    rows = [
        ("clients (connected)", f"{f['clients']} ({f['clients_connected']})"),
        ("rounds × (steps + run + reset)", f"{f['rounds']} × ({f['steps_per_round']} + 1 + 1), "
                                           f"{f['max_new_tokens']} tokens, method {f['method']}"),
        ("jobs submitted (planned)", f"{f['jobs_submitted']} ({f['jobs_planned']})"),
        ("jobs finished ok", f["jobs_ok"]),
        ("jobs failed", f["jobs_failed"]),
        ("/step latency p50 / p95", f"{s(f['step_latency']['p50_s'])} / {s(f['step_latency']['p95_s'])}"
                                    f"  (n={f['step_latency']['n']})"),
        ("/run latency p50 / p95", f"{s(f['run_latency']['p50_s'])} / {s(f['run_latency']['p95_s'])}"
                                   f"  (n={f['run_latency']['n']})"),
        ("/reset latency p50 / p95", f"{s(f['reset_latency']['p50_s'])} / {s(f['reset_latency']['p95_s'])}"),
        ("longest wait of one session", f"{s(f['longest_session_wait_s'])}  ({f['longest_session_wait']})"),
        ("total wall time", s(f["wall_s"])),
        ("server RSS after 5 runs", s(f["rss_mib"]["after_5_runs"], " MiB")),
        ("server RSS after 40 runs", s(f["rss_mib"]["after_40_runs"], " MiB")),
        ("server RSS at the end (peak)", f"{s(f['rss_mib']['end'], ' MiB')} ({s(f['rss_mib']['peak'], ' MiB')})"),
        ("cross-talk violations", f"{f['cross_talk_violations']}  (prompt check: {f['prompt_check']})"),
    ]
    width = max(len(k) for k, _ in rows)
    out = ["INTERRUPTED: the figures so far"] if f["interrupted"] else []
    out += [f"{k:<{width}}  {v}" for k, v in rows]
    for msg, n in f["errors"].items():
        out.append(f"  error ×{n}: {msg}")
    for v in f["cross_talk_examples"]:
        out.append(f"  cross-talk: {v}")
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running app (default: start one here as a subprocess)")
    p.add_argument("--pid", type=int, help="with --url: the app's process id, to read its memory")
    p.add_argument("--clients", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="/step calls per round before the /run")
    p.add_argument("--tokens", type=int, default=16, help="max_new_tokens")
    p.add_argument("--method", default=None, help="decoding method (default: the app's default)")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--call-timeout", type=float, default=1200, help="seconds one call may take")
    p.add_argument("--startup-timeout", type=float, default=600, help="seconds the app may take to answer")
    p.add_argument("--progress", type=float, default=30, help="seconds between progress lines (0: none)")
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs app.py")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="tokenizer.json to decode the summaries' prompt ids (default: the embedded model's cache)")
    return p.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    # a SIGTERM (e.g. from `timeout`) stops the load like Ctrl-C: the figures so far are reported, the app stopped
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    app = None
    if args.url:
        url, pid = args.url, args.pid
    else:
        print("starting the app…", flush=True)
        try:
            app = App(args.python, args.startup_timeout)
        except (RuntimeError, KeyboardInterrupt) as err:
            print(f"could not start the app: {err}", file=sys.stderr)
            return 2
        url, pid = app.url, app.pid
        print(f"app answering on {url} (pid {pid}) after {app.startup_s:.1f} s; RSS {rss_mib(pid):.0f} MiB",
              flush=True)
    interrupted = False
    try:
        # after the app started: it writes the cache on first use
        decode = load_decoder(args.tokenizer or embedded_tokenizer())
        prompt_check = "decoded prompt ids + one owner per prompt" if decode else "one owner per prompt (no tokenizer)"
        owners = PromptOwners(decode)
        totals = Totals()
        peak = [rss_mib(pid)]
        done = threading.Event()
        planned = args.clients * args.rounds * (args.steps + 2)
        t0 = time.perf_counter()

        def watch():
            last = time.perf_counter()
            while not done.wait(0.5):
                r = rss_mib(pid)
                if r is not None and (peak[0] is None or r > peak[0]):
                    peak[0] = r
                if args.progress and time.perf_counter() - last >= args.progress:
                    last = time.perf_counter()
                    with totals.lock:
                        ok = sum(c.ok for c in totals.calls)
                        line = (f"[{last - t0:6.0f} s] runs {totals.runs_done}/{args.clients * args.rounds}, "
                                f"jobs ok {ok}, failed {len(totals.calls) - ok}, in flight {totals.in_flight} "
                                f"of {planned}; cross-talk {len(totals.violations)}; server RSS "
                                + ("n/a" if r is None else f"{r:.0f} MiB"))
                    print(line, flush=True)

        watcher = threading.Thread(target=watch, daemon=True)
        start = threading.Event()
        threads = [threading.Thread(target=student, args=(i, url, args, owners, totals, pid, start), daemon=True)
                   for i in range(1, args.clients + 1)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        watcher.start()
        start.set()
        try:
            for t in threads:
                t.join()
        except KeyboardInterrupt:
            interrupted = True
        wall = time.perf_counter() - t0
        done.set()
        watcher.join()
        rss_end = rss_mib(pid)
        rss_peak = max((r for r in (peak[0], rss_end) if r is not None), default=None)
        f = figures(totals, args, wall, rss_end, rss_peak, prompt_check, interrupted)
    finally:
        if app is not None:
            app.stop()
    print(table(f), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(f, indent=2))
    return 1 if interrupted or f["jobs_failed"] or f["cross_talk_violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
