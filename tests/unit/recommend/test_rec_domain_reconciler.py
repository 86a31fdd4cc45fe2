"""The recommender with power domains: a rack's budget shared by prioritised policies and the GPUs no policy
selects, written into the nodes' specs, and the domain's status telling what it draws, how it is shared and what
is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from rec_world import Shares, World, shard
from support.livecache import LiveCache

from climatik.kube.client import EVENTS, NODE_FREQUENCIES, NODES, POLICIES, POWER_DOMAINS
from climatik.kube.events import EventRecorder
from climatik.recommend.app import DomainView, node_labels_only
from climatik.recommend.core import ALLOCATOR
from climatik.recommend.domainstatus import DomainMetrics, DomainReconciler
from climatik.recommend.reconciler import RecommendReconciler
from climatik.recommend.writer import NodeWriter

A, B, C, D = "GPU-a", "GPU-b", "GPU-c", "GPU-d"


class DomainWorld(World):
    """The recommender's world with Node objects, PowerDomains and the domain reconciler."""

    def __init__(self) -> None:
        super().__init__()
        self.domains = LiveCache(self.cluster, POWER_DOMAINS)
        self.cluster_nodes = LiveCache(self.cluster, NODES)
        self.view = DomainView(self.domains, self.cluster_nodes)
        self.domain_registry = CollectorRegistry()
        self.domain_reconciler = DomainReconciler(
            domains=self.domains, api=self.client.resource(POWER_DOMAINS), core=self.reconciler._core,
            inputs=lambda: (*self.view(), self.reconciler.all_policies(), self.writer.objects()),
            write_specs=self.writer.write, clock=self.clock, enqueue_policy=self.requeued.append,
            events=EventRecorder(self.client, component="climatik-recommend", clock=self.clock),
            metrics=DomainMetrics(self.domain_registry))

    def build(self, registry: CollectorRegistry | None = None) -> RecommendReconciler:
        built = super().build(registry)
        self.writer: NodeWriter = built._writer
        built._domains = DomainView(LiveCache(self.cluster, POWER_DOMAINS), LiveCache(self.cluster, NODES))
        return built

    def node(self, name: str, **labels: str) -> None:
        self.client.resource(NODES).create({"metadata": {"name": name, "labels": labels}})

    def domain(self, name: str, budget: int, **spec: Any) -> str:
        selector = spec.pop("labels", {"rack": "r1"})
        self.client.resource(POWER_DOMAINS).create({"metadata": {"name": name},
                                              "spec": {"budget": budget, "nodeSelector": {"matchLabels": selector},
                                                       **spec}})
        return name

    def observe_nodes(self, key: str, gpus: dict[str, list[str]], power: dict[str, float]) -> None:
        """The monitor observes the policy's GPUs and what they draw on each node."""
        self.observe(key, gpus, power=sum(power.values()), capping=False)
        namespace, name = key.split("/")
        status = self.status(key)
        status["nodes"] = [{**node, "power": power[node["name"]]} for node in status["nodes"]]
        self.cluster.patch(POLICIES, namespace, name, {"status": status}, subresource="status")

    def node_power(self, node: str, mean: float, peak: float | None = None) -> None:
        obj = next(o for o in self.cluster.objects(NODE_FREQUENCIES) if o["metadata"]["name"] == node)
        status = {**(obj.get("status") or {}), "power": {"mean": mean, "max": peak or mean}}
        self.cluster.patch(NODE_FREQUENCIES, None, node, {"status": status}, subresource="status")

    def reconcile_domain(self, name: str) -> float | None:
        return self.domain_reconciler(name).requeue_after

    def domain_status(self, name: str) -> dict[str, Any]:
        return dict(self.client.resource(POWER_DOMAINS).get(name).get("status") or {})

    def domain_condition(self, name: str, type: str) -> tuple[str, str, str] | None:
        for c in self.domain_status(name).get("conditions") or []:
            if c["type"] == type:
                return c["status"], c["reason"], c["message"]
        return None

    def domain_events(self, name: str) -> list[str]:
        return [e["reason"] for e in self.cluster.objects(EVENTS) if e["involvedObject"]["name"] == name]


