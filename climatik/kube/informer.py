"""The informer: a reflector filling an indexed store, event handlers, `has_synced()`, and periodic resync;
and the usual handlers, which turn events into work-queue keys.

Objects in the store are frozen (read-only); handlers and reconcilers share them without copying and must
never change them (`climatik.kube.store.thaw` gives an editable copy). Handler calls are serialised: one
at a time, in the order the changes were seen. Reconcilers are level-triggered: handlers only decide *which
keys* to look at again, never what to do.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import structlog

from climatik.clock import Clock, SystemClock
from climatik.kube.listwatch import ListerWatcher
from climatik.kube.metrics import RuntimeMetrics
from climatik.kube.reflector import DEFAULT_MAX_WATCH_SILENCE, Backoff, Reflector, Transform
from climatik.kube.store import IndexFunc, Obj, Store, object_key


class EventHandler(Protocol):
    """Called by an informer, in order, from one thread at a time. Must not block for long or mutate objects.

    A resync calls `on_update(obj, obj)` with the same object twice. `on_delete` may get the last state the
    cache knew, when a delete was missed during a disconnection and found by a relist.
    """

    def on_add(self, obj: Obj) -> None: ...

    def on_update(self, old: Obj, new: Obj) -> None: ...

    def on_delete(self, obj: Obj) -> None: ...


class FuncHandler:
    """An `EventHandler` made of optional callbacks."""

    def __init__(
        self,
        *,
        on_add: Callable[[Obj], None] | None = None,
        on_update: Callable[[Obj, Obj], None] | None = None,
        on_delete: Callable[[Obj], None] | None = None,
    ) -> None:
        self._on_add = on_add
        self._on_update = on_update
        self._on_delete = on_delete

    def on_add(self, obj: Obj) -> None:
        if self._on_add is not None:
            self._on_add(obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        if self._on_update is not None:
            self._on_update(old, new)

    def on_delete(self, obj: Obj) -> None:
        if self._on_delete is not None:
            self._on_delete(obj)


class Enqueuer(Protocol):
    def add(self, key: str) -> None: ...


class EnqueueMapped:
    """Adds the keys `mapper` gives for an object to a queue; on update, for both the old and new object
    (a pod whose labels changed must wake the policy it left as well as the one it joined)."""

    def __init__(self, queue: Enqueuer, mapper: Callable[[Obj], Iterable[str]] | None = None) -> None:
        self._queue = queue
        self._mapper = mapper or (lambda obj: [object_key(obj)])

    def on_add(self, obj: Obj) -> None:
        self._enqueue(obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        if old is not new:
            self._enqueue(old)
        self._enqueue(new)

    def on_delete(self, obj: Obj) -> None:
        self._enqueue(obj)

    def _enqueue(self, obj: Obj) -> None:
        for key in self._mapper(obj):
            self._queue.add(key)


def enqueue_own_key(queue: Enqueuer) -> EnqueueMapped:
    """The handler for an informer over the reconciled kind itself: every event queues the object's key."""
    return EnqueueMapped(queue)


log = structlog.get_logger(__name__)


