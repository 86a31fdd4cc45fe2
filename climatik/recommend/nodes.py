"""Writing NodeFrequencies objects: empty ones for nodes that have none yet, and planned specs.

Objects are named after their node (the CRD requires metadata.name == spec.nodeName). Specs are written with
optimistic concurrency: a 409 (the tuner wrote status meanwhile, or the cache was behind) reads the object
again and writes the planned spec only if it still differs, so a spec already in place is never written twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from climatik.api import NodeFrequencies, NodeFrequenciesSpec, to_dict
from climatik.api.constants import API_VERSION, NODE_FREQUENCIES_KIND
from climatik.api.decoded import DecodedCache
from climatik.kube.client import ResourceClient
from climatik.kube.errors import AlreadyExistsError, InvalidError
from climatik.kube.status import update_object
from climatik.kube.store import CacheReader
from climatik.recommend.metrics import RecommendMetrics
from climatik.recommend.plan import normalized

log = structlog.get_logger(__name__)


def spec_body(spec: NodeFrequenciesSpec) -> dict[str, Any]:
    """The spec as written: both entry lists always present, so equal specs are equal dicts."""
    return to_dict(normalized(spec))


class NodeWriter:
    """Creates and updates NodeFrequencies objects; reads the informer cache to skip what is already there."""

    def __init__(self, *, api: ResourceClient, cache: CacheReader, metrics: RecommendMetrics | None = None) -> None:
        self._api = api
        self._cache = cache
        self._metrics = metrics
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
            body = {"apiVersion": API_VERSION, "kind": NODE_FREQUENCIES_KIND, "metadata": {"name": name},
                    "spec": {"nodeName": name}}
            try:
                self._api.create(body)
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
        """Bring each named object's spec to the planned one (creating objects that do not exist). Returns
        the nodes whose spec was written."""
        written = []
        for name, spec in sorted(specs.items()):
            if self._write_one(name, spec):
                written.append(name)
        return written

    def _write_one(self, name: str, spec: NodeFrequenciesSpec) -> bool:
        wanted = spec_body(spec)

        def mutate(obj: dict[str, Any]) -> dict[str, Any] | None:
            if spec_body(NodeFrequencies.from_api(obj).spec) == wanted:
                return None
            obj["spec"] = wanted
            return obj

        result = update_object(self._api, name, mutate, current=self._cache.get(name))
        if result.object is None:
            body = {"apiVersion": API_VERSION, "kind": NODE_FREQUENCIES_KIND, "metadata": {"name": name},
                    "spec": wanted}
            try:
                self._api.create(body)
            except AlreadyExistsError:
                # Someone created it between our read and our create: write on top of theirs.
                result = update_object(self._api, name, mutate)
            else:
                self._count("create")
                log.info("node_frequencies_created", controller="recommend", key=name, entries=_entries(wanted))
                return True
        if result.written:
            self._count("update")
            log.info("node_frequencies_updated", controller="recommend", key=name, entries=_entries(wanted))
        return result.written

    def _count(self, operation: str) -> None:
        if self._metrics is not None:
            self._metrics.node_writes.labels(operation).inc()


def _entries(spec: Mapping[str, Any]) -> int:
    return len(spec.get("gpuFrequencies") or []) + len(spec.get("cpuFrequencies") or [])
