"""A work queue of object keys with client-go's semantics.

* A key waits in the queue at most once however often it is added (the dirty set).
* A key is handed to one worker at a time (the processing set); adding it while it is being processed
  marks it dirty, and `done()` puts it back so the change is not lost.
* `add_after` delays a key; the earliest pending time wins when a key is delayed twice.
* `add_rate_limited` delays by a per-key exponential back-off (capped); `forget` resets it;
  `num_requeues` tells how many failures a key has had.
* `shut_down` stops accepting keys and wakes idle workers, who still get what is queued, then None;
  `shut_down_with_drain` also waits until every key handed out is done.

Delayed keys need no thread of their own: whoever calls `get` (or `len`) promotes the keys that are due.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque

from climatik.clock import Clock, SystemClock
from climatik.kube.metrics import RuntimeMetrics


class ItemBackoff:
    """Per-key exponential back-off: `base * 2**failures`, capped at `cap` seconds."""

    def __init__(self, *, base: float = 0.005, cap: float = 300.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self._base = base
        self._cap = cap
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        """Count one more failure of `key` and return how long to wait before retrying it."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        # Stop growing the exponent once capped so that it never overflows.
        return self._cap if failures >= 64 else min(self._cap, self._base * 2**failures)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)


class WorkQueue:
    """A deduplicating, delaying, rate-limited queue of keys. Thread-safe."""

    def __init__(
        self,
        *,
        name: str = "",
        clock: Clock | None = None,
        backoff: ItemBackoff | None = None,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        self.name = name
        self._clock = clock or SystemClock()
        self._backoff = backoff or ItemBackoff()
        # Labelled children resolved once: labels() on every add would cost more than the add itself.
        self._m_depth = metrics.queue_depth.labels(name) if metrics else None
        self._m_adds = metrics.queue_adds_total.labels(name) if metrics else None
        self._m_retries = metrics.queue_retries_total.labels(name) if metrics else None
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # workers wait here for keys
        self._idle = threading.Condition(lock)  # shut_down_with_drain waits here for the processing set to empty
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._waiting: list[tuple[float, int, str]] = []  # heap of (ready_at, seq, key); may hold stale entries
        self._ready_at: dict[str, float] = {}  # the live entry per delayed key
        self._seq = itertools.count()
        self._shutting_down = False

    # -- adding --------------------------------------------------------------------------------------------

    def add(self, key: str) -> None:
        with self._cond:
            self._add_locked(key)

    def add_after(self, key: str, delay: float) -> None:
        """Add `key` once `delay` seconds have passed (at once if `delay` <= 0)."""
        with self._cond:
            if self._shutting_down:
                return
            if delay <= 0:
                self._add_locked(key)
                return
            ready_at = self._clock.now() + delay
            current = self._ready_at.get(key)
            if current is not None and current <= ready_at:
                return
            self._ready_at[key] = ready_at
            heapq.heappush(self._waiting, (ready_at, next(self._seq), key))
            self._cond.notify()

    def add_rate_limited(self, key: str) -> None:
        """Add `key` after its back-off, which doubles with each call until `forget`."""
        with self._cond:
            delay = self._backoff.when(key)
        if self._m_retries is not None:
            self._m_retries.inc()
        self.add_after(key, delay)

    def forget(self, key: str) -> None:
        """Reset the back-off of `key` (call after it was processed successfully)."""
        with self._cond:
            self._backoff.forget(key)

    def num_requeues(self, key: str) -> int:
        with self._cond:
            return self._backoff.num_requeues(key)

    # -- processing ----------------------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> str | None:
        """The next key to process, blocking until there is one.

        Returns None once the queue is shut down and empty, or when `timeout` seconds (clock time) pass.
        The caller must call `done(key)` when finished with the key.
        """
        with self._cond:
            deadline = None if timeout is None else self._clock.now() + timeout
            while True:
                now = self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    self._record_depth()
                    return key
                if self._shutting_down or (deadline is not None and now >= deadline):
                    return None
                wait = self._waiting[0][0] - now if self._waiting else None
                if deadline is not None:
                    wait = deadline - now if wait is None else min(wait, deadline - now)
                self._clock.wait_condition(self._cond, wait)

    def done(self, key: str) -> None:
        """Mark `key` finished; if it was added meanwhile, it goes back in the queue."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._record_depth()
                self._cond.notify()
            if not self._processing:
                self._idle.notify_all()

    # -- shutting down -------------------------------------------------------------------------------------

    def shut_down(self) -> None:
        """Accept no more keys, drop delayed ones, and wake blocked workers."""
        with self._cond:
            self._shutting_down = True
            self._waiting.clear()
            self._ready_at.clear()
            self._cond.notify_all()

    def shut_down_with_drain(self, timeout: float | None = None) -> bool:
        """`shut_down`, then wait until no key is being processed; False if `timeout` passed first."""
        self.shut_down()
        with self._cond:
            deadline = None if timeout is None else self._clock.now() + timeout
            while self._processing:
                now = self._clock.now()
                if deadline is not None and now >= deadline:
                    return False
                self._clock.wait_condition(self._idle, None if deadline is None else deadline - now)
            return True

    @property
    def shutting_down(self) -> bool:
        with self._cond:
            return self._shutting_down

    def __len__(self) -> int:
        """Keys ready to be handed out (not those delayed or in flight)."""
        with self._cond:
            self._promote_due_locked()
            return len(self._queue)

    def processing(self) -> int:
        with self._cond:
            return len(self._processing)

    # -- internals -----------------------------------------------------------------------------------------

    def _add_locked(self, key: str) -> None:
        if self._shutting_down:
            return
        if self._m_adds is not None:
            self._m_adds.inc()
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        self._queue.append(key)
        self._record_depth()
        self._cond.notify()

    def _promote_due_locked(self) -> float:
        now = self._clock.now()
        while self._waiting and self._waiting[0][0] <= now:
            ready_at, _, key = heapq.heappop(self._waiting)
            if self._ready_at.get(key) == ready_at:
                del self._ready_at[key]
                self._add_locked(key)
        return now

    def _record_depth(self) -> None:
        if self._m_depth is not None:
            self._m_depth.set(len(self._queue))
