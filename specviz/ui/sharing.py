"""Sharing one model fairly between the sessions of a server.

Every piece of model work (preparing a run, one decoding step, one step of the AR baseline) is a job
that takes a *turn*: one model thread runs the jobs first come, first served, one at a time, and a
session joins the back of the line again for each step, so with N sessions running, a session's next
step waits for at most about N − 1 steps of others, never for their whole runs. A waiting session is
told its place in line.

`Limits` holds the per-server and per-session bounds: runs in flight (one per session, a cap for the
server), steps per minute per session, and a time limit per request. They come from the environment
(`Limits.from_env`) with stricter defaults on a public server.
"""
from __future__ import annotations

import contextvars
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass(eq=False)
class Job:
    """One piece of model work of one session, in line or done."""

    owner: str  # the session it belongs to
    what: str  # what it does, shown to those waiting behind it ("a step of sps")
    work: object  # the function to run
    context: contextvars.Context = None  # the requester's context (a Space's GPU lease reads the request)
    joined: float = 0.0
    started: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None


class Turns:
    """First-come, first-served turns on the shared model, run by one model thread.

    Every piece of model work (a step, preparing a run) is a job in one line, and the model thread runs
    the jobs one at a time in arrival order. A session has at most one job in line, and joins the back
    again for its next step, so turns go round the sessions. Running all model work on one thread also
    keeps torch to one thread pool: requests served from many threads would each start their own
    OpenMP team, and on a small CPU the idle teams' spinning slows the one that works."""

    def __init__(self):
        self._cond = threading.Condition()
        self._line: deque = deque()
        self._running: Job | None = None
        self._thread: threading.Thread | None = None
        self.granted = 0  # jobs started so far (for tests)

    def submit(self, owner: str, what: str, work) -> Job:
        """Put `work()` in line; `wait` for it, then read `outcome()`."""
        job = Job(owner, what, work, contextvars.copy_context(), time.monotonic())
        with self._cond:
            self._line.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="specviz-model", daemon=True)
                self._thread.start()
            self._cond.notify()
        return job

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._line:
                    self._cond.wait()
                job = self._line.popleft()
                job.started, self._running = True, job
                self.granted += 1
            try:
                job.result = job.context.run(job.work)
            except BaseException as err:  # noqa: BLE001 - handed to the requester, who raises it
                job.error = err
            finally:
                with self._cond:
                    self._running = None
                job.done.set()

    @staticmethod
    def wait(job: Job, timeout: float | None = None) -> bool:
        """Whether `job` is done, waiting up to `timeout` seconds."""
        return job.done.wait(timeout)

    @staticmethod
    def outcome(job: Job):
        """A done job's result, or its error raised here, in the requester's thread."""
        if job.error is not None:
            raise job.error
        return job.result

    def cancel(self, job: Job) -> bool:
        """Take a job that has not started out of line (its client left, or its session paused)."""
        with self._cond:
            if job.started:
                return False
            try:
                self._line.remove(job)
            except ValueError:
                return False
            return True

    def run(self, owner: str, what: str, work):
        """Blocking form, for handlers that do not stream: wait in line, run, return the result."""
        job = self.submit(owner, what, work)
        try:
            job.done.wait()
        except BaseException:
            self.cancel(job)
            raise
        return self.outcome(job)

    def ahead(self, job: Job) -> tuple:
        """(how many jobs will run before `job`, what the model is doing now or '')."""
        with self._cond:
            try:
                before = list(self._line).index(job)
            except ValueError:
                before = 0
            busy = self._running
            return before + (busy is not None and busy is not job), (busy.what if busy is not None else "")

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._line)


def _env_number(env, name: str, default: float | None) -> float | None:
    value = env.get(name, "").strip()
    if not value:
        return default
    number = float(value)
    return None if number <= 0 else number


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one client from holding the server. None means no limit."""

    max_active: int | None = 48  # runs / steps in flight on the whole server
    steps_per_minute: float | None = None  # per session
    request_s: float | None = None  # wall time of one Run request, waits included
    # how often a waiting request updates its place in line: each update re-sends the request's outputs
    # (Gradio diffs them against the last ones); one a second cost 10 sessions 7% of the throughput
    wait_report_s: float = 2.5

    @classmethod
    def from_env(cls, public: bool, environ=None) -> "Limits":
        """SPECVIZ_MAX_ACTIVE, SPECVIZ_STEPS_PER_MIN and SPECVIZ_REQUEST_S (0 = no limit), and
        SPECVIZ_WAIT_REPORT_S (seconds between place-in-line updates); public servers
        default to 600 steps a minute per session and 600 s per request."""
        env = os.environ if environ is None else environ
        active = _env_number(env, "SPECVIZ_MAX_ACTIVE", 48)
        return cls(
            max_active=int(active) if active else None,
            steps_per_minute=_env_number(env, "SPECVIZ_STEPS_PER_MIN", 600 if public else None),
            request_s=_env_number(env, "SPECVIZ_REQUEST_S", 600 if public else None),
            wait_report_s=_env_number(env, "SPECVIZ_WAIT_REPORT_S", 2.5) or 2.5,
        )


class ServerFull(Exception):
    """No room for another request; the message says so."""


class Sessions:
    """Who has work in flight: at most one request per session, at most `max_active` on the server, and a
    per-session step rate (a token bucket, so short bursts pass and a flood is slowed, not refused)."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._lock = threading.Condition()
        self._active: dict = {}  # session key -> what it runs
        self._buckets: dict = {}  # session key -> (tokens, last refill time)

    def enter(self, key: str, what: str, wait_s: float = 0.0) -> None:
        """Admit a request of session `key`, waiting up to `wait_s` for the session's previous request to
        end (the caller has asked it to stop, e.g. a Step pressed while a Run streams)."""
        with self._lock:
            self._lock.wait_for(lambda: key not in self._active, timeout=wait_s)
            if key in self._active:
                raise ServerFull(f"this session is already running ({self._active[key]}): press Pause, or wait "
                                 "for it to finish, before starting another Run or Step")
            cap = self.limits.max_active
            if cap is not None and len(self._active) >= cap:
                raise ServerFull(f"the server is full: {len(self._active)} runs are in progress, its limit. "
                                 "Try again in a minute.")
            self._active[key] = what

    def leave(self, key: str) -> None:
        with self._lock:
            self._active.pop(key, None)
            self._lock.notify_all()

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)

    def step_delay(self, key: str) -> float:
        """Seconds this session must wait before its next step (0: go now); takes the step's token."""
        rate = self.limits.steps_per_minute
        if rate is None:
            return 0.0
        per_s, burst = rate / 60.0, max(rate / 6.0, 1.0)  # ten seconds' worth may come at once
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > 4096:  # forget sessions idle long enough to have a full allowance again
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < burst / per_s}
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * per_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / per_s
