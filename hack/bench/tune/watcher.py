"""A watch on one NodeFrequencies object that stamps each event with the time it arrived, so that a waiter
sees a status change the moment the API server sends it (no polling interval in the measurement)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from climatik.kube.client import NODE_FREQUENCIES, KubeClient
from climatik.kube.errors import KubeError
from climatik.kube.listwatch import BOOKMARK, ERROR

#: One watch lasts at most this long; the watcher opens the next one from where it stopped.
WATCH_SECONDS = 300


class StatusWatcher:
    """Streams (arrival time, object) for every change of the object `name`, from `resource_version` on."""

    def __init__(self, client: KubeClient, name: str, resource_version: str) -> None:
        self._client = client
        self._name = name
        self._version = resource_version
        self._events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="status-watcher", daemon=True)
        self.failure: BaseException | None = None

    def start(self) -> StatusWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.close()
        self._thread.join(5)

    def wait_for(self, done: Callable[[Mapping[str, Any]], bool], timeout: float) -> float:
        """The arrival time of the first event whose object satisfies `done`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.failure is not None:
                raise RuntimeError(f"the watch failed: {self.failure}") from self.failure
            try:
                at, obj = self._events.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if done(obj):
                return at
        raise TimeoutError(f"no matching status of {self._name} within {timeout:.0f} s")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._watch_once()
        except (KubeError, OSError) as error:
            if not self._stop.is_set():
                self.failure = error

    def _watch_once(self) -> None:
        self._stream = self._client.watch(
            NODE_FREQUENCIES, resource_version=self._version, timeout_seconds=WATCH_SECONDS,
            read_timeout=WATCH_SECONDS + 30, field_selector=f"metadata.name={self._name}")
        for event in self._stream:
            arrived = time.monotonic()
            if event.type == ERROR:
                raise KubeError(f"watch error: {event.object}")
            self._version = str(event.object.get("metadata", {}).get("resourceVersion", self._version))
            if event.type != BOOKMARK:
                self._events.put((arrived, event.object))
