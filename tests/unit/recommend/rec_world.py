"""A small world for the recommender's reconciler: an in-process API server, caches that always show what it
holds, a fake clock, and a deterministic plug-in algorithm, so that tests read like a cluster's story."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient
from support.livecache import LiveCache

from climatik.algorithms import (
    AlgorithmInput,
    AlgorithmOutput,
    AlgorithmRegistry,
    ParamReader,
    Targets,
    builtin_factories,
)
from climatik.api import format_precise_time
from climatik.kube.client import EVENTS, NODE_FREQUENCIES, POLICIES
from climatik.kube.events import EventRecorder
from climatik.kube.store import CacheReader, Store
from climatik.recommend.app import POLICY_INDEXES
from climatik.recommend.core import Recommender
from climatik.recommend.reconciler import DomainInputs, RecommendMetrics, RecommendReconciler
from climatik.recommend.writer import NodeWriter

STEPS = list(range(210, 1981, 15))
GPU_A, GPU_B, GPU_C = "GPU-aaaa", "GPU-bbbb", "GPU-cccc"


class Fixed:
    """A plug-in: on each new observation, caps every observed GPU at `mhz` while capping is required and
    removes its caps otherwise."""

    name = "fixed"

    def __init__(self, mhz: int) -> None:
        self.mhz = mhz

    @classmethod
    def create(cls, parameters: Mapping[str, str]) -> Fixed:
        return cls(ParamReader(cls.name, parameters, ("mhz",)).integer("mhz", 1200, minimum=1, maximum=10000) or 1)

    def step(self, inp: AlgorithmInput) -> AlgorithmOutput:
        if inp.observation.at == inp.state.get("seen"):
            return AlgorithmOutput(inp.current, dict(inp.state), "no new observation")
        gpus = {gpu.uuid: self.mhz for gpu in inp.observation.gpus} if inp.observation.capping_required else {}
        return AlgorithmOutput(Targets(gpus), {"seen": inp.observation.at}, "fixed")


class World:
    """The cluster, the reconciler under test and the queue it asks to re-run (`requeued`)."""

    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.client = FakeKubeClient(self.cluster)
        self.clock = FakeClock()
        self.registry = CollectorRegistry()
        self.requeued: list[str] = []
        self.policies = LiveCache(self.cluster, POLICIES, POLICY_INDEXES)
        self.nodes = LiveCache(self.cluster, NODE_FREQUENCIES)
        self.reconciler = self.build(self.registry)

    def build(self, registry: CollectorRegistry | None = None) -> RecommendReconciler:
        """A fresh reconciler with empty memory, as after a restart."""
        metrics = RecommendMetrics(registry or CollectorRegistry())
        writer = NodeWriter(api=self.client.node_frequencies, cache=self.nodes, metrics=metrics)
        algorithms = AlgorithmRegistry({**builtin_factories(), Fixed.name: Fixed.create})
        return RecommendReconciler(
            policies=self.policies, api=self.client.policies, writer=writer, core=Recommender(registry=algorithms),
            events=EventRecorder(self.client, component="climatik-recommend", clock=self.clock),
            clock=self.clock, enqueue=self.requeued.append, metrics=metrics)

    # -- the cluster's story -------------------------------------------------------------------------------

    def policy(self, name: str, *, namespace: str = "ml", limit: int = 1000, algorithm: str | None = "fixed",
               parameters: dict[str, str] | None = None, **spec: Any) -> str:
        body: dict[str, Any] = {"metadata": {"name": name, "namespace": namespace},
                                "spec": {"powerCapLimit": limit, "selector": {"matchLabels": {"app": name}},
                                         **spec}}
        if algorithm is not None:
            body["spec"]["customAlgorithms"] = [{"name": algorithm, "parameters": parameters or {}}]
        self.client.policies.create(body)
        return f"{namespace}/{name}"

    def observe(self, key: str, gpus: dict[str, list[str]], *, power: float, capping: bool,
                metrics: tuple[str, str] = ("True", "MetricsFresh"), clock: int = 1980) -> None:
        """Write the policy's status as the monitor would: power, GPUs per node, conditions, now."""
        namespace, name = key.split("/")
        current = self.client.policies.get(name, namespace=namespace).get("status") or {}
        conditions = [c for c in current.get("conditions") or [] if c["type"] != "MetricsAvailable"]
        conditions.append({"type": "MetricsAvailable", "status": metrics[0], "reason": metrics[1], "message": "",
                           "lastTransitionTime": "2025-01-01T00:00:00Z"})
        nodes = [{"name": node, "gpus": [{"uuid": uuid, "power": power / sum(map(len, gpus.values())),
                                           "smClock": clock} for uuid in uuids]} for node, uuids in gpus.items()]
        status = {**current, "cappingActionRequired": capping, "currentPower": power, "nodes": nodes,
                  "lastUpdated": format_precise_time(self.clock.wall()), "conditions": conditions}
        self.cluster.patch(POLICIES, namespace, name, {"status": status}, subresource="status")

    def inventory(self, node: str, uuids: list[str]) -> None:
        """Report the node's GPUs as its tuner would (creating the object if the recommender has not)."""
        if not any(o["metadata"]["name"] == node for o in self.cluster.objects(NODE_FREQUENCIES)):
            self.client.node_frequencies.create({"metadata": {"name": node}, "spec": {"nodeName": node}})
        gpus = [{"uuid": uuid, "index": i, "minFrequency": 210, "maxFrequency": 1980, "defaultFrequency": 1980,
                 "supportedFrequencies": STEPS, "powerLimit": 700} for i, uuid in enumerate(uuids)]
        self.cluster.patch(NODE_FREQUENCIES, None, node, {"status": {"inventory": {"gpus": gpus}}},
                           subresource="status")

    def acknowledge(self, *nodes: str) -> None:
        """The tuners of `nodes` (every node when none is named) apply their spec and say so, as a tuner would."""
        for obj in self.cluster.objects(NODE_FREQUENCIES):
            name = obj["metadata"]["name"]
            if nodes and name not in nodes:
                continue
            entries = [{"gpuId": e["gpuId"], "status": "Applied", "targetFrequency": e["targetFrequency"]}
                       for e in obj["spec"].get("gpuFrequencies") or []]
            status = {**(obj.get("status") or {}), "observedGeneration": obj["metadata"]["generation"],
                      "gpuFrequencies": entries}
            self.cluster.patch(NODE_FREQUENCIES, None, name, {"status": status}, subresource="status")

    def report_budget(self, node: str, policy: str, *, power: float, lever: str = "None",
                      floor: float | None = None) -> None:
        """The node's tuner reports how it keeps the policy's budget (acknowledging the spec), as a tuner would."""
        obj = next(o for o in self.cluster.objects(NODE_FREQUENCIES) if o["metadata"]["name"] == node)
        budget = next(b for b in obj["spec"].get("powerBudgets") or [] if b["policy"] == policy)
        report: dict[str, Any] = {"policy": policy, "watts": budget["watts"], "powerMean": power * 0.9,
                                  "powerMax": power, "lever": lever, "met": power <= budget["watts"]}
        if floor is not None:
            report["floor"] = floor
        others = [b for b in (obj.get("status") or {}).get("budgets") or [] if b["policy"] != policy]
        status = {**(obj.get("status") or {}), "observedGeneration": obj["metadata"]["generation"],
                  "budgets": [*others, report]}
        self.cluster.patch(NODE_FREQUENCIES, None, node, {"status": status}, subresource="status")

    def budgets(self, node: str) -> dict[str, int]:
        spec = self.client.node_frequencies.get(node)["spec"]
        return {b["policy"]: b["watts"] for b in spec.get("powerBudgets") or []}

    def reconcile(self, *keys: str) -> float | None:
        """Reconcile each key in turn; the last one's requeue-after."""
        after = None
        for key in keys:
            after = self.reconciler(key).requeue_after
        return after

    def delete(self, key: str) -> None:
        namespace, name = key.split("/")
        self.client.policies.delete(name, namespace=namespace)

    # -- what a user sees ----------------------------------------------------------------------------------

    def entries(self, node: str) -> list[tuple[str, int, str]]:
        spec = self.client.node_frequencies.get(node)["spec"]
        return [(e["gpuId"], e["targetFrequency"], e.get("policy")) for e in spec.get("gpuFrequencies") or []]

    def status(self, key: str) -> dict[str, Any]:
        namespace, name = key.split("/")
        return dict(self.client.policies.get(name, namespace=namespace).get("status") or {})

    def condition(self, key: str, type: str) -> tuple[str, str, str] | None:
        for c in self.status(key).get("conditions") or []:
            if c["type"] == type:
                return c["status"], c["reason"], c["message"]
        return None

    def exists(self, key: str) -> bool:
        namespace, name = key.split("/")
        return any(o["metadata"]["name"] == name and o["metadata"]["namespace"] == namespace
                   for o in self.cluster.objects(POLICIES))

    def node_names(self) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.cluster.objects(NODE_FREQUENCIES))

    def events(self, key: str) -> list[tuple[str, str, str]]:
        name = key.split("/")[1]
        return [(e["type"], e["reason"], e["message"]) for e in self.cluster.objects(EVENTS)
                if e["involvedObject"]["name"] == name]

    def writes(self) -> list[tuple[str, str, str]]:
        """(verb, kind, subresource) of every write except Events."""
        return [(r.verb, r.resource.kind, r.subresource) for r in self.cluster.writes() if r.resource != EVENTS]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


