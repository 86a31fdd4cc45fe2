"""Writing NodeFrequencies specs: the recommender's node writer.

NodeFrequencies objects are named after their node (the CRD requires metadata.name == spec.nodeName). Specs
are written with optimistic concurrency: a 409 (the tuner wrote status meanwhile, or the cache was behind) reads
the object again and writes the planned spec only if it still differs, so a spec already in place is never
written twice.

One recommender writes whole specs. Replicas that split the policies (shards) each write their part of a spec
(climatik.recommend.plan.merge_owned): the clock entries of the policies they hold for the write, and the power
budgets if they hold the allocator's key (climatik.recommend.core.ALLOCATOR), over the other entries as the object
has them at the write; a 409 merges again over the newer object, so no shard overwrites another's part.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import structlog
from prometheus_client import Counter

from climatik.api import DecodedCache, NodeFrequencies, NodeFrequenciesSpec, to_dict
from climatik.api.constants import API_VERSION, NODE_FREQUENCIES_KIND
from climatik.kube.client import ResourceClient
from climatik.kube.errors import AlreadyExistsError, InvalidError
from climatik.kube.shards import HoldAll
from climatik.kube.status import update_object
from climatik.kube.store import CacheReader
from climatik.recommend.core import ALLOCATOR
from climatik.recommend.plan import entry_policies, merge_owned, normalized

log = structlog.get_logger(__name__)


class WriteMetrics(Protocol):
    """Where the writer counts its writes (by operation: create, update)."""

    node_writes: Counter


def spec_body(spec: NodeFrequenciesSpec) -> dict[str, Any]:
    """The spec as written: both entry lists always present, so equal specs are equal dicts."""
    return to_dict(normalized(spec))


class NodeWriter:
    """Creates and updates NodeFrequencies objects; reads the informer cache to skip what is already there.
    `hold_all` (a shard's) makes each write one of the shard's part only."""

    def __init__(self, *, api: ResourceClient, cache: CacheReader, metrics: WriteMetrics | None = None,
                 hold_all: HoldAll | None = None) -> None:
        self._api = api
        self._cache = cache
        self._metrics = metrics
        self._hold_all = hold_all
        self._decoded: DecodedCache[NodeFrequencies] = DecodedCache(NodeFrequencies.from_api)

    def objects(self) -> list[NodeFrequencies]:
        """Every cached NodeFrequencies object, typed (an object that does not decode is skipped and logged)."""
        nodes = []
        for decoded in self._decoded.decode_all(self._cache.list()):
            if isinstance(decoded, Exception):
                log.warning("node_frequencies_undecodable", controller="recommend", error=str(decoded))
            else:
                nodes.append(decoded)
        return nodes

    def ensure(self, names: Iterable[str]) -> list[str]:
        """Create an empty object for each node in `names` that has none, so that its tuner can report its
        inventory before it is targeted. Returns the nodes created."""
        created = []
        for name in sorted(set(names)):
            if not name or self._cache.get(name) is not None:
                continue
            try:
                self._api.create(_body(name, {"nodeName": name}))
            except AlreadyExistsError:
                continue  # created meanwhile, and the cache has not seen it yet
            except InvalidError as exc:
                # A name the API refuses cannot be fixed by retrying; the policy keeps serving its other nodes.
                log.warning("node_frequencies_not_created", controller="recommend", key=name, error=str(exc))
                continue
            created.append(name)
            self._count("create")
            log.info("node_frequencies_created", controller="recommend", key=name)
        return created

    def write(self, specs: Mapping[str, NodeFrequenciesSpec]) -> list[str]:
        """Bring each named object's spec to the planned one (creating objects that do not exist), or this
        shard's part of it. Returns the nodes whose spec was written."""
        return [name for name, spec in sorted(specs.items()) if self._write_one(name, spec)]

    def _write_one(self, name: str, spec: NodeFrequenciesSpec) -> bool:
        if self._hold_all is None:
            return self._put(name, spec, None, budgets=True)
        cached = self._cache.get(name)
        held = entry_policies(spec) | (entry_policies(NodeFrequencies.from_api(cached).spec) if cached else set())
        with self._hold_all({*held, ALLOCATOR}) as mine:
            return self._put(name, spec, mine, budgets=ALLOCATOR in mine)

    def _put(self, name: str, spec: NodeFrequenciesSpec, mine: frozenset[str] | None, *, budgets: bool) -> bool:
        """Write `spec` (with `mine`, only the part of it this shard holds) to object `name`."""

        def wanted(current: NodeFrequenciesSpec | None) -> dict[str, Any]:
            if mine is None:
                return spec_body(spec)
            return spec_body(merge_owned(current or NodeFrequenciesSpec(node_name=name), spec, mine,
                                         budgets=budgets))

        def mutate(obj: dict[str, Any]) -> dict[str, Any] | None:
            current = NodeFrequencies.from_api(obj).spec
            body = wanted(current)
            if spec_body(current) == body:
                return None
            obj["spec"] = body
            return obj

        result = update_object(self._api, name, mutate, current=self._cache.get(name))
        if result.object is None:
            body = wanted(None)
            try:
                self._api.create(_body(name, body))
            except AlreadyExistsError:
                # Someone created it between our read and our create: write on top of theirs.
                result = update_object(self._api, name, mutate)
            else:
                self._count("create")
                log.info("node_frequencies_created", controller="recommend", key=name, entries=_entries(body))
                return True
        if result.written and result.object is not None:
            self._count("update")
            log.info("node_frequencies_updated", controller="recommend", key=name,
                     entries=_entries(result.object.get("spec") or {}))
        return result.written

    def _count(self, operation: str) -> None:
        if self._metrics is not None:
            self._metrics.node_writes.labels(operation).inc()


def _body(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": NODE_FREQUENCIES_KIND, "metadata": {"name": name}, "spec": dict(spec)}


def _entries(spec: Mapping[str, Any]) -> int:
    return len(spec.get("gpuFrequencies") or []) + len(spec.get("cpuFrequencies") or [])
