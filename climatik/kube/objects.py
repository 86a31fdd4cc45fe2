"""Plain-dict API objects: cache keys, metadata accessors, and read-only (frozen) copies.

Objects handed out by informers are frozen: `FrozenDict` and `FrozenList` are `dict` and `list` subclasses
whose mutating methods raise `TypeError`, so a reconciler that edits a cached object fails loudly in tests
instead of silently corrupting the cache. `thaw()` returns a plain, mutable deep copy to edit and send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

#: A Kubernetes object as decoded from JSON. Objects from an informer are `FrozenDict`s: typed as `dict` so that
#: they pass wherever an API dict is read, but any attempt to change one raises TypeError.
Obj = dict[str, Any]


def _read_only(*_: Any, **__: Any) -> NoReturn:
    raise TypeError("objects from the informer cache are read-only; edit thaw(obj) instead")


class FrozenDict(dict[str, Any]):
    """A dict that refuses to change. Equal to, and JSON-serialisable like, a plain dict."""

    __slots__ = ()
    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only  # type: ignore[assignment]

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        # A deep copy is wanted to be edited: give a plain one.
        return {k: thaw(v) for k, v in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


class FrozenList(list[Any]):
    """A list that refuses to change."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only  # type: ignore[assignment]
    append = extend = insert = pop = remove = reverse = sort = clear = _read_only

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [thaw(v) for v in self]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))


def freeze(value: Any) -> Any:
    """A deeply read-only version of a JSON value (already-frozen parts are shared, not copied)."""
    kind = type(value)
    if kind is FrozenDict or kind is FrozenList:
        return value
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if kind is list or kind is tuple:
        return FrozenList([freeze(v) for v in value])
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a JSON value (frozen or not)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


def thaw_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A plain, mutable deep copy of an object (to edit and send back)."""
    return {k: thaw(v) for k, v in obj.items()}


def strip_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop metadata.managedFields (server-side apply bookkeeping, often most of a small object's size).

    Meant as an informer `transform`: it edits and returns its argument, which the informer owns.
    """
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return obj


def meta(obj: Obj) -> Mapping[str, Any]:
    """The object's metadata (empty if absent)."""
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def name_of(obj: Obj) -> str:
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Obj) -> str:
    return str(meta(obj).get("namespace", "") or "")


def resource_version_of(obj: Obj) -> str:
    return str(meta(obj).get("resourceVersion", "") or "")


def generation_of(obj: Obj) -> int:
    gen = meta(obj).get("generation", 0)
    return gen if isinstance(gen, int) else 0


def object_key(obj: Obj) -> str:
    """The cache key: "namespace/name", or "name" for cluster-scoped objects (as client-go's
    MetaNamespaceKeyFunc)."""
    name = name_of(obj)
    if not name:
        raise ValueError("object has no metadata.name")
    ns = namespace_of(obj)
    return f"{ns}/{name}" if ns else name


def make_key(name: str, namespace: str | None = None) -> str:
    return f"{namespace}/{name}" if namespace else name


def split_key(key: str) -> tuple[str | None, str]:
    """(namespace or None, name) of a cache key."""
    ns, sep, name = key.partition("/")
    if not sep:
        return None, key
    if not ns or not name or "/" in name:
        raise ValueError(f"malformed key {key!r}")
    return ns, name