@pytest.fixture
def world() -> DomainWorld:
    w = DomainWorld()
    for name in ("n1", "n2"):
        w.node(name, rack="r1")
    w.inventory("n1", [A, B])
    w.inventory("n2", [C, D])
    return w


def test_a_racks_budget_goes_to_the_high_priority_policy_first_and_the_low_one_is_cut(world: DomainWorld) -> None:
    world.domain("rack-1", 1600)
    high = world.policy("chat", limit=2000, algorithm=None, priority=100)
    low = world.policy("batch", limit=2000, algorithm=None, priority=0)
    world.observe_nodes(high, {"n1": [A, B]}, {"n1": 1100.0})
    world.observe_nodes(low, {"n2": [C, D]}, {"n2": 1100.0})
    world.reconcile(high, low)

    budgets = {**world.budgets("n1"), **world.budgets("n2")}
    assert budgets[high] + budgets[low] <= 1600
    assert budgets[high] >= 1100, "the high priority keeps what it draws"
    assert budgets[low] <= 1600 - 1100


def test_the_gpus_no_policy_selects_get_a_budget_of_the_domain_at_its_default_priority(world: DomainWorld) -> None:
    world.domain("rack-1", 1600, defaultPriority=-10)
    chat = world.policy("chat", limit=2000, algorithm=None)
    world.observe_nodes(chat, {"n1": [A, B]}, {"n1": 1100.0})
    world.node_power("n2", 900.0)
    world.reconcile(chat)

    assert "PowerDomain/rack-1" in world.budgets("n2")
    spec = world.client.node_frequencies.get("n2")["spec"]
    assert spec["powerBudgets"][0]["gpuIds"] == [C, D]
    assert world.budgets("n1")[chat] + world.budgets("n2")["PowerDomain/rack-1"] <= 1600


def test_the_domains_status_tells_its_budget_power_and_shares(world: DomainWorld) -> None:
    world.domain("rack-1", 1600)
    chat = world.policy("chat", limit=2000, algorithm=None, guaranteedWatts=500)
    world.observe(chat, {"n1": [A, B]}, power=1100, capping=False)
    world.node_power("n1", 1000.0)
    world.node_power("n2", 300.0)
    world.reconcile_domain("rack-1")

    status = world.domain_status("rack-1")
    assert status["budget"] == 1600 and status["power"] == 1300.0 and status["nodeCount"] == 2
    assert status["allocated"] <= 1600
    shares = {share["name"]: share for share in status["policies"]}
    assert shares[chat]["guaranteed"] == 500 and "(unselected)" in shares
    assert world.domain_condition("rack-1", "Valid")[:2] == ("True", "Valid")  # type: ignore[index]
    assert world.domain_condition("rack-1", "MetricsAvailable")[:2] == ("True", "AllNodesReporting")  # type: ignore[index]
    assert world.domain_registry.get_sample_value("climatik_domain_power_watts", {"domain": "rack-1"}) == 1300.0


def test_a_steady_domain_costs_no_status_writes(world: DomainWorld) -> None:
    world.domain("rack-1", 1600)
    world.node_power("n1", 1000.0)
    world.node_power("n2", 300.0)
    world.reconcile_domain("rack-1")
    before = len(world.writes())

    world.node_power("n1", 1010.0)  # a reading that barely moved
    world.clock.advance(5.0)
    world.reconcile_domain("rack-1")
    writes = [w for w in world.writes()[before + 1:] if w[1] == "PowerDomain"]
    assert writes == []


def test_a_node_without_power_readings_is_named_and_an_event_says_so(world: DomainWorld) -> None:
    world.domain("rack-1", 1600)
    world.node_power("n1", 1000.0)
    world.reconcile_domain("rack-1")

    condition = world.domain_condition("rack-1", "MetricsAvailable")
    assert condition is not None and condition[:2] == ("False", "NodesNotReporting") and "n2" in condition[2]
    assert "DomainNoMetrics" in world.domain_events("rack-1")