# -- shards ---------------------------------------------------------------------------------------------------

class Shares:
    """Who owns which key, as the shard memberships would say; keys not named belong to nobody."""

    def __init__(self, owners: dict[str, str]) -> None:
        self.owners = owners

    def hold(self, member: str) -> Callable[[str], contextlib.AbstractContextManager[bool]]:
        @contextlib.contextmanager
        def hold(key: str) -> Iterator[bool]:
            yield self.owners.get(key) == member
        return hold

    def hold_all(self, member: str) -> Callable[[Iterable[str]], contextlib.AbstractContextManager[frozenset[str]]]:
        @contextlib.contextmanager
        def hold_all(keys: Iterable[str]) -> Iterator[frozenset[str]]:
            yield frozenset(key for key in keys if self.owners.get(key) == member)
        return hold_all


def snapshot(cache: CacheReader) -> Store:
    """A cache frozen as `cache` is now: what a replica whose watch lags behind still sees."""
    store = Store()
    store.replace(copy.deepcopy(cache.list()))
    return store


def shard(world: World, shares: Shares, member: str, *, domains: DomainInputs | None = None,
          nodes: CacheReader | None = None) -> RecommendReconciler:
    """One replica run with --shard over the world's cluster, with empty memory (and `nodes` for its cache of
    NodeFrequencies objects, if not the live one)."""
    metrics = RecommendMetrics(CollectorRegistry())
    writer = NodeWriter(api=world.client.node_frequencies, cache=nodes or world.nodes, metrics=metrics,
                        hold_all=shares.hold_all(member))
    algorithms = AlgorithmRegistry({**builtin_factories(), Fixed.name: Fixed.create})
    return RecommendReconciler(
        policies=world.policies, api=world.client.policies, writer=writer, core=Recommender(registry=algorithms),
        events=EventRecorder(world.client, component="climatik-recommend", clock=world.clock),
        clock=world.clock, metrics=metrics, hold=shares.hold(member), sharded=True, domains=domains)


def two_nodes() -> World:
    """A world whose tuners have reported n1 (GPU_A, GPU_B) and n2 (GPU_C)."""
    world = World()
    world.inventory("n1", [GPU_A, GPU_B])
    world.inventory("n2", [GPU_C])
    return world
