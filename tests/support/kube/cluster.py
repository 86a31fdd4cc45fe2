"""An in-memory API server: objects, resourceVersions, conflicts, finalizers, the status subresource, watches.

Semantics follow the real server where controllers depend on them: a PUT with a stale resourceVersion is a
409; a write that changes nothing is not a write (no new version, no event); Climatik's CRDs have a status
subresource, so the main resource ignores status and /status ignores everything else; `generation` moves
only when the spec does; an object with finalizers is only marked for deletion; a watch from a compacted
version is a 410. Faults are injected with `compact()`, `drop_watches()`, `silence_watches()` (half-open
connections), `fail_next()`, `refuse_next()` (429/503 with Retry-After) and reactors.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from climatik.api.meta import format_time
from climatik.clock import Clock, SystemClock
from climatik.kube.client import Resource
from climatik.kube.errors import (
    AlreadyExistsError,
    ConflictError,
    GoneError,
    InvalidError,
    KubeError,
    NotFoundError,
    error_for_status,
)
from climatik.kube.listwatch import ADDED, DELETED, MODIFIED
from climatik.kube.store import thaw_object
from support.kube.fakewatch import FakeWatch, History
from support.kube.semantics import (
    check_version,
    content,
    has_status_subresource,
    matcher,
    merge_patch,
    next_state,
)


@dataclass(frozen=True)
class FakeRequest:
    """A request as reactors see it. `verb` is get, list, watch, create, update, patch or delete."""

    verb: str
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str = ""
    body: Any = None


#: Called before a request is served; may raise a KubeError to fail it, or change the cluster first.
Reactor = Callable[[FakeRequest], None]


class FakeCluster:
    """A thread-safe fake API server holding any resources it is asked about."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.lock = threading.RLock()
        self._objects: dict[Resource, dict[tuple[str, str], dict[str, Any]]] = {}
        self._history: dict[Resource, History] = {}
        self._version = itertools.count(1)
        self._current = 0
        self._reactors: list[Reactor] = []
        self._failures: list[tuple[set[str] | None, KubeError]] = []
        self.requests: list[FakeRequest] = []

    # -- test controls -------------------------------------------------------------------------------------

    def add_reactor(self, reactor: Reactor) -> None:
        with self.lock:
            self._reactors.append(reactor)

    def fail_next(self, error: KubeError, *, count: int = 1, verbs: Iterable[str] | None = None) -> None:
        """Fail the next `count` requests (of the given verbs) with `error`."""
        with self.lock:
            self._failures.extend([(set(verbs) if verbs else None, error)] * count)

    def compact(self) -> int:
        """Forget history up to now: watches from an older version get 410 Gone."""
        with self.lock:
            for history in self._history.values():
                history.compact(self._current)
            return self._current

    def refuse_next(
        self, status: int = 429, *, retry_after: float | None = 1.0, count: int = 1, verbs: Iterable[str] | None = None
    ) -> None:
        """Answer the next `count` requests (of the given verbs) with `status` (429 or 5xx) and a Retry-After, as
        a kube-apiserver does while it starts or sheds load: the error is the one the real client builds."""
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
                "reason": "TooManyRequests" if status == 429 else "ServiceUnavailable",
                "message": "the server is starting or busy, please try again"}
        if retry_after is not None:
            body["details"] = {"retryAfterSeconds": retry_after}
        self.fail_next(error_for_status(status, json.dumps(body)), count=count, verbs=verbs)

    def silence_watches(self) -> int:
        """Make every open watch half-open: it stays open but delivers nothing more, as after a silent network
        partition. New watches are served normally."""
        with self.lock:
            return sum(history.silence_all() for history in self._history.values())

    def drop_watches(self) -> int:
        """End every open watch, as a restarting server or a broken connection would."""
        with self.lock:
            return sum(history.drop_all() for history in self._history.values())

    def expire_watches(self) -> None:
        """Send every open watch an ERROR event with code 410, as the server does when a watcher lags."""
        with self.lock:
            for history in self._history.values():
                history.expire_all()

    def open_watches(self) -> int:
        """How many watches are open now."""
        with self.lock:
            return sum(history.open_count() for history in self._history.values())

    def bookmark(self) -> None:
        """Send every open watch a BOOKMARK at the current version."""
        with self.lock:
            for history in self._history.values():
                history.bookmark(str(self._current))

    def writes(self) -> list[FakeRequest]:
        """The mutating requests served so far (to assert that a steady state costs no writes)."""
        with self.lock:
            return [r for r in self.requests if r.verb in ("create", "update", "patch", "delete")]

    def objects(self, resource: Resource) -> list[dict[str, Any]]:
        with self.lock:
            return [thaw_object(o) for o in self._table(resource).values()]

    @property
    def resource_version(self) -> str:
        with self.lock:
            return str(self._current)

    # -- verbs ---------------------------------------------------------------------------------------------

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            self._serve(FakeRequest("get", resource, namespace, name))
            return thaw_object(self._find(resource, namespace, name))

    def list(
        self, resource: Resource, namespace: str | None, *, label_selector: str = "", field_selector: str = ""
    ) -> dict[str, Any]:
        with self.lock:
            self._serve(FakeRequest("list", resource, namespace, None))
            wanted = matcher(namespace, label_selector, field_selector)
            items = [thaw_object(o) for key, o in sorted(self._table(resource).items()) if wanted(o)]
            for item in items:  # as the real server: list items carry no kind
                item.pop("apiVersion", None)
                item.pop("kind", None)
            return {
                "apiVersion": resource.api_version,
                "kind": f"{resource.kind}List",
                "metadata": {"resourceVersion": str(self._current)},
                "items": items,
            }

    def create(self, resource: Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._serve(FakeRequest("create", resource, namespace, None, body=body))
            obj = thaw_object(body)
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if not meta.get("name"):
                raise InvalidError("metadata.name: Required value", status=422, reason="Invalid")
            key = (namespace or "", meta["name"])
            if key in self._table(resource):
                raise AlreadyExistsError(f"{resource.kind} {meta['name']!r} already exists", status=409,
                                         reason="AlreadyExists")
            if resource.namespaced:
                meta["namespace"] = namespace
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=format_time(self.clock.wall()), generation=1)
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(field, None)
            if has_status_subresource(resource):
                obj.pop("status", None)
            obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
            return self._store(resource, key, obj, ADDED)

    def update(
        self, resource: Resource, namespace: str | None, name: str, body: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        with self.lock:
            self._serve(FakeRequest("update", resource, namespace, name, subresource, body))
            current = self._find(resource, namespace, name)
            check_version(resource, name, current, body)
            return self._write(resource, namespace, name, current=current, body=body, subresource=subresource)

    def patch(
        self, resource: Resource, namespace: str | None, name: str, patch: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386)."""
        with self.lock:
            self._serve(FakeRequest("patch", resource, namespace, name, subresource, patch))
            current = self._find(resource, namespace, name)
            if (patch.get("metadata") or {}).get("resourceVersion"):
                check_version(resource, name, current, patch)
            merged = merge_patch(current, patch)
            return self._write(resource, namespace, name, current=current, body=merged, subresource=subresource)

    def delete(
        self, resource: Resource, namespace: str | None, name: str, *, preconditions: dict[str, str] | None = None
    ) -> dict[str, Any]:
        with self.lock:
            self._serve(FakeRequest("delete", resource, namespace, name))
            current = self._find(resource, namespace, name)
            for field, wanted in (preconditions or {}).items():
                if current["metadata"].get(field) != wanted:
                    raise ConflictError(f"precondition failed: {field}", status=409, reason="Conflict")
            if current["metadata"].get("finalizers"):
                if current["metadata"].get("deletionTimestamp"):
                    return thaw_object(current)
                marked = thaw_object(current)
                marked["metadata"].update(deletionTimestamp=format_time(self.clock.wall()),
                                          deletionGracePeriodSeconds=0)
                return self._store(resource, (namespace or "", name), marked, MODIFIED)
            return self._remove(resource, (namespace or "", name))

    def watch(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_seconds: float,
        label_selector: str = "",
        field_selector: str = "",
        gone_as_event: bool = False,
    ) -> FakeWatch:
        """A watch from `resource_version` ("" or "0": the current state as ADDED events, then changes)."""
        with self.lock:
            self._serve(FakeRequest("watch", resource, namespace, None))
            history = self._history_of(resource)
            wanted = matcher(namespace, label_selector, field_selector)
            if resource_version in ("", "0"):
                initial = [thaw_object(o) for o in self._table(resource).values() if wanted(o)]
                return history.open(self._current, wanted, self.clock, timeout_seconds, initial=initial)
            version = int(resource_version)
            if history.is_compacted(version) and not gone_as_event:
                raise GoneError(f"too old resource version: {version} ({history.compacted})", status=410,
                                reason="Expired")
            return history.open(version, wanted, self.clock, timeout_seconds)

    # -- internals -----------------------------------------------------------------------------------------

    def _serve(self, request: FakeRequest) -> None:
        self.requests.append(request)
        for index, (verbs, error) in enumerate(self._failures):
            if verbs is None or request.verb in verbs:
                del self._failures[index]
                raise error
        for reactor in list(self._reactors):
            reactor(request)

    def _table(self, resource: Resource) -> dict[tuple[str, str], dict[str, Any]]:
        return self._objects.setdefault(resource, {})

    def _history_of(self, resource: Resource) -> History:
        return self._history.setdefault(resource, History(resource))

    def _find(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._table(resource).get((namespace or "", name))
        if obj is None:
            raise NotFoundError(f'{resource.plural} "{name}" not found', status=404, reason="NotFound")
        return obj

    def _write(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        current: dict[str, Any],
        body: dict[str, Any],
        subresource: str,
    ) -> dict[str, Any]:
        new = next_state(resource, current, thaw_object(body), subresource)
        if content(new) == content(current):
            return thaw_object(current)  # a no-op write is not a write
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._store(resource, (namespace or "", name), new, MODIFIED, notify=False)
            return self._remove(resource, (namespace or "", name))
        return self._store(resource, (namespace or "", name), new, MODIFIED)

    def _store(
        self, resource: Resource, key: tuple[str, str], obj: dict[str, Any], kind: str, *, notify: bool = True
    ) -> dict[str, Any]:
        self._current = next(self._version)
        obj["metadata"]["resourceVersion"] = str(self._current)
        self._table(resource)[key] = obj
        if notify:
            self._history_of(resource).record(self._current, kind, obj)
        return thaw_object(obj)

    def _remove(self, resource: Resource, key: tuple[str, str]) -> dict[str, Any]:
        obj = self._table(resource).pop(key)
        self._current = next(self._version)
        obj["metadata"]["resourceVersion"] = str(self._current)
        self._history_of(resource).record(self._current, DELETED, obj)
        return thaw_object(obj)
