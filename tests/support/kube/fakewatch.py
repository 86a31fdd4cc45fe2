"""Watch streams of the fake cluster: a per-resource event history and the streams reading it."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator
from typing import Any

from climatik.clock import Clock
from climatik.kube.client import Resource
from climatik.kube.listwatch import ADDED, BOOKMARK, DELETED, ERROR, MODIFIED, WatchEvent
from climatik.kube.store import thaw_object

Wanted = Callable[[dict[str, Any]], bool]


class History:
    """Every change of one resource, in version order; open watches read from it."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.cond = threading.Condition(threading.RLock())
        self.versions: list[int] = []
        self.events: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []  # (type, object, previous)
        self.compacted = 0
        self._last: dict[tuple[str, str], dict[str, Any]] = {}
        self._watches: list[FakeWatch] = []

    def record(self, version: int, kind: str, obj: dict[str, Any]) -> None:
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        with self.cond:
            previous = self._last.get(key)
            snapshot = thaw_object(obj)
            if kind == DELETED:
                self._last.pop(key, None)
            else:
                self._last[key] = snapshot
            self.versions.append(version)
            self.events.append((kind, snapshot, previous))
            self.cond.notify_all()

    def is_compacted(self, version: int) -> bool:
        return version < self.compacted

    def compact(self, version: int) -> None:
        with self.cond:
            self.compacted = version

    def open(
        self,
        version: int,
        wanted: Wanted,
        clock: Clock,
        timeout: float,
        *,
        initial: list[dict[str, Any]] | None = None,
    ) -> FakeWatch:
        with self.cond:
            watch = FakeWatch(self, bisect.bisect_right(self.versions, version), wanted, clock, timeout)
            if self.is_compacted(version):
                watch.push_error(410, "Expired", f"too old resource version: {version} ({self.compacted})")
            for obj in initial or []:
                watch.push(WatchEvent(ADDED, obj))
            self._watches.append(watch)
            return watch

    def forget(self, watch: FakeWatch) -> None:
        with self.cond:
            if watch in self._watches:
                self._watches.remove(watch)

    def open_count(self) -> int:
        with self.cond:
            return len(self._watches)

    def drop_all(self) -> int:
        with self.cond:
            watches, self._watches = self._watches, []
            for watch in watches:
                watch.drop()
            return len(watches)

    def bookmark(self, version: str) -> None:
        with self.cond:
            for watch in self._watches:
                kind = {"apiVersion": self.resource.api_version, "kind": self.resource.kind}
                watch.push(WatchEvent(BOOKMARK, {**kind, "metadata": {"resourceVersion": version}}))

    def expire_all(self) -> None:
        with self.cond:
            for watch in self._watches:
                watch.push_error(410, "Expired", "too old resource version")

    def silence_all(self) -> int:
        with self.cond:
            for watch in self._watches:
                watch.silence()
            return len(self._watches)


class FakeWatch:
    """One open watch. Ends when closed, dropped, after an ERROR event, or when its timeout passes.

    A silenced watch is a half-open connection: it stays open and delivers nothing more, whatever happens,
    until its reader closes it (its timeout never comes: the server's end of it is gone).
    """

    def __init__(self, history: History, cursor: int, wanted: Wanted, clock: Clock, timeout: float) -> None:
        self._history = history
        self._cursor = cursor
        self._wanted = wanted
        self._clock = clock
        self._deadline = clock.now() + timeout
        self._pending: list[WatchEvent] = []
        self._ended = False
        self._silent = False

    def push(self, event: WatchEvent) -> None:
        with self._history.cond:
            self._pending.append(event)
            self._history.cond.notify_all()

    def push_error(self, code: int, reason: str, message: str) -> None:
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
                  "message": message}
        self.push(WatchEvent(ERROR, status))

    def drop(self) -> None:
        with self._history.cond:
            self._ended = True
            self._history.cond.notify_all()

    def silence(self) -> None:
        with self._history.cond:
            self._silent = True

    def close(self) -> None:
        self.drop()
        self._history.forget(self)

    def __iter__(self) -> Iterator[WatchEvent]:
        try:
            while (event := self._next()) is not None:
                yield event
                if event.type == ERROR:
                    return
        finally:
            self._history.forget(self)

    def _next(self) -> WatchEvent | None:
        cond = self._history.cond
        with cond:
            while not self._ended:
                if self._silent:
                    # Nothing comes through, and no timeout either: wait (untimed on the fake clock, so
                    # that only the reader's own liveness check can end this) until closed.
                    cond.wait(0.01)
                    continue
                if self._pending:
                    return self._pending.pop(0)
                while self._cursor < len(self._history.events):
                    kind, obj, previous = self._history.events[self._cursor]
                    self._cursor += 1
                    event = self._translate(kind, obj, previous)
                    if event is not None:
                        return event
                now = self._clock.now()
                if now >= self._deadline:
                    return None
                self._clock.wait_condition(cond, self._deadline - now)
            return None

    def _translate(self, kind: str, obj: dict[str, Any], previous: dict[str, Any] | None) -> WatchEvent | None:
        # As the real server does for selectors: leaving the selection is a delete, entering it an add.
        now_in = self._wanted(obj)
        was_in = previous is not None and self._wanted(previous)
        if kind == MODIFIED:
            kind = MODIFIED if was_in and now_in else DELETED if was_in else ADDED if now_in else ""
        elif not now_in:
            kind = ""
        return WatchEvent(kind, thaw_object(obj)) if kind else None
