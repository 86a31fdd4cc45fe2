"""Clocks: the `Clock` protocol every time-dependent component takes, and the real one.

Time is injected so that back-off, resync, lease and queue logic can be tested without sleeping.
`now()` is monotonic seconds (only differences mean anything); `wall()` is UTC wall-clock time for
timestamps written into objects. Long-running loops wait with `wait_event` (a stop event or a timeout,
whichever comes first) or, holding a condition, with `wait_condition`, so that a fake clock can decide
when their timeouts expire.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A source of monotonic and wall-clock time that can also sleep and wait."""

    def now(self) -> float:
        """Monotonic seconds; only differences are meaningful."""
        ...

    def wall(self) -> dt.datetime:
        """The current UTC wall-clock time, for timestamps written into objects."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for `seconds`."""
        ...

    def wait_event(self, event: threading.Event, timeout: float) -> bool:
        """Wait until `event` is set or `timeout` seconds pass; True if the event is set."""
        ...

    def wait_condition(self, cond: threading.Condition, timeout: float | None) -> None:
        """With `cond` held, wait for a notification or up to `timeout` seconds (None: no limit).

        May return early (as `Condition.wait` may); callers loop and recheck their predicate.
        """
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait_event(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))

    def wait_condition(self, cond: threading.Condition, timeout: float | None) -> None:
        cond.wait(None if timeout is None else max(0.0, timeout))
