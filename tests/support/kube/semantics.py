"""What the fake cluster does to objects on a write: the pure part of its semantics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from climatik.api.constants import GROUP
from climatik.kube.client import Resource
from climatik.kube.errors import ConflictError
from climatik.kube.store import thaw_object
from support.kube.selectors import parse_field_selector, parse_label_selector

# Set by the server; a client's PUT cannot change them.
_SYSTEM_FIELDS = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")


def has_status_subresource(resource: Resource) -> bool:
    return resource.group == GROUP


def next_state(resource: Resource, current: dict[str, Any], body: dict[str, Any], subresource: str) -> dict[str, Any]:
    if subresource == "status":
        new = thaw_object(current)
        new["status"] = body.get("status")
        if new["status"] is None:
            new.pop("status")
        return new
    new = body
    new["apiVersion"], new["kind"] = resource.api_version, resource.kind
    meta = new.setdefault("metadata", {})
    for field in _SYSTEM_FIELDS:
        if field in current["metadata"]:
            meta[field] = current["metadata"][field]
        else:
            meta.pop(field, None)
    meta["name"], meta["namespace"] = current["metadata"]["name"], current["metadata"].get("namespace")
    if meta["namespace"] is None:
        meta.pop("namespace")
    if has_status_subresource(resource):
        new.pop("status", None)
        if "status" in current:
            new["status"] = current["status"]
    if _spec(new) != _spec(current):
        meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
    return new


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def content(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


def check_version(resource: Resource, name: str, current: dict[str, Any], body: dict[str, Any]) -> None:
    wanted = (body.get("metadata") or {}).get("resourceVersion")
    if wanted and wanted != current["metadata"]["resourceVersion"]:
        raise ConflictError(
            f'Operation cannot be fulfilled on {resource.plural} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            status=409,
            reason="Conflict",
        )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: null deletes a key, objects merge recursively, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def matcher(namespace: str | None, label_selector: str, field_selector: str) -> Callable[[dict[str, Any]], bool]:
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector)

    def wanted(obj: dict[str, Any]) -> bool:
        if namespace and obj.get("metadata", {}).get("namespace") != namespace:
            return False
        return labels(obj) and fields(obj)

    return wanted
