"""The informer: a reflector filling an indexed store, event handlers, `has_synced()`, and periodic resync.

Objects in the store are frozen (read-only); handlers and reconcilers share them without copying and must
never change them (`climatik.kube.objects.thaw` gives an editable copy). Handler calls are serialised: one
at a time, in the order the changes were seen.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable, Mapping

import structlog

from climatik.clock import Clock, SystemClock
from climatik.kube.backoff import Backoff
from climatik.kube.handlers import EventHandler, FuncHandler
from climatik.kube.listwatch import ListerWatcher
from climatik.kube.metrics import RuntimeMetrics
from climatik.kube.objects import Obj
from climatik.kube.reflector import Reflector, Transform
from climatik.kube.store import IndexFunc, Store

log = structlog.get_logger(__name__)


class Informer:
    """Watches one collection into a `Store` and tells handlers about changes.

    `resync_period` > 0 replays every cached object as an update that often (level-triggered controllers
    use it as a safety net). `transform` edits each object before it is cached (e.g.
    `climatik.kube.objects.strip_managed_fields` to save memory). `start(stop)` runs it in threads;
    `has_synced()` turns true once the first list is in the store and its events were handed out.
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
