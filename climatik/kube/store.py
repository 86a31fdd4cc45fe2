"""The informer cache: read-only API objects by key, with secondary indexes (e.g. pods by node).

Objects handed out by informers are plain-dict API objects, frozen: `FrozenDict` and `FrozenList` are `dict`
and `list` subclasses whose mutating methods raise `TypeError`, so a reconciler that edits a cached object
fails loudly in tests instead of silently corrupting the cache. `thaw()` returns a plain, mutable deep copy to
edit and send. Keys are "namespace/name", or "name" for cluster-scoped objects.
"""

from __future__ import annotations

import builtins
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, Protocol

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
    """A deeply read-only version of a JSON value (already-frozen parts are shared, not copied).

    Keys are interned: every cached object repeats the same few dozen field names, and one shared copy of each
    instead of one per object is a fifth of a small object's memory. (Values are not: resourceVersions and
    uids are unbounded, and interned strings may be immortal.)
    """
    kind = type(value)
    if kind is FrozenDict or kind is FrozenList:
        return value
    if isinstance(value, Mapping):
        return FrozenDict({_intern(k): freeze(v) for k, v in value.items()})
    if kind is list or kind is tuple:
        return FrozenList([freeze(v) for v in value])
    return value


def _intern(key: Any) -> Any:
    return sys.intern(key) if type(key) is str else key


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


#: Maps an object to the index values it is filed under (none, one or several).
IndexFunc = Callable[[Obj], Iterable[str]]

BY_NAMESPACE = "namespace"
BY_NODE = "node"


def index_by_namespace(obj: Obj) -> list[str]:
    namespace = namespace_of(obj)
    return [namespace] if namespace else []


def index_by_node(obj: Obj) -> list[str]:
    """Pods by the node they are bound to (spec.nodeName); unscheduled pods are in no bucket."""
    spec = obj.get("spec")
    node = spec.get("nodeName") if isinstance(spec, Mapping) else None
    return [node] if isinstance(node, str) and node else []


#: The indexes a pod informer usually wants.
POD_INDEXES: Mapping[str, IndexFunc] = {BY_NAMESPACE: index_by_namespace, BY_NODE: index_by_node}


class CacheReader(Protocol):
    """What reconcilers read: a snapshot lookup by key, a listing, and indexed lookups."""

    def get(self, key: str) -> Obj | None: ...

    def list(self) -> builtins.list[Obj]: ...

    def keys(self) -> builtins.list[str]: ...

    def by_index(self, index: str, value: str) -> builtins.list[Obj]: ...


#: A change to the store: (old, new); old None for an add, new None for a delete.
Change = tuple[Obj | None, Obj | None]


class Store:
    """A thread-safe map of key -> frozen object, with indexes kept in step.

    Objects are frozen on the way in (see `climatik.kube.store.freeze`), so everything handed out is
    read-only and can be shared between threads without copying.
    """

    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self._lock = threading.RLock()
        self._items: dict[str, Obj] = {}
        self._indexers = dict(indexers or {})
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    # -- reads ---------------------------------------------------------------------------------------------

    def get(self, key: str) -> Obj | None:
        with self._lock:
            return self._items.get(key)

    def list(self) -> builtins.list[Obj]:
        with self._lock:
            return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        with self._lock:
            return list(self._items)

    def by_index(self, index: str, value: str) -> builtins.list[Obj]:
        with self._lock:
            keys = self._index(index).get(value, ())
            return [self._items[k] for k in sorted(keys)]

    def index_values(self, index: str) -> builtins.list[str]:
        with self._lock:
            return sorted(self._index(index))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # -- writes (the informer's) ---------------------------------------------------------------------------

    def upsert(self, obj: Any) -> Change:
        """Insert or replace an object; returns (old, new) with the frozen new object."""
        frozen: Obj = freeze(obj)
        key = object_key(frozen)
        with self._lock:
            old = self._items.get(key)
            if old is not None:
                self._unindex(key, old)
            self._items[key] = frozen
            self._reindex(key, frozen)
        return old, frozen

    def remove(self, key: str) -> Obj | None:
        """Drop a key; returns the object it held, if any."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._unindex(key, old)
            return old

    def replace(self, objs: Iterable[Any]) -> builtins.list[Change]:
        """Make the store hold exactly `objs`; returns the adds, changes (by resourceVersion) and deletes."""
        fresh = {object_key(o): o for o in (freeze(obj) for obj in objs)}
        changes: builtins.list[Change] = []
        with self._lock:
            for key in [k for k in self._items if k not in fresh]:
                changes.append((self.remove(key), None))
            for key, obj in fresh.items():
                old = self._items.get(key)
                if old is not None and _same_version(old, obj):
                    continue
                changes.append(self.upsert(obj))
        return changes

    # -- indexes -------------------------------------------------------------------------------------------

    def _index(self, name: str) -> dict[str, set[str]]:
        if name not in self._indices:
            raise KeyError(f"no index named {name!r}")
        return self._indices[name]

    def _reindex(self, key: str, obj: Obj) -> None:
        for name, func in self._indexers.items():
            for value in func(obj):
                self._indices[name].setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, func in self._indexers.items():
            bucket_map = self._indices[name]
            for value in func(obj):
                bucket = bucket_map.get(value)
                if bucket is not None:
                    bucket.discard(key)
                    if not bucket:
                        del bucket_map[value]


def _same_version(a: Obj, b: Obj) -> bool:
    rv_a = a.get("metadata", {}).get("resourceVersion")
    return bool(rv_a) and rv_a == b.get("metadata", {}).get("resourceVersion")
