"""The reflector: keeps a store in step with the server by listing, then watching from the list's version.

The loop follows client-go's reflector:
* list (in pages), replace the store's content, notify adds/updates and deletes of what vanished;
* watch from the list's resourceVersion with bookmarks and a server timeout jittered in
  [min_watch_timeout, 2 * min_watch_timeout); when the server ends the watch, watch again from the last
  version seen (events and bookmarks both advance it);
* a 410 Gone (an HTTP answer or an ERROR event inside the stream) means the version was compacted: relist;
* any other failure waits, then watches again from the last version (a relist follows if that version is too
  old by then);
* a watch that ends at once without an event is treated as a failure, so a broken server is not hammered.

How long a failure waits decides how stale the cache is once the server is back, so:
* a Retry-After the server sent (429, or 503 from a kube-apiserver that is starting) sets the wait, up to
  `max_retry_after` (1 s): a kube-apiserver that sheds load or fills its watch cache asks for 1 s, and one
  that is starting asks every client for 5 s although it serves within 1-2 s (measured: honouring the 5 s
  kept custom-resource caches about 2 s longer stale after each restart);
* while the server is unreachable or answers 5xx, the jittered exponential back-off is capped at
  `max_unavailable_delay`: a refused connection costs the server nothing, and an overloaded server says so
  with 429 and Retry-After, so the cache comes back within seconds of the server, however long the outage;
* other failures (403, 404, ...) back off up to the back-off's own cap (30 s by default);
* the back-off starts over after a successful list, and after a watch that delivered something or stayed up
  `healthy_watch` seconds: one restart of the server costs a short wait, not a longer one each time.

A watch on which nothing (neither an event nor a bookmark) arrives for `max_watch_silence` seconds is closed
and opened again from the last version: a half-open connection (a silent network partition) would otherwise
block until the read timeout, minutes later. A healthy kube-apiserver sends a bookmark to every watch that
asks for them about once a minute, on resources nobody writes too (measured with 1.34: 60 s apart), so a
healthy watch never trips the 90 s default; where a server does not, the price is one cheap watch request
(from the last version, no relist) per period.

Store writes and the notifications they cause happen under `lock`, which the informer also holds while it
replays the cache (resync, a late handler): such a replay never reports an object before its add.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import structlog

from climatik.clock import Clock
from climatik.kube.errors import GoneError, KubeError, UnavailableError, error_for_status_object
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
# Never retry sooner than this, whatever Retry-After said (0 would spin on a server that keeps saying 0).
_MIN_RETRY_S = 0.2

#: Defaults: see the module docstring.
DEFAULT_MAX_WATCH_SILENCE = 90.0
DEFAULT_MAX_UNAVAILABLE_DELAY = 2.0
DEFAULT_MAX_RETRY_AFTER = 1.0
DEFAULT_HEALTHY_WATCH = 10.0


class Reflector:
    """Runs list-and-watch for one lister-watcher into one store until stopped.

    `max_watch_silence` 0 turns the silent-watch check off.
    """

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
        lock: threading.RLock | None = None,
        max_watch_silence: float = DEFAULT_MAX_WATCH_SILENCE,
        max_unavailable_delay: float = DEFAULT_MAX_UNAVAILABLE_DELAY,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        healthy_watch: float = DEFAULT_HEALTHY_WATCH,
    ) -> None:
        if max_watch_silence < 0 or max_unavailable_delay <= 0 or max_retry_after <= 0:
            raise ValueError("need max_watch_silence >= 0 and positive retry bounds")
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
        self._writes = lock or threading.RLock()
        self._max_silence = max_watch_silence
        self._max_unavailable_delay = max_unavailable_delay
        self._max_retry_after = max_retry_after
        self._healthy_watch = healthy_watch
        self._lock = threading.Lock()
        self._stream: WatchStream | None = None
        self._stopped = False
        self._last_heard = 0.0
        self._went_silent = False
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
                delay = self.retry_delay(exc)
                log.warning("list_watch_failed", informer=self.name, error=str(exc), retry_in=round(delay, 3))
                self._count_restart("error")
                self._clock.wait_event(stop, delay)

    def retry_delay(self, exc: BaseException) -> float:
        """How long to wait after `exc` before the next attempt (see the module docstring)."""
        retry_after = exc.retry_after if isinstance(exc, KubeError) else None
        if retry_after is not None:
            # The server said when to come back. A little jitter keeps its clients from returning in step.
            bounded = max(_MIN_RETRY_S, min(retry_after, self._max_retry_after))
            return bounded * (1.0 + 0.2 * self._rng.random())
        delay = self._backoff.next_delay()
        if isinstance(exc, UnavailableError):
            # Jittered below the cap too, so that clients of a server that comes back do not return in step.
            delay = min(delay, self._max_unavailable_delay * (1.0 - 0.25 * self._rng.random()))
        return delay

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
        if self._went_silent:
            # Routine on a resource nobody writes; a partition if the next attempt fails.
            log.info("watch_silent", informer=self.name, silent_for=self._max_silence,
                     resource_version=self.resource_version)
            self._count_restart("silent")
            return
        if not delivered and self._clock.now() - started < _SHORT_WATCH_S:
            raise KubeError("watch ended at once without any event")
        self._count_restart("timeout")

    def relist(self) -> None:
        listed = self._lw.list()
        with self._writes:
            changes = self._store.replace(self._transform(item) for item in listed.items)
            self.resource_version = listed.resource_version
            self.needs_list = False
            for old, new in changes:
                self._notify(old, new)
        self._backoff.reset()
        if self._metrics is not None:
            self._metrics.relists_total.labels(self.name).inc()
        log.debug("listed", informer=self.name, objects=len(listed.items), changes=len(changes))
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
        opened = self._last_heard = self._clock.now()
        self._went_silent = False
        ended = threading.Event()
        guard = self._start_guard(stream, ended)
        delivered = 0
        try:
            for event in stream:
                if stop.is_set():
                    break
                self._last_heard = self._clock.now()
                self._apply(event)
                delivered += 1
                if delivered == 1:
                    self._backoff.reset()  # the server answers again: the next failure starts over
        finally:
            with self._lock:
                self._stream = None
            stream.close()
            ended.set()
            if guard is not None:
                guard.join(5.0)
            if self._clock.now() - opened >= self._healthy_watch:
                self._backoff.reset()
        return delivered

    def _start_guard(self, stream: WatchStream, ended: threading.Event) -> threading.Thread | None:
        if not self._max_silence:
            return None
        guard = threading.Thread(target=self._guard, args=(stream, ended), name=f"informer-{self.name}-liveness",
                                 daemon=True)
        guard.start()
        return guard

    def _guard(self, stream: WatchStream, ended: threading.Event) -> None:
        """Close `stream` once nothing has arrived on it for `max_watch_silence` (our clock)."""
        while True:
            remaining = self._last_heard + self._max_silence - self._clock.now()
            if remaining <= 0:
                self._went_silent = True
                stream.close()
                return
            if self._clock.wait_event(ended, remaining):
                return

    def _apply(self, event: WatchEvent) -> None:
        if event.type == ERROR:
            raise error_for_status_object(event.object)
        version = str(event.object.get("metadata", {}).get("resourceVersion", "") or "")
        if event.type in (ADDED, MODIFIED):
            obj = self._transform(event.object)
            with self._writes:
                old, new = self._store.upsert(obj)
                self._notify(old, new)
        elif event.type == DELETED:
            # Prefer the final state the server sent; it is what a handler should map from.
            last = freeze(self._transform(event.object)) if event.object.get("metadata") else None
            with self._writes:
                gone = self._store.remove(object_key(event.object))
                self._notify(last if last is not None else gone, None)
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
