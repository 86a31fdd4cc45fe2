"""The informer cache: read-only objects by key, with secondary indexes (e.g. pods by node)."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from climatik.kube.objects import Obj, freeze, namespace_of, object_key

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

    Objects are frozen on the way in (see `climatik.kube.objects.freeze`), so everything handed out is
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
