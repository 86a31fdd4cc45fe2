"""A clock that moves only when a test says so (see climatik.clock.Clock)."""

from __future__ import annotations

import datetime as dt
import threading
import time

# How often a fake-clock waiter rechecks on its own; advance() also wakes it at once.
_FAKE_POLL_S = 0.01


class FakeClock:
    """A clock that moves only when told to, for tests.

    `advance(s)` moves time forward and wakes every waiter whose deadline has passed. `sleep(s)` does
    not block: it moves the clock by `s` at once, so a loop that sleeps runs without delay (`sleeps`
    records each call). `wait_event` and `wait_condition` do block, in fake time: they return when the
    event is set or a notification arrives, or once a test has advanced the clock past their deadline.
    `waiters()` and `await_waiters(n)` let a test wait until the code under test is parked before it
    advances time.
    """

    def __init__(
        self,
        start: float = 1000.0,
        start_wall: dt.datetime = dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    ) -> None:
        self._now = start
        self._start = start
        self._start_wall = start_wall
        self._cond = threading.Condition()
        self._deadlines: dict[int, float] = {}  # id of a parked wait -> its fake deadline
        self._next_id = 0
        self.sleeps: list[float] = []

    def now(self) -> float:
        with self._cond:
            return self._now

    def wall(self) -> dt.datetime:
        with self._cond:
            return self._start_wall + dt.timedelta(seconds=self._now - self._start)

    def sleep(self, seconds: float) -> None:
        with self._cond:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)
            self._cond.notify_all()

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` and wake waiters."""
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def wait_event(self, event: threading.Event, timeout: float) -> bool:
        token = self._park(timeout)
        try:
            while not event.is_set():
                with self._cond:
                    if self._now >= self._deadlines[token]:
                        return False
                    self._cond.wait(_FAKE_POLL_S)
            return True
        finally:
            self._unpark(token)

    def wait_condition(self, cond: threading.Condition, timeout: float | None) -> None:
        # The caller holds `cond`, so this cannot wait on our own lock too: poll briefly in real time, which
        # is fine because callers loop and recheck both their predicate and the (fake) time.
        token = self._park(float("inf") if timeout is None else timeout)
        try:
            cond.wait(_FAKE_POLL_S)
        finally:
            self._unpark(token)

    def waiters(self) -> list[float]:
        """Seconds from now until the deadline of each parked wait that is still pending (inf for waits
        without a deadline); waits whose deadline has passed are about to return and are not counted."""
        with self._cond:
            return sorted(d - self._now for d in self._deadlines.values() if d > self._now)

    def await_waiters(self, count: int = 1, *, timeout: float = 5.0) -> list[float]:
        """Block (in real time, at most `timeout`) until `count` waits are parked; return `waiters()`."""
        deadline = time.monotonic() + timeout
        while True:
            pending = self.waiters()
            if len(pending) >= count:
                return pending
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} waiter(s) parked on the fake clock, expected {count}")
            time.sleep(0.001)

    def _park(self, timeout: float) -> int:
        with self._cond:
            self._next_id += 1
            self._deadlines[self._next_id] = self._now + max(0.0, timeout)
            return self._next_id

    def _unpark(self, token: int) -> None:
        with self._cond:
            self._deadlines.pop(token, None)
