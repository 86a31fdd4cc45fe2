"""The reflector: keeps a store in step with the server by listing, then watching from the list's version.

The loop follows client-go's reflector:
* list (in pages), replace the store's content, notify adds/updates and deletes of what vanished;
* watch from the list's resourceVersion with bookmarks and a server timeout jittered in
  [min_watch_timeout, 2 * min_watch_timeout); when the server ends the watch, watch again from the last
  version seen (events and bookmarks both advance it);
* a 410 Gone (an HTTP answer or an ERROR event inside the stream) means the version was compacted: relist;
* any other failure waits a jittered exponential back-off (reset after a healthy while), then watches again
  from the last version (a relist follows if that version is too old by then);
* a watch that ends at once without an event is treated as a failure, so a broken server is not hammered.

The back-off forgets past failures after a healthy period, as client-go's jittered back-off manager does.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import structlog

from climatik.clock import Clock
from climatik.kube.errors import GoneError, KubeError, error_for_status_object
from climatik.kube.listwatch import ADDED, BOOKMARK, DELETED, ERROR, MODIFIED, ListerWatcher, WatchEvent, WatchStream
from climatik.kube.metrics import RuntimeMetrics
from climatik.kube.store import Obj, Store, freeze, object_key


class Backoff:
    """Delays of `initial * factor**n`, capped at `cap`, each stretched by up to `jitter` (a fraction).

    `n` counts the failures since the last `reset()`; it also restarts from zero when no delay has been asked
    for during `reset_after` seconds, so a connection that was healthy for a while starts again gently.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        initial: float = 0.8,
        cap: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        reset_after: float = 120.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or cap < initial or factor < 1 or jitter < 0:
            raise ValueError("back-off needs 0 < initial <= cap, factor >= 1 and jitter >= 0")
        self._clock = clock
        self._initial = initial
        self._cap = cap
        self._factor = factor
        self._jitter = jitter
        self._reset_after = reset_after
        self._rng = rng or random.Random()
        self._failures = 0
        self._last: float | None = None

    @property
    def failures(self) -> int:
        return self._failures

    def next_delay(self) -> float:
        """The delay to wait before the next attempt; each call counts one more failure."""
        now = self._clock.now()
        if self._last is not None and now - self._last > self._reset_after:
            self._failures = 0
        self._last = now
        base = min(self._cap, self._initial * self._factor**self._failures)
        self._failures += 1
        return base * (1.0 + self._jitter * self._rng.random())

    def reset(self) -> None:
        self._failures = 0
        self._last = None


log = structlog.get_logger(__name__)

#: Called with (old, new) for each change: old None for an add, new None for a delete.
Notify = Callable[[Obj | None, Obj | None], None]
#: Applied to every object from the server before it is cached (e.g. to drop fields nobody reads).
Transform = Callable[[dict[str, Any]], dict[str, Any]]

# A watch that ends sooner than this without delivering anything counts as a failure.
_SHORT_WATCH_S = 1.0


class Reflector:
    """Runs list-and-watch for one lister-watcher into one store until stopped."""

    def __init__(
        self,
        *,
        name: str,
        lister_watcher: ListerWatcher,
        store: Store,
        notify: Notify,
        clock: Clock,
        backoff: Backoff,
        min_watch_timeout: float = 300.0,
        rng: random.Random | None = None,
        metrics: RuntimeMetrics | None = None,
        on_listed: Callable[[], None] = lambda: None,
        transform: Transform | None = None,
    ) -> None:
        self.name = name
        self._lw = lister_watcher
        self._store = store
        self._notify = notify
        self._clock = clock
        self._backoff = backoff
        self._min_watch_timeout = min_watch_timeout
        self._rng = rng or random.Random()
        self._metrics = metrics
        self._on_listed = on_listed
        self._transform = transform or (lambda obj: obj)
        self._lock = threading.Lock()
        self._stream: WatchStream | None = None
        self._stopped = False
        self.resource_version = ""
        self.needs_list = True

    def run(self, stop: threading.Event) -> None:
        """List and watch until `stop` is set (then call `interrupt()` to end a watch in progress)."""
        while not stop.is_set():
            try:
                self.step(stop)
            except Exception as exc:
                if stop.is_set():
                    return
                delay = self._backoff.next_delay()
                log.warning("list_watch_failed", informer=self.name, error=str(exc), retry_in=round(delay, 3))
                self._count_restart("error")
                self._clock.wait_event(stop, delay)

    def step(self, stop: threading.Event) -> None:
        """One round: a list when one is due, then one watch until it ends. Raises what should back off."""
        if self.needs_list:
            self.relist()
        started = self._clock.now()
        try:
            delivered = self._watch(stop)
        except GoneError:
            log.info("watch_expired", informer=self.name, resource_version=self.resource_version)
            self.needs_list = True
            self._count_restart("gone")
            return
        if stop.is_set():
            return
        if not delivered and self._clock.now() - started < _SHORT_WATCH_S:
            raise KubeError("watch ended at once without any event")
        self._count_restart("timeout")

    def relist(self) -> None:
        listed = self._lw.list()
        changes = self._store.replace(self._transform(item) for item in listed.items)
        self.resource_version = listed.resource_version
        self.needs_list = False
        if self._metrics is not None:
            self._metrics.relists_total.labels(self.name).inc()
        log.debug("listed", informer=self.name, objects=len(listed.items), changes=len(changes))
        for old, new in changes:
            self._notify(old, new)
        self._record_size()
        self._on_listed()

    def interrupt(self) -> None:
        """End the watch in progress (from any thread); used to stop promptly."""
        with self._lock:
            self._stopped = True
            stream = self._stream
        if stream is not None:
            stream.close()

    def _watch(self, stop: threading.Event) -> int:
        timeout = int(self._min_watch_timeout * (1.0 + self._rng.random()))
        stream = self._lw.watch(resource_version=self.resource_version, timeout_seconds=max(1, timeout))
        with self._lock:
            self._stream = stream
            stopped = self._stopped
        if stopped:
            stream.close()
        delivered = 0
        try:
            for event in stream:
                if stop.is_set():
                    break
                self._apply(event)
                delivered += 1
        finally:
            with self._lock:
                self._stream = None
            stream.close()
        return delivered

    def _apply(self, event: WatchEvent) -> None:
        if event.type == ERROR:
            raise error_for_status_object(event.object)
        version = str(event.object.get("metadata", {}).get("resourceVersion", "") or "")
        if event.type in (ADDED, MODIFIED):
            old, new = self._store.upsert(self._transform(event.object))
            self._notify(old, new)
        elif event.type == DELETED:
            gone = self._store.remove(object_key(event.object))
            # Prefer the final state the server sent; it is what a handler should map from.
            self._notify(freeze(self._transform(event.object)) if event.object.get("metadata") else gone, None)
        elif event.type != BOOKMARK:
            log.warning("watch_event_ignored", informer=self.name, type=event.type)
            return
        if version:
            self.resource_version = version
        if event.type != BOOKMARK:
            self._record_size()

    def _count_restart(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.watch_restarts_total.labels(self.name, reason).inc()

    def _record_size(self) -> None:
        if self._metrics is not None:
            self._metrics.cached_objects.labels(self.name).set(len(self._store))
