"""A cache reader over the fake cluster that is never behind: what an informer's store would show once it caught
up, for reconciler tests that call a reconciler directly."""

from __future__ import annotations

import builtins
from collections.abc import Mapping

from climatik.kube.client import Resource
from climatik.kube.store import IndexFunc, Obj, Store
from support.kube.cluster import FakeCluster


class LiveCache:
    """A CacheReader over the fake cluster that is never behind (frozen objects, indexes, like the informer's)."""

    def __init__(self, cluster: FakeCluster, resource: Resource,
                 indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self._cluster = cluster
        self._resource = resource
        self._indexers = indexers

    def _store(self) -> Store:
        store = Store(self._indexers)
        store.replace(self._cluster.objects(self._resource))
        return store

    def get(self, key: str) -> Obj | None:
        return self._store().get(key)

    def list(self) -> builtins.list[Obj]:
        return self._store().list()

    def keys(self) -> builtins.list[str]:
        return self._store().keys()

    def by_index(self, index: str, value: str) -> builtins.list[Obj]:
        return self._store().by_index(index, value)
