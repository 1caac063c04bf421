"""Sharing one model fairly between the sessions of a server.

Every piece of model work (preparing a run, one decoding step, one step of the AR baseline) takes a
*turn*. Turns are granted first come, first served, one at a time, and a session re-joins the back of
the line after each step, so with N sessions running, a session's next step waits for at most about
N − 1 steps of others, never for their whole runs. A waiting session is told its place in line.

`Limits` holds the per-server and per-session bounds: runs in flight (one per session, a cap for the
server), steps per minute per session, and a time limit per request. They come from the environment
(`Limits.from_env`) with stricter defaults on a public server.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(eq=False)
class Ticket:
    """One session's place in line for one piece of model work."""

    owner: str  # the session it belongs to
    what: str  # what it will do, shown to those waiting behind it ("a step of sps")
    joined: float = 0.0


class Turns:
    """First-come, first-served turns on the shared model; one piece of work holds it at a time."""

    def __init__(self):
        self._cond = threading.Condition()
        self._line: deque = deque()
        self._holder: Ticket | None = None
        self.granted = 0  # turns granted so far (for tests and the load report)
        self.longest_wait_s = 0.0

    def join(self, owner: str, what: str) -> Ticket:
        ticket = Ticket(owner, what, time.monotonic())
        with self._cond:
            self._line.append(ticket)
            self._cond.notify_all()
        return ticket

    def wait(self, ticket: Ticket, timeout: float) -> bool:
        """Block until it is `ticket`'s turn (True: it now holds the model) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._holder is not None or not self._line or self._line[0] is not ticket:
                if ticket not in self._line:
                    raise RuntimeError("this ticket left the line")
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    if self._holder is None and self._line and self._line[0] is ticket:
                        break
                    return False
            self._line.popleft()
            self._holder = ticket
            self.granted += 1
            self.longest_wait_s = max(self.longest_wait_s, time.monotonic() - ticket.joined)
            return True

    def release(self, ticket: Ticket) -> None:
        """Give the model back after the work, or leave the line without it (cancelled, client gone)."""
        with self._cond:
            if self._holder is ticket:
                self._holder = None
            else:
                try:
                    self._line.remove(ticket)
                except ValueError:
                    pass
            self._cond.notify_all()

    def ahead(self, ticket: Ticket) -> tuple:
        """(how many pieces of work are ahead of `ticket`, what the model is doing now or '')."""
        with self._cond:
            try:
                before = list(self._line).index(ticket)
            except ValueError:
                before = 0
            busy = self._holder
            return before + (busy is not None), (busy.what if busy is not None else "")

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
    wait_report_s: float = 1.0  # how often a waiting request updates its place in line

    @classmethod
    def from_env(cls, public: bool, environ=None) -> "Limits":
        """SPECVIZ_MAX_ACTIVE, SPECVIZ_STEPS_PER_MIN and SPECVIZ_REQUEST_S (0 = no limit); public servers
        default to 600 steps a minute per session and 600 s per request."""
        env = os.environ if environ is None else environ
        active = _env_number(env, "SPECVIZ_MAX_ACTIVE", 48)
        return cls(
            max_active=int(active) if active else None,
            steps_per_minute=_env_number(env, "SPECVIZ_STEPS_PER_MIN", 600 if public else None),
            request_s=_env_number(env, "SPECVIZ_REQUEST_S", 600 if public else None),
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

    def busy(self, key: str) -> bool:
        with self._lock:
            return key in self._active

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