class Informer:
    """Watches one collection into a `Store` and tells handlers about changes.

    `resync_period` > 0 replays every cached object as an update that often (level-triggered controllers
    use it as a safety net). `transform` edits each object before it is cached (e.g.
    `climatik.kube.store.strip_managed_fields` to save memory). `max_watch_silence` is how long a watch may
    deliver nothing before it is presumed dead and opened again (0: never; see `climatik.kube.reflector`).
    `start(stop)` runs it in threads; `has_synced()` turns true once the first list is in the store and its
    events were handed out.

    Handlers see each object's changes in the order the server made them: the reflector writes the store and
    hands out the change under the same lock a resync or a late handler's replay holds, so a replayed object
    is never seen before its add, nor twice as an add.
    """

    def __init__(
        self,
        lister_watcher: ListerWatcher,
        *,
        name: str,
        clock: Clock | None = None,
        indexers: Mapping[str, IndexFunc] | None = None,
        resync_period: float = 0.0,
        min_watch_timeout: float = 300.0,
        backoff: Backoff | None = None,
        metrics: RuntimeMetrics | None = None,
        rng: random.Random | None = None,
        transform: Transform | None = None,
        max_watch_silence: float = DEFAULT_MAX_WATCH_SILENCE,
    ) -> None:
        self.name = name
        self._clock = clock or SystemClock()
        self._store = Store(indexers)
        self._resync_period = resync_period
        self._handlers: list[EventHandler] = []
        self._dispatch_lock = threading.RLock()
        self._synced = threading.Event()
        self._threads: list[threading.Thread] = []
        self.reflector = Reflector(
            name=name,
            lister_watcher=lister_watcher,
            store=self._store,
            notify=self._dispatch,
            clock=self._clock,
            backoff=backoff or Backoff(clock=self._clock, rng=rng),
            min_watch_timeout=min_watch_timeout,
            rng=rng,
            metrics=metrics,
            on_listed=self._synced.set,
            transform=transform,
            lock=self._dispatch_lock,
            max_watch_silence=max_watch_silence,
        )

    @property
    def store(self) -> Store:
        """The cache. Read it (get, list, by_index); never write to it."""
        return self._store

    def add_handler(self, handler: EventHandler) -> None:
        """Register a handler. Objects already cached are replayed to it as adds, as client-go does."""
        with self._dispatch_lock:
            self._handlers.append(handler)
            for obj in self._store.list():
                self._call(handler.on_add, obj)

    def add_event_handlers(
        self,
        *,
        on_add: Callable[[Obj], None] | None = None,
        on_update: Callable[[Obj, Obj], None] | None = None,
        on_delete: Callable[[Obj], None] | None = None,
    ) -> None:
        self.add_handler(FuncHandler(on_add=on_add, on_update=on_update, on_delete=on_delete))

    def has_synced(self) -> bool:
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Block (real time) until synced; False if `timeout` passed first."""
        return self._synced.wait(timeout)

    def resync(self) -> None:
        """Replay every cached object to the handlers as an update of itself."""
        with self._dispatch_lock:
            for obj in self._store.list():
                self._dispatch(obj, obj)

    # -- running -------------------------------------------------------------------------------------------

    def start(self, stop: threading.Event) -> None:
        """Run the reflector and the resync/stop supervisor in daemon threads until `stop` is set."""
        reflector = threading.Thread(target=self.reflector.run, args=(stop,), name=f"informer-{self.name}")
        supervisor = threading.Thread(target=self._supervise, args=(stop,), name=f"informer-{self.name}-resync")
        self._threads = [reflector, supervisor]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads to end after stop; True if they all did."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    def _supervise(self, stop: threading.Event) -> None:
        if self._resync_period > 0:
            while not self._clock.wait_event(stop, self._resync_period):
                if self.has_synced():
                    self.resync()
        else:
            stop.wait()
        self.reflector.interrupt()

    # -- dispatch ------------------------------------------------------------------------------------------

    def _dispatch(self, old: Obj | None, new: Obj | None) -> None:
        with self._dispatch_lock:
            for handler in list(self._handlers):
                if old is None and new is not None:
                    self._call(handler.on_add, new)
                elif new is None and old is not None:
                    self._call(handler.on_delete, old)
                elif old is not None and new is not None:
                    self._call(handler.on_update, old, new)

    def _call(self, func: Callable[..., None], *args: Obj) -> None:
        try:
            func(*args)
        except Exception:
            # A faulty handler must not stop the cache from following the server.
            log.exception("event_handler_failed", informer=self.name)


def wait_for_cache_sync(informers: Iterable[Informer], timeout: float | None = None) -> bool:
    """True once every informer has synced; False if `timeout` (real seconds, overall) passed first."""
    clock = SystemClock()
    deadline = None if timeout is None else clock.now() + timeout
    for informer in informers:
        remaining = None if deadline is None else max(0.0, deadline - clock.now())
        if not informer.wait_for_sync(remaining):
            return False
    return True
