"""Writes with optimistic concurrency: read, apply a mutation function, write back with the read
resourceVersion, and on 409 Conflict read again and reapply (a bounded number of times).

The mutation function states an *intention* ("set condition X", "add finalizer Y") against whatever the
object looks like now, so reapplying it to a fresher copy after a conflict never loses another writer's
change. Nothing is written when the mutation changes nothing: a steady cluster costs no writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from climatik.kube.client import ResourceClient
from climatik.kube.errors import AlreadyExistsError, ConflictError, NotFoundError
from climatik.kube.store import split_key, thaw, thaw_object

log = structlog.get_logger(__name__)

#: Object (a private, editable copy) -> the new status, or None for "no change".
StatusMutation = Callable[[dict[str, Any]], dict[str, Any] | None]
#: Object (a private, editable copy) -> the new object, or None for "no change".
ObjectMutation = Callable[[dict[str, Any]], dict[str, Any] | None]

DEFAULT_ATTEMPTS = 5


@dataclass(frozen=True)
class WriteResult:
    """The object as the server has it after the call (None if it does not exist), and whether we wrote."""

    object: dict[str, Any] | None
    written: bool


def update_status(
    api: ResourceClient,
    key: str,
    mutate: StatusMutation,
    *,
    current: Mapping[str, Any] | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
) -> WriteResult:
    """Apply `mutate` to the object's status and PUT it to /status if it changed.

    `current` (e.g. the cached object) saves the first GET; a conflict always refetches. A missing object
    is not an error (it was deleted; there is nothing to report on): the result's object is None.
    Raises `ConflictError` when every attempt lost a race.
    """

    def apply(obj: dict[str, Any]) -> dict[str, Any] | None:
        status = mutate(thaw_object(obj))
        if status is None or status == obj.get("status"):
            return None
        body = thaw_object(obj)
        body["status"] = status
        return body

    return _write(api, key, apply, api.replace_status, current=current, attempts=attempts)


def update_object(
    api: ResourceClient,
    key: str,
    mutate: ObjectMutation,
    *,
    current: Mapping[str, Any] | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
) -> WriteResult:
    """Apply `mutate` to the whole object (spec, metadata such as finalizers) and PUT it if it changed.

    The status subresource ignores status changes on this path; use `update_status` for those.
    """

    def apply(obj: dict[str, Any]) -> dict[str, Any] | None:
        new = mutate(thaw_object(obj))
        return None if new is None or new == obj else new

    return _write(api, key, apply, api.replace, current=current, attempts=attempts)


def create_or_update(
    api: ResourceClient,
    desired: Mapping[str, Any],
    *,
    merge: ObjectMutation | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
) -> WriteResult:
    """Create `desired`, or bring the existing object in line with it.

    `merge` gets a copy of the existing object and returns what it should become (None: no change); by
    default the spec is replaced and desired labels and annotations are merged in.
    """
    metadata = desired.get("metadata") or {}
    key = f"{metadata['namespace']}/{metadata['name']}" if metadata.get("namespace") else str(metadata["name"])
    merge = merge or (lambda existing: _default_merge(existing, desired))
    for _ in range(attempts):
        result = update_object(api, key, merge, attempts=attempts)
        if result.object is not None:
            return result
        try:
            return WriteResult(api.create(thaw_object(desired)), True)
        except AlreadyExistsError:
            continue  # created by someone else meanwhile: update theirs
    raise ConflictError(f"create or update of {key} kept racing another writer", status=409)


def _write(
    api: ResourceClient,
    key: str,
    apply: Callable[[dict[str, Any]], dict[str, Any] | None],
    put: Callable[[Mapping[str, Any]], dict[str, Any]],
    *,
    current: Mapping[str, Any] | None,
    attempts: int,
) -> WriteResult:
    namespace, name = split_key(key)
    obj: dict[str, Any] | None = thaw_object(current) if current is not None else None
    for attempt in range(1, attempts + 1):
        if obj is None:
            try:
                obj = api.get(name, namespace=namespace)
            except NotFoundError:
                return WriteResult(None, False)
        body = apply(obj)
        if body is None:
            return WriteResult(obj, False)
        # The version we read makes the PUT a compare-and-swap.
        body.setdefault("metadata", {})["resourceVersion"] = obj.get("metadata", {}).get("resourceVersion")
        try:
            return WriteResult(put(body), True)
        except ConflictError:
            log.debug("write_conflicted", kind=api.resource.kind, key=key, attempt=attempt)
            obj = None
        except NotFoundError:
            return WriteResult(None, False)
    raise ConflictError(f"{api.resource.kind} {key}: still conflicting after {attempts} attempts", status=409)


def _default_merge(existing: dict[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    merged = thaw_object(existing)
    if "spec" in desired:
        merged["spec"] = thaw(desired["spec"])
    wanted_meta = desired.get("metadata") or {}
    for field in ("labels", "annotations"):
        if wanted_meta.get(field):
            merged.setdefault("metadata", {}).setdefault(field, {}).update(wanted_meta[field])
    return merged
