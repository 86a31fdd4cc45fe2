"""What each monitor cycle reads from Prometheus: the pods the policies select (few by name, many by their
namespace), never the rest of the fleet; and a policy is judged only from a sample that read its pods."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient
from support.livecache import LiveCache

from climatik.api import LabelSelector
from climatik.kube.client import PODS, POLICIES
from climatik.kube.store import POD_INDEXES, Store
from climatik.monitor.core import Rules, SampleOutcome, clock_level
from climatik.monitor.reconciler import (
    BY_LABEL,
    SAMPLE_KEY,
    DecodedPolicies,
    LatestSample,
    MonitorReconciler,
    PodSelections,
    Sampler,
    index_by_label,
    sampling_scope,
)
from climatik.prom.errors import PromQueryError
from climatik.prom.profiles import PodKey
from climatik.prom.scope import Scope
from climatik.prom.snapshot import GpuReading, GpuSnapshot


class Cluster:
    """Policies and running pods in a fake API server, read through caches as the monitor reads them."""

    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.client = FakeKubeClient(self.cluster)
        self.clock = FakeClock()
        self.pods = LiveCache(self.cluster, PODS, {**POD_INDEXES, BY_LABEL: index_by_label})
        self.policies = DecodedPolicies(LiveCache(self.cluster, POLICIES))

    def policy(self, name: str, namespace: str, selector: dict[str, Any]) -> None:
        self.client.policies.create({"metadata": {"name": name, "namespace": namespace},
                                     "spec": {"powerCapLimit": 1000, "selector": selector}})

    def status(self, name: str, namespace: str, status: dict[str, Any]) -> None:
        self.cluster.patch(POLICIES, namespace, name, {"status": status}, subresource="status")

    def pods_of(self, app: str, namespace: str, count: int, *, node: str = "n1", first: int = 0,
                gpus: bool = False) -> None:
        containers = [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1"}}}] if gpus else []
        for i in range(first, first + count):
            self.client.pods.create({"metadata": {"name": f"{app}-{i}", "namespace": namespace,
                                                  "labels": {"app": app}},
                                     "spec": {"nodeName": node, "containers": containers}})
            self.cluster.patch(PODS, namespace, f"{app}-{i}", {"status": {"phase": "Running"}},
                               subresource="status")


def test_a_small_workload_among_many_is_read_by_name_and_a_namespace_it_fills_is_read_whole() -> None:
    world = Cluster()
    world.pods_of("llm", "ml", 2)
    world.pods_of("batch", "ml", 30)
    world.pods_of("web", "web", 5)
    world.policy("llm", "ml", {"matchLabels": {"app": "llm"}})
    world.policy("web", "web", {"matchLabels": {"app": "web"}})
    world.policy("idle", "quiet", {"matchLabels": {"app": "none"}})

    scope, served, selected, clocks, _ = sampling_scope(world.policies, world.pods)

    assert clocks == scope, "every policy's clocks are read unless the monitor says otherwise"
    assert scope.namespaces == {"ml": {"llm-0", "llm-1"}, "web": None}
    assert served == {"ml/llm", "web/web", "quiet/idle"}, "a policy that selects nothing is still measured: 0 W"
    assert [str(pod.key) for pod in selected["ml/llm"].pods] == ["ml/llm-0", "ml/llm-1"]
    assert selected["quiet/idle"].pods == ()


def test_the_sampler_reads_the_scope_of_the_moment_and_says_which_policies_it_serves() -> None:
    world = Cluster()
    world.pods_of("llm", "ml", 2)
    world.policy("llm", "ml", {"matchLabels": {"app": "llm"}})
    asked: list[Scope] = []
    latest = LatestSample()
    queued: list[str] = []

    def fetch(scope: Scope, clocks: Scope) -> GpuSnapshot:
        asked.append(scope)
        assert clocks == scope
        return GpuSnapshot(query_time=world.clock.wall().timestamp(), gpus={}, pod_gpus={}, scope=scope)

    sampler = Sampler(fetch=fetch, add_clocks=lambda snapshot, _: snapshot,
                      scope=lambda: sampling_scope(world.policies, world.pods), latest=latest,
                      clock=world.clock, policy_keys=world.pods.keys, enqueue=queued.append, interval=5.0)
    sampler(SAMPLE_KEY)

    assert asked == [Scope({"ml": None})]
    outcome = latest.get()
    assert outcome is not None and outcome.policies == {"ml/llm"}
    assert outcome.serves("ml/llm") and not outcome.serves("ml/newer")


def test_only_the_clocks_of_policies_steered_or_near_their_cap_are_read_with_the_power() -> None:
    world = Cluster()
    for app, namespace in (("llm", "ml"), ("web", "web"), ("new", "lab"), ("batch", "jobs")):
        world.pods_of(app, namespace, 2, gpus=True)
        world.policy(app, namespace, {"matchLabels": {"app": app}})  # 1,000 W: capping from 900 W, released under 850
    world.status("llm", "ml", {"currentPower": 950.0, "cappingActionRequired": True})
    world.status("web", "web", {"currentPower": 300.0, "cappingActionRequired": False})
    world.status("batch", "jobs", {"currentPower": 860.0, "cappingActionRequired": False})

    sampling = sampling_scope(world.policies, world.pods, clock_level=partial(clock_level, rules=Rules()))

    assert set(sampling.scope.namespaces) == {"ml", "web", "lab", "jobs"}
    assert set(sampling.clocks.namespaces) == {"ml", "lab", "jobs"}, "capping, not measured yet, near its cap"
    assert sampling.unclocked == {"web/web": 850.0}


def test_a_sample_in_which_a_policy_reaches_its_clock_level_reads_its_clocks_at_the_samples_time() -> None:
    world = Cluster()
    world.pods_of("llm", "ml", 1, gpus=True)
    world.pods_of("web", "web", 1, gpus=True)
    for app, namespace in (("llm", "ml"), ("web", "web")):
        world.policy(app, namespace, {"matchLabels": {"app": app}})
        world.status(app, namespace, {"currentPower": 300.0, "cappingActionRequired": False})
    now = world.clock.wall().timestamp()
    powers = {"GPU-llm": ("ml", "llm-0", 860.0), "GPU-web": ("web", "web-0", 300.0)}
    readings = {uuid: GpuReading(key=uuid, uuid=uuid, gpu_index="0", model="H100", hostname="n1", power_watts=watts,
                                 sm_clock_mhz=None, timestamp=now - 1, pods=frozenset({PodKey(ns, pod)}))
                for uuid, (ns, pod, watts) in powers.items()}
    added: list[tuple[float, Scope]] = []
    fetched: list[Scope] = []

    def fetch(scope: Scope, clocks: Scope) -> GpuSnapshot:
        fetched.append(clocks)
        return GpuSnapshot(query_time=now, gpus=readings, scope=scope,
                           pod_gpus={PodKey(ns, pod): frozenset({uuid}) for uuid, (ns, pod, _) in powers.items()})

    def add_clocks(snapshot: GpuSnapshot, scope: Scope) -> GpuSnapshot:
        added.append((snapshot.query_time, scope))
        gpus = {k: r._replace(sm_clock_mhz=1410.0) if scope.covers(next(iter(r.pods))) else r
                for k, r in snapshot.gpus.items()}
        return GpuSnapshot(query_time=snapshot.query_time, gpus=gpus, pod_gpus=snapshot.pod_gpus, scope=snapshot.scope)

    latest = LatestSample()
    sampler = Sampler(fetch=fetch, add_clocks=add_clocks, latest=latest, clock=world.clock,
                      scope=lambda: sampling_scope(world.policies, world.pods, clock_level=partial(clock_level,
                                                                                                   rules=Rules())),
                      policy_keys=world.policies.policy_keys, enqueue=lambda _key: None, interval=5.0)
    sampler(SAMPLE_KEY)

    assert fetched == [Scope()], "both policies were well under their caps: no clock read with the power"
    assert added == [(now, Scope({"ml": frozenset({"llm-0"})}))], "llm reached 850 W in this very sample"
    outcome = latest.get()
    assert outcome is not None and outcome.snapshot is not None
    assert {k: r.sm_clock_mhz for k, r in outcome.snapshot.gpus.items()} == {"GPU-llm": 1410.0, "GPU-web": None}


def test_when_the_late_clock_read_fails_the_sample_keeps_its_power() -> None:
    world = Cluster()
    world.pods_of("llm", "ml", 1, gpus=True)
    world.policy("llm", "ml", {"matchLabels": {"app": "llm"}})
    world.status("llm", "ml", {"currentPower": 300.0, "cappingActionRequired": False})
    hot = llm_0_read(world, Scope({"ml": None}))
    hot = GpuSnapshot(query_time=hot.query_time, pod_gpus=hot.pod_gpus, scope=hot.scope,
                      gpus={"GPU-a": hot.gpus["GPU-a"]._replace(power_watts=950.0, sm_clock_mhz=None)})

    def add_clocks(_snapshot: GpuSnapshot, _scope: Scope) -> GpuSnapshot:
        raise PromQueryError("timeout", query="max by (UUID) (DCGM_FI_DEV_SM_CLOCK)")

    latest = LatestSample()
    sampler = Sampler(fetch=lambda _scope, _clocks: hot, add_clocks=add_clocks, latest=latest, clock=world.clock,
                      scope=lambda: sampling_scope(world.policies, world.pods, clock_level=partial(clock_level,
                                                                                                   rules=Rules())),
                      policy_keys=world.policies.policy_keys, enqueue=lambda _key: None, interval=5.0)
    sampler(SAMPLE_KEY)

    outcome = latest.get()
    assert outcome is not None and outcome.error is None and outcome.snapshot is hot


def llm_0_read(world: Cluster, scope: Scope) -> GpuSnapshot:
    """A sample of `scope` that read GPU-a, used by ml/llm-0 and drawing 300 W."""
    now = world.clock.wall().timestamp()
    reading = GpuReading(key="GPU-a", uuid="GPU-a", gpu_index="0", model="H100", hostname="n1", power_watts=300.0,
                         sm_clock_mhz=1980.0, timestamp=now - 1, pods=frozenset({PodKey("ml", "llm-0")}))
    return GpuSnapshot(query_time=now, gpus={"GPU-a": reading}, pod_gpus={PodKey("ml", "llm-0"): {"GPU-a"}},
                       scope=scope)


def reconciler_of(world: Cluster, latest: LatestSample) -> MonitorReconciler:
    return MonitorReconciler(policies=world.policies, pods=world.pods, api=world.client.policies, latest=latest,
                             events=None, clock=world.clock, rules=Rules.for_period(5.0))


def reconciler_after_sampling(world: Cluster) -> MonitorReconciler:
    """A reconciler whose latest sample was taken now, as the sampler takes it, and read GPU-a of ml/llm-0."""
    sampling = sampling_scope(world.policies, world.pods)
    latest = LatestSample()
    latest.set(SampleOutcome(llm_0_read(world, sampling.scope), None, world.clock.wall().timestamp(),
                             policies=sampling.policies, selected=sampling.selected))
    return reconciler_of(world, latest)


def test_a_policy_newer_than_the_sample_waits_for_the_next_one_instead_of_reporting_its_pods_missing() -> None:
    world = Cluster()
    world.pods_of("llm", "ml", 1)
    world.policy("llm", "ml", {"matchLabels": {"app": "llm"}})
    latest = LatestSample()
    reconciler = reconciler_of(world, latest)
    now = world.clock.wall().timestamp()
    snapshot = llm_0_read(world, Scope({"ml": None}))

    latest.set(SampleOutcome(snapshot, None, now, policies=frozenset()))
    reconciler("ml/llm")
    assert not (world.client.policies.get("llm", namespace="ml").get("status") or {})

    latest.set(SampleOutcome(snapshot, None, now, policies=frozenset({"ml/llm"})))
    reconciler("ml/llm")
    assert world.client.policies.get("llm", namespace="ml")["status"]["currentPower"] == 300.0


def test_a_policy_is_judged_on_the_pods_whose_series_its_sample_read() -> None:
    world = Cluster()
    world.pods_of("llm", "ml", 1, gpus=True)
    world.policy("llm", "ml", {"matchLabels": {"app": "llm"}})
    reconciler = reconciler_after_sampling(world)
    world.pods_of("llm", "ml", 1, first=1, gpus=True)  # started after the sample: its series were not read

    reconciler("ml/llm")

    status = world.client.policies.get("llm", namespace="ml")["status"]
    assert status["currentPower"] == 300.0 and "podsWithoutMetrics" not in status, \
        "a pod the sample did not read waits for the next sample instead of making the data incomplete"


def test_a_policy_whose_selector_changed_since_the_sample_selects_its_pods_again() -> None:
    world = Cluster()
    world.pods_of("llm", "ml", 1, gpus=True)
    world.pods_of("chat", "ml", 1, gpus=True)
    world.policy("llm", "ml", {"matchLabels": {"app": "llm"}})
    reconciler = reconciler_after_sampling(world)
    world.client.policies.patch("llm", {"spec": {"selector": {"matchLabels": {"app": "chat"}}}}, namespace="ml")

    reconciler("ml/llm")

    status = world.client.policies.get("llm", namespace="ml")["status"]
    assert status["podsWithoutMetrics"] == ["ml/chat-0"], "the new selector's pod, which the sample did not read"


def informed_pods(world: Cluster) -> tuple[Store, Callable[[], object]]:
    """The pod cache as an informer keeps it (an object replaced only when its pod changed), and what syncs it."""
    cache = Store({**POD_INDEXES, BY_LABEL: index_by_label})
    return cache, lambda: cache.replace(world.cluster.objects(PODS))


def test_a_policys_pods_are_selected_again_only_when_its_candidates_or_its_selector_changed() -> None:
    world = Cluster()
    world.pods_of("llm", "ml", 2, gpus=True)
    cache, sync = informed_pods(world)
    sync()
    selections = PodSelections(cache)
    app = LabelSelector(match_labels={"app": "llm"})

    first = selections.select("ml/llm", "ml", app)
    assert [str(p.key) for p in first] == ["ml/llm-0", "ml/llm-1"]
    sync()
    assert selections.select("ml/llm", "ml", app) is first, "nothing changed: the last selection stands"

    world.cluster.patch(PODS, "ml", "llm-1", {"status": {"phase": "Succeeded"}}, subresource="status")
    sync()
    assert [str(p.key) for p in selections.select("ml/llm", "ml", app)] == ["ml/llm-0"]
    world.pods_of("llm", "ml", 1, first=2, gpus=True)
    sync()
    assert [str(p.key) for p in selections.select("ml/llm", "ml", app)] == ["ml/llm-0", "ml/llm-2"]
    assert selections.select("ml/llm", "ml", LabelSelector(match_labels={"app": "chat"})) == ()


def test_the_sampling_scope_keeps_selections_between_cycles_and_forgets_deleted_policies() -> None:
    world = Cluster()
    world.pods_of("llm", "ml", 1, gpus=True)
    world.policy("llm", "ml", {"matchLabels": {"app": "llm"}})
    world.policy("chat", "ml", {"matchLabels": {"app": "llm"}})
    cache, sync = informed_pods(world)
    sync()
    selections = PodSelections(cache)

    before = sampling_scope(world.policies, selections)
    world.client.policies.delete("chat", namespace="ml")
    after = sampling_scope(world.policies, selections)

    assert after.selected["ml/llm"].pods is before.selected["ml/llm"].pods
    assert set(after.selected) == {"ml/llm"}
    assert selections.select("ml/chat", "ml", LabelSelector(match_labels={"app": "llm"})) is not \
        before.selected["ml/chat"].pods, "a deleted policy's selection is not kept"