def test_guarantees_above_the_budget_and_a_broken_tree_are_conditions_and_the_rest_keeps_working(
        world: DomainWorld) -> None:
    world.domain("rack-1", 1000)
    world.domain("loop-a", 900, labels={"rack": "r1"}, parent="loop-b")
    world.domain("loop-b", 900, labels={"rack": "r1"}, parent="loop-a")
    first = world.policy("first", limit=2000, algorithm=None, guaranteedWatts=800)
    second = world.policy("second", limit=2000, algorithm=None, guaranteedWatts=800)
    world.observe(first, {"n1": [A, B]}, power=1100, capping=False)
    world.observe(second, {"n2": [C, D]}, power=1100, capping=False)
    world.reconcile(first, second)
    for name in ("rack-1", "loop-a", "loop-b"):
        world.reconcile_domain(name)

    over = world.domain_condition("rack-1", "Overcommitted")
    assert over is not None and over[0] == "True" and "ml/first" in over[2] and "ml/second" in over[2]
    assert "DomainOvercommitted" in world.domain_events("rack-1")
    loop = world.domain_condition("loop-a", "Valid")
    assert loop is not None and loop[0] == "False" and "loops" in loop[2]
    assert world.budgets("n1")[first] + world.budgets("n2")[second] <= 1000, "the valid rack still holds"


def test_a_raised_budget_ramps_and_the_domain_is_looked_at_again_until_it_is_there(world: DomainWorld) -> None:
    world.domain("rack-1", 1600, rampWattsPerSecond=100)
    world.node_power("n1", 700.0)
    world.node_power("n2", 300.0)
    world.reconcile_domain("rack-1")
    world.cluster.patch(POWER_DOMAINS, None, "rack-1", {"spec": {"budget": 2600}})

    world.clock.advance(2.0)
    again = world.reconcile_domain("rack-1")
    status = world.domain_status("rack-1")
    assert status["budget"] == 1800.0 and status["targetBudget"] == 2600.0
    assert again is not None and again <= 1.0


def test_the_node_cache_keeps_only_what_says_which_domain_a_node_is_in() -> None:
    served = {"metadata": {"name": "n1", "uid": "u", "resourceVersion": "7", "labels": {"rack": "r1"},
                           "annotations": {"big": "x" * 1000}, "managedFields": [{}]},
              "status": {"images": [{"names": ["registry/image"] * 10}]}, "spec": {"podCIDR": "10.0.0.0/24"}}
    assert node_labels_only(served) == {"metadata": {"name": "n1", "labels": {"rack": "r1"}, "resourceVersion": "7",
                                                     "uid": "u"}}


def test_with_shards_the_allocator_splits_the_rack_for_policies_of_every_shard(world: DomainWorld) -> None:
    world.domain("rack-1", 1600)
    high = world.policy("chat", limit=2000, algorithm=None, priority=100)
    low = world.policy("batch", limit=2000, algorithm=None, priority=0)
    world.observe_nodes(high, {"n1": [A, B]}, {"n1": 1100.0})
    world.observe_nodes(low, {"n2": [C, D]}, {"n2": 1100.0})
    shares = Shares({high: "a", low: "b", ALLOCATOR: "a"})
    a, b = shard(world, shares, "a", domains=world.view), shard(world, shares, "b", domains=world.view)

    def domains_of(member: str, replica: RecommendReconciler) -> DomainReconciler:
        return DomainReconciler(
            domains=world.domains, api=world.client.resource(POWER_DOMAINS), core=replica._core,
            inputs=lambda: (*world.view(), replica.all_policies(), replica._writer.objects()),
            write_specs=replica._writer.write, clock=world.clock, events=None, hold=shares.hold(member))

    b(low)
    domains_of("b", b)("rack-1")
    assert world.budgets("n2") == {} and world.domain_status("rack-1") == {}, "b does not allocate"

    a(high)
    a(low)
    domains_of("a", a)("rack-1")
    budgets = {**world.budgets("n1"), **world.budgets("n2")}
    assert budgets[high] + budgets[low] <= 1600
    assert budgets[high] >= 1100, "the high priority keeps what it draws"
    assert world.domain_status("rack-1")["budget"] == 1600

    b(low)
    assert world.status(low)["budget"] == budgets[low], "the owner reports the allocator's split"
