"""Informer event handlers, and the usual ones that turn events into work-queue keys.

Reconcilers are level-triggered: handlers only decide *which keys* to look at again, never what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from climatik.kube.objects import Obj, object_key


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
