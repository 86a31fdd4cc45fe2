"""The production control loop on simulated time: the monitor's, the recommender's and the tuner's own code,
joined by the data path's delays and by the watch events a cluster would deliver.

The controllers' cores run here exactly as they run in the processes: the monitor's verdict and status
(climatik.monitor.core), the recommender's pass and status (climatik.recommend.core, which steps the policy's
algorithm through the framework's guarantees and plans every node's spec), and the tuner's applier and status
(climatik.tune.applier, driving the simulated GPUs through a backend over the simulated node). What the API server
would hold is held as API dicts in the runtime's own caches (climatik.kube.store), and a controller is woken
the way a watch wakes it:

* the monitor samples Prometheus every control period and evaluates every policy; it also re-evaluates a
  policy whose spec or status another controller changed;
* a policy whose spec or status changed reaches the recommender after the monitor latency (a watch event);
  so does a NodeFrequencies status the tuner rewrote, for the policies it concerns (the recommender's own
  routing);
* a NodeFrequencies spec the recommender wrote reaches the node's tuner after the recommend latency and is
  applied after the apply latency (then the GPU's own clock lag);
* a controller is not woken by its own write: its core answers the same on the same input, so that reconcile
  would change nothing.

With `node_budgets` the policies keep the default enforcement (NodeBudgets): the recommender also splits each
policy's budget over its nodes, and every node's tuner runs its guard (climatik.tune.guard.NodeGuard) every guard
period on the GPUs' instantaneous readings, with the budgets of the spec it last applied: power limits, clock caps
combined with the algorithm's targets, and budget statuses written when they say something new (which wake the
recommender as any tuner status does). Without it the policies say ClocksOnly and only clocks are set.

`domains` (PowerDomain API dicts, over the scenario's nodes labelled by `node_labels`) adds the domain level: the
recommender's passes take the domains' split (climatik.recommend.sharing), and a domain pass (the domain
reconciler's core: split, write the specs a new split changed, write each domain's status) runs when a tuner's
status reaches the recommender and when the split interval or a ramp asks for it. `domain_changes` are edits of
a domain's spec at given times, as a user (or a facility's demand-response hook) makes them. `policy_fields`
sets PolicySpec fields the scenario does not (priority, guaranteed_watts), by policy name.

Only what a process does around its core is left out: finalizers, Events, metrics and the tuner's periodic
resync.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from climatik.algorithms import Algorithm, AlgorithmRegistry
from climatik.api import (
    AlgorithmRef,
    DecodedCache,
    GpuInventory,
    NodeFrequencies,
    PolicySpec,
    PowerCappingPolicy,
    to_dict,
)
from climatik.api.domain import PowerDomain
from climatik.api.nodefrequencies import APPLIED, UNSUPPORTED, PowerBudget
from climatik.api.policy import CLOCKS_ONLY, NODE_BUDGETS
from climatik.kube.store import Store, thaw_object
from climatik.monitor import core as monitor
from climatik.prom.profiles import PodKey
from climatik.prom.snapshot import GpuReading, GpuSnapshot
from climatik.recommend import core as recommend
from climatik.recommend.app import POLICY_INDEXES, policies_of_node
from climatik.recommend.domainstatus import desired_status as domain_status
from climatik.recommend.report import desired_status as recommend_status
from climatik.recommend.step import StepSettings
from climatik.recommend.writer import spec_body
from climatik.sim.loop.harness import (
    ORDER_MONITOR,
    ORDER_RECOMMEND,
    ORDER_TUNE,
    DataPath,
    RunContext,
)
from climatik.sim.loop.scenario import PolicyPlan, World
from climatik.sim.node import SimNode
from climatik.tune.applier import Applier, desired_status
from climatik.tune.backends.base import DeviceResult, GpuBackend, fit_to_steps
from climatik.tune.guard import BudgetReports, NodeGuard
from climatik.tune.levers import CappedGpus, PowerLimitError, PowerState
from climatik.tune.state import StateStore

T = TypeVar("T")

#: Who wrote an object: a controller is not woken by its own writes.
MONITOR, RECOMMENDER, TUNER, USER = "monitor", "recommender", "tuner", "user"
#: How often each node's guard ticks, as the tuner's guard thread does by default.
GUARD_PERIOD_S = 0.1
#: The creation time every simulated policy gets (its age ranks it only against other simulated policies).
CREATED = "2026-01-01T00:00:00Z"


class SimulatedClock:
    """A `climatik.clock.Clock` on simulated time, for the tuner's applier. Nothing waits in simulated time."""

    def __init__(self, datapath: DataPath) -> None:
        self._datapath = datapath
        self.now_s = 0.0

    def now(self) -> float:
        return self.now_s

    def wall(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._datapath.unix(self.now_s), dt.UTC)

    def sleep(self, seconds: float) -> None:
        raise RuntimeError("nothing sleeps in simulated time")

    def wait_event(self, event: threading.Event, timeout: float) -> bool:
        raise RuntimeError("nothing waits in simulated time")

    def wait_condition(self, cond: threading.Condition, timeout: float | None) -> None:
        raise RuntimeError("nothing waits in simulated time")


class NodeGpus:
    """A tuner GPU backend (climatik.tune.backends.base.GpuBackend) and the guard's power devices
    (climatik.tune.guard.PowerDevices) over a simulated node, in process."""

    name = "sim"

    def __init__(self, node: SimNode) -> None:
        self._node = node
        self.changes = 0
        self.limit_changes = 0

    def inventory(self) -> list[GpuInventory]:
        return [GpuInventory(uuid=gpu.uuid, index=gpu.index, model=gpu.profile.model_name,
                             min_frequency=gpu.profile.min_sm_mhz, max_frequency=gpu.profile.max_sm_mhz,
                             default_frequency=gpu.profile.default_sm_mhz,
                             supported_frequencies=list(gpu.profile.supported_clocks()),
                             power_limit=round(gpu.power_limit_w), min_power_limit=round(gpu.min_power_limit_w),
                             max_power_limit=round(gpu.max_power_limit_w)) for gpu in self._node.gpus]

    def power_states(self) -> dict[str, PowerState]:
        return {gpu.uuid: PowerState(power=gpu.instant_power_w, limit=gpu.power_limit_w,
                                     min_limit=gpu.min_power_limit_w, max_limit=gpu.max_power_limit_w)
                for gpu in self._node.gpus}

    def set_power_limit(self, uuid: str, watts: float) -> None:
        try:
            self._node.set_power_limit(uuid, watts)
        except (KeyError, ValueError) as error:
            raise PowerLimitError(str(error)) from error
        self.limit_changes += 1

    def apply(self, uuid: str, max_mhz: int) -> DeviceResult:
        gpu = self._gpu(uuid)
        if gpu is None:
            return DeviceResult(UNSUPPORTED, requested_mhz=max_mhz, message=f"no GPU {uuid} on this node")
        fit = fit_to_steps(max_mhz, gpu.profile.supported_clocks())
        locked = self._node.set_locked_clock(uuid, fit.mhz)
        self.changes += 1
        return DeviceResult(APPLIED, requested_mhz=max_mhz, applied_mhz=locked, current_mhz=gpu.sm_clock_mhz,
                            message=fit.note)

    def reset(self, uuid: str) -> DeviceResult:
        gpu = self._gpu(uuid)
        if gpu is None:
            return DeviceResult(UNSUPPORTED, message=f"no GPU {uuid} on this node")
        self._node.reset_locked_clock(uuid)
        self.changes += 1
        return DeviceResult(APPLIED, current_mhz=gpu.sm_clock_mhz, message="locked clocks reset")

    def current_clock(self, uuid: str) -> int | None:
        gpu = self._gpu(uuid)
        return None if gpu is None else gpu.sm_clock_mhz

    def close(self) -> None:
        """Nothing is held."""

    def _gpu(self, uuid: str) -> Any:
        return next((gpu for gpu in self._node.gpus if gpu.uuid == uuid), None)


class ApiObjects:
    """The policies and NodeFrequencies objects as the API server holds them (API dicts, versioned), in the
    runtime's own caches; every write tells `on_write(kind, key, writer)`."""

    def __init__(self, on_write: Callable[[str, str, str], None]) -> None:
        self.policies = Store(POLICY_INDEXES)
        self.nodes = Store()
        self.domains = Store()
        self._on_write = on_write
        self._version = 0
        #: Writes by (kind, field, writer), e.g. ("policy", "status", "monitor"): what the API server would count.
        self.writes: Counter[tuple[str, str, str]] = Counter()
        # Decoded once per resourceVersion, as the recommender's reconciler decodes its caches.
        self._typed_policies: DecodedCache[PowerCappingPolicy] = DecodedCache(PowerCappingPolicy.from_api)
        self._typed_nodes: DecodedCache[NodeFrequencies] = DecodedCache(NodeFrequencies.from_api)
        self._typed_domains: DecodedCache[PowerDomain] = DecodedCache(PowerDomain.from_api)

    def store(self, kind: str) -> Store:
        return {"policy": self.policies, "node": self.nodes, "domain": self.domains}[kind]

    def add(self, obj: dict[str, Any], *, kind: str) -> None:
        self.store(kind).upsert(self._versioned(obj))

    def write(self, kind: str, key: str, field: str, value: Any, *, writer: str) -> None:
        """Set `field` (spec or status) of an object, as a PUT that changes it; a spec change moves generation."""
        store = self.store(kind)
        current = store.get(key)
        assert current is not None, f"no {kind} {key}"
        obj = thaw_object(current)
        obj[field] = value
        if field == "spec":
            obj["metadata"]["generation"] = int(obj["metadata"].get("generation") or 1) + 1
        store.upsert(self._versioned(obj))
        self.writes[(kind, field, writer)] += 1
        self._on_write(kind, key, writer)

    def policy(self, key: str) -> PowerCappingPolicy:
        obj = self.policies.get(key)
        assert obj is not None, f"no policy {key}"
        return PowerCappingPolicy.from_api(obj)

    def typed_policies(self) -> dict[str, PowerCappingPolicy]:
        return {policy.key: policy for policy in _decoded(self._typed_policies, self.policies)}

    def typed_nodes(self) -> list[NodeFrequencies]:
        return _decoded(self._typed_nodes, self.nodes)

    def typed_domains(self) -> list[PowerDomain]:
        return _decoded(self._typed_domains, self.domains)

    def _versioned(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._version)
        obj["metadata"].setdefault("generation", 1)
        return obj


class Controllers:
    """The three controllers' cores over one world's objects: what each does when woken, without the schedule.

    `on_write(kind, key, writer)` is told about every write (the watch events); `latest` is the monitor's latest
    Prometheus sample. Times are simulated seconds.
    """

    def __init__(self, world: World, datapath: DataPath, *, registry: AlgorithmRegistry,
                 settings: StepSettings, on_write: Callable[[str, str, str], None] = lambda *_: None,
                 ref: AlgorithmRef | None = None, node_budgets: bool = False,
                 domains: Sequence[Mapping[str, Any]] = (),
                 node_labels: Mapping[str, Mapping[str, str]] | None = None,
                 policy_fields: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.world = world
        self._policy_fields = {name: dict(fields) for name, fields in (policy_fields or {}).items()}
        self.clock = SimulatedClock(datapath)
        self.api = ApiObjects(on_write)
        self.rules = monitor.Rules.for_period(datapath.monitor_interval_s)
        self.latest: monitor.SampleOutcome | None = None
        self.registry = registry
        self.recommender = recommend.Recommender(registry=registry, settings=settings)
        self.plans = {f"{plan.namespace}/{plan.name}": plan for plan in world.policies}
        self.backends = {node.name: NodeGpus(node) for node in world.nodes}
        self.node_budgets = node_budgets
        self._capped = {name: CappedGpus(backend) for name, backend in self.backends.items()}
        self._appliers = {name: Applier(state=StateStore(None), clock=self.clock, gpu_backend=self._gpu_backend(name))
                          for name in self.backends}
        self._guards = {name: NodeGuard(self.backends[name], self._capped[name]) for name in self.backends}
        self._reports = {name: BudgetReports() for name in self.backends}
        #: The budgets each node's tuner keeps: those of the spec it last applied.
        self.budgets: dict[str, list[PowerBudget]] = {}
        self._ref = ref
        for node in world.nodes:
            self.api.add({"metadata": {"name": node.name}, "spec": {"nodeName": node.name}}, kind="node")
        for plan in self.plans.values():
            self.api.add({"metadata": {"name": plan.name, "namespace": plan.namespace,
                                       "creationTimestamp": CREATED},
                          "spec": to_dict(self.spec(plan, 0.0))}, kind="policy")
        for domain in domains:
            self.api.add(thaw_object(domain), kind="domain")
        self.node_labels = {name: dict(labels) for name, labels in (node_labels or {}).items()}

    def spec(self, plan: PolicyPlan, now_s: float) -> PolicySpec:
        """The policy's spec at `now_s`, naming the loop's algorithm and its enforcement."""
        spec = plan.spec_at(now_s, self._ref)
        return dataclasses.replace(spec, enforcement=NODE_BUDGETS if self.node_budgets else CLOCKS_ONLY,
                                   **self._policy_fields.get(plan.name, {}))

    def monitor(self, key: str, now_s: float) -> None:
        """The monitor's reconcile of one policy on the latest sample."""
        self.clock.now_s = now_s
        policy = self.api.policy(key)
        plan = self.plans[key]
        pods = [monitor.SelectedPod(PodKey(p.pod.namespace, p.pod.pod), p.node.name)
                for p in self.world.gpus_of(plan.name) if p.pod is not None]
        now = self.clock.wall()
        verdict = monitor.evaluate(policy, pods, self.latest, now=now, rules=self.rules)
        current = self.api.policies.get(key)
        status = monitor.desired_status((current or {}).get("status"), verdict, limit=policy.spec.power_cap_limit,
                                        generation=policy.metadata.generation, now=now, rules=self.rules)
        if status is not None:
            self.api.write("policy", key, "status", status, writer=MONITOR)

    def recommend(self, key: str, now_s: float) -> recommend.Pass:
        """The recommender's reconcile of one policy; its pass says which other policies to wake (conflicts) and
        when to look at this one again."""
        self.clock.now_s = now_s
        now = self.clock.wall()
        policy = self.api.policy(key)
        done = self.recommender.step(policy, self.api.typed_policies(), self.api.typed_nodes(), now=now,
                                     domains=self.api.typed_domains(), node_labels=self.node_labels)
        for name, spec in sorted(done.writes.items()):
            self.api.write("node", name, "spec", spec_body(spec), writer=RECOMMENDER)
        assert done.report is not None
        current = self.api.policies.get(key)
        status = recommend_status((current or {}).get("status"), done.report,
                                          generation=policy.metadata.generation, now=now)
        if status is not None:
            self.api.write("policy", key, "status", status, writer=RECOMMENDER)
        return done

    def domains(self, now_s: float) -> tuple[frozenset[str], float | None]:
        """The domain reconciler's pass over every domain: the split (specs written when it is new), and each
        domain's status; returns the policies whose budget moved and when to look again."""
        self.clock.now_s = now_s
        now = self.clock.wall()
        policies, nodes, domains = self.api.typed_policies(), self.api.typed_nodes(), self.api.typed_domains()
        outcome = self.recommender.share(domains, self.node_labels, policies, nodes, now=now)
        if outcome.fresh:
            for name, spec in sorted(self.recommender.replan(policies, nodes, origin="domains").writes.items()):
                self.api.write("node", name, "spec", spec_body(spec), writer=RECOMMENDER)
        shared = outcome.shared
        waits = [outcome.wait] if outcome.wait is not None else []
        for domain in domains if shared is not None else []:
            assert shared is not None
            resolved = shared.tree.domains[domain.name]
            current = self.api.domains.get(domain.name)
            status = domain_status((current or {}).get("status"), resolved, shared.allocation.domains.get(
                domain.name), shared.power.get(domain.name), generation=domain.metadata.generation, now=now)
            if status is not None:
                self.api.write("domain", domain.name, "status", status, writer=RECOMMENDER)
            if resolved.budget != resolved.target:
                waits.append(self.recommender.settings.domain_interval)
        return outcome.moved, min(waits) if waits else None

    def tune(self, name: str, now_s: float) -> None:
        """A node's tuner: apply its object's spec to the GPUs and write what it reports."""
        self.clock.now_s = now_s
        obj = self.api.nodes.get(name)
        assert obj is not None
        node = NodeFrequencies.from_api(obj)
        report = self._appliers[name].apply(node.spec.gpu_frequencies or [], node.spec.cpu_frequencies or [])
        if self.node_budgets:
            self.budgets[name] = list(node.spec.power_budgets or [])
        current = dict(obj.get("status") or {})
        guarded = {key: current.pop(key) for key in ("budgets", "power") if key in current}
        status = desired_status(current, report, generation=node.metadata.generation, now=self.clock.wall())
        if status is not None:
            self.api.write("node", name, "status", {**status, **guarded}, writer=TUNER)
        if self.node_budgets:
            # The new budgets are acknowledged at once, as the tuner's guard thread does on the next tick.
            self.guard(name, now_s)

    def guard(self, name: str, now_s: float) -> None:
        """One tick of a node's guard: keep its budgets, and write their statuses and the node's GPU power when
        they say something new."""
        self.clock.now_s = now_s
        tick = self._guards[name].tick(self.budgets.get(name, []), now_s)
        reports = self._reports[name]
        if not reports.due(tick.budgets, now_s, power=tick.power, scale=tick.scale):
            return
        obj = self.api.nodes.get(name)
        assert obj is not None
        status = dict(obj.get("status") or {})
        before = (status.get("budgets"), status.get("power"))
        status["budgets"] = [to_dict(budget) for budget in tick.budgets]
        if not tick.budgets:
            status.pop("budgets")
        if tick.power is not None:
            status["power"] = to_dict(tick.power)
        if (status.get("budgets"), status.get("power")) != before:
            self.api.write("node", name, "status", status, writer=TUNER)
        reports.written(tick.budgets, now_s, power=tick.power)

    def _gpu_backend(self, name: str) -> GpuBackend:
        return self._capped[name] if self.node_budgets else self.backends[name]


def _decoded(cache: DecodedCache[T], store: Store) -> list[T]:
    typed = cache.decode_all(store.list())
    problems = [item for item in typed if isinstance(item, Exception)]
    assert not problems, f"the simulated objects do not decode: {problems}"
    return [item for item in typed if not isinstance(item, Exception)]


class ProductionLoop:
    """Runs `algorithm` for every policy of the scenario the way the three controllers do in a cluster.

    `samples` keeps every Prometheus sample the monitor took, with its simulated time.
    """

    instant = False

    def __init__(self, algorithm: Algorithm, *, ref: AlgorithmRef | None = None, label: str | None = None,
                 step_settings: StepSettings | None = None, node_budgets: bool = False,
                 guard_period_s: float = GUARD_PERIOD_S, domains: Sequence[Mapping[str, Any]] = (),
                 node_labels: Mapping[str, Mapping[str, str]] | None = None,
                 domain_changes: Sequence[tuple[float, str, Mapping[str, Any]]] = (),
                 policy_fields: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.label = label or algorithm.name
        self.policy_fields = policy_fields
        self.node_budgets = node_budgets
        self.guard_period_s = guard_period_s
        self.domains = list(domains)
        self.node_labels = node_labels
        self.domain_changes = list(domain_changes)
        self._domain_pass_at: float | None = None
        self._recommend_pending: dict[tuple[str, bool], float] = {}
        #: (simulated time, sum of every node budget in the NodeFrequencies specs) after each spec write.
        self.allocated: list[tuple[float, float]] = []
        name = ref.name if ref is not None else algorithm.name
        # The recommender resolves the policy's algorithm through a registry; this one holds the built instance.
        self.registry = AlgorithmRegistry({name: lambda parameters: algorithm})
        self.ref = ref if ref is not None else AlgorithmRef(name)
        self.step_settings = step_settings or StepSettings()
        self.samples: list[tuple[float, monitor.SampleOutcome]] = []
        self._controllers: Controllers | None = None

    @property
    def applies(self) -> int:
        """How many GPU clock changes the tuners made."""
        if self._controllers is None:
            return 0
        return sum(backend.changes for backend in self._controllers.backends.values())

    @property
    def limit_changes(self) -> int:
        """How many GPU power-limit changes the guards made."""
        if self._controllers is None:
            return 0
        return sum(backend.limit_changes for backend in self._controllers.backends.values())

    def domain_status(self, name: str) -> dict[str, Any]:
        """A domain's status as the API server holds it now."""
        obj = self._started().api.domains.get(name)
        assert obj is not None, f"no domain {name}"
        return thaw_object(obj.get("status") or {})

    @property
    def writes(self) -> Counter[tuple[str, str, str]]:
        """API writes so far by (kind, field, writer)."""
        return Counter() if self._controllers is None else Counter(self._controllers.api.writes)

    def start(self, ctx: RunContext) -> None:
        """Create the objects, wire the controllers to the run's schedule, and let each tuner report."""
        self._schedule, self._telemetry, self._datapath = ctx.schedule, ctx.telemetry, ctx.datapath
        self._controllers = controllers = Controllers(ctx.world, ctx.datapath, registry=self.registry,
                                                      settings=self.step_settings, on_write=self._written,
                                                      ref=self.ref, node_budgets=self.node_budgets,
                                                      domains=self.domains, node_labels=self.node_labels,
                                                      policy_fields=self.policy_fields)
        for key, plan in controllers.plans.items():
            for change in plan.caps[1:]:
                self._schedule.at(change.at_s, self._cap_change(key, plan), order=ORDER_RECOMMEND)
        for node in ctx.world.nodes:
            self._schedule.at(0.0, self._tune_later(node.name), order=ORDER_TUNE)
            if self.node_budgets:
                self._schedule.every(self.guard_period_s, self._guard_later(node.name), order=ORDER_TUNE)
        self._schedule.every(ctx.datapath.monitor_interval_s, self._monitor_cycle,
                             phase_s=ctx.datapath.monitor_phase_s, order=ORDER_MONITOR)
        for at_s, name, patch in self.domain_changes:
            self._schedule.at(at_s, self._domain_change(name, patch), order=ORDER_RECOMMEND)
        if self.domains:
            self._domains_at(0.0)

    def before_step(self, now_s: float) -> None:
        return None

    def _monitor_cycle(self, now_s: float) -> None:
        controllers = self._started()
        outcome = monitor.SampleOutcome(self._snapshot(now_s), None, self._datapath.unix(now_s))
        self.samples.append((now_s, outcome))
        controllers.latest = outcome
        for key in sorted(controllers.plans):
            controllers.monitor(key, now_s)

    def _snapshot(self, now_s: float) -> GpuSnapshot:
        controllers = self._started()
        world = controllers.world
        readings: dict[str, GpuReading] = {}
        pod_gpus: dict[PodKey, frozenset[str]] = {}
        for uuid, sample in self._telemetry.samples().items():
            placed = world.gpu(uuid)
            pods = frozenset() if placed.pod is None else frozenset({PodKey(placed.pod.namespace, placed.pod.pod)})
            readings[uuid] = GpuReading(
                key=uuid, uuid=uuid, gpu_index=str(placed.gpu.index), model=placed.gpu.profile.model_name,
                hostname=placed.node.name, power_watts=sample.power_w, sm_clock_mhz=float(sample.sm_clock_mhz),
                timestamp=self._datapath.unix(sample.scraped_s), pods=pods)
            for pod in pods:
                pod_gpus[pod] = pod_gpus.get(pod, frozenset()) | {uuid}
        snapshot = GpuSnapshot(query_time=self._datapath.unix(now_s), gpus=readings, pod_gpus=pod_gpus)
        # As the monitor's sample: only the SM clocks of the GPUs of policies that drew at least their clock level.
        clocked: set[str] = set()
        for key, plan in controllers.plans.items():
            selected = [PodKey(p.pod.namespace, p.pod.pod) for p in world.gpus_of(plan.name) if p.pod is not None]
            level = monitor.clock_level(controllers.api.policy(key), controllers.rules)
            if snapshot.total_for(selected).watts >= level:
                clocked |= {p.uuid for p in world.gpus_of(plan.name)}
        unclocked = {uuid: reading._replace(sm_clock_mhz=None) for uuid, reading in readings.items()
                     if uuid not in clocked}
        return dataclasses.replace(snapshot, gpus={**readings, **unclocked}) if unclocked else snapshot

    def _written(self, kind: str, key: str, writer: str) -> None:
        controllers = self._started()
        now_s = controllers.clock.now_s
        if kind == "policy":
            watch = now_s + self._datapath.monitor_latency_s
            if writer != RECOMMENDER:
                self._recommend_at(key, watch)
            if writer != MONITOR:
                self._schedule.at(watch, self._monitor_later(key), order=ORDER_MONITOR)
            return
        if kind == "domain":
            if writer != RECOMMENDER:
                self._domains_at(now_s + self._datapath.recommend_latency_s)
            return
        obj = controllers.api.nodes.get(key)
        assert obj is not None
        if writer == TUNER and self.domains:
            self._domains_at(now_s + self._datapath.recommend_latency_s)
        if writer == RECOMMENDER:
            self.allocated.append((now_s, sum(float(b.get("watts") or 0) for node in controllers.api.nodes.list()
                                              for b in (node.get("spec") or {}).get("powerBudgets") or [])))
            actuation = self._datapath.recommend_latency_s + self._datapath.apply_latency_s
            self._schedule.at(now_s + actuation, self._tune_later(key), order=ORDER_TUNE)
            return
        for policy in policies_of_node(controllers.api.policies)(obj):
            if policy in controllers.plans:
                self._recommend_at(policy, now_s + self._datapath.recommend_latency_s)

    def _started(self) -> Controllers:
        assert self._controllers is not None, "the loop has not been started"
        return self._controllers

    def _cap_change(self, key: str, plan: PolicyPlan) -> Callable[[float], None]:
        def change(now_s: float) -> None:
            controllers = self._started()
            controllers.clock.now_s = now_s
            controllers.api.write("policy", key, "spec", to_dict(controllers.spec(plan, now_s)), writer=USER)

        return change

    def _recommend_at(self, key: str, when_s: float, *, requeue: bool = False) -> None:
        """Wake the recommender for `key` at `when_s`, as its work queue would: a key waits once, so events that
        arrive while it waits cost one reconcile, and of its delayed requeues the earliest is kept."""
        slot = (key, requeue)
        pending = self._recommend_pending.get(slot)
        if pending is not None and pending <= when_s + 1e-9:
            return
        self._recommend_pending[slot] = when_s
        self._schedule.at(when_s, self._recommend_later(slot), order=ORDER_RECOMMEND)

    def _recommend_later(self, slot: tuple[str, bool]) -> Callable[[float], None]:
        def recommend_now(now_s: float) -> None:
            pending = self._recommend_pending.get(slot)
            if pending is None or now_s + 1e-9 < pending:
                return  # superseded by an earlier wake-up of the same kind
            del self._recommend_pending[slot]
            key = slot[0]
            done = self._started().recommend(key, now_s)
            for other in sorted(done.moved):
                self._recommend_at(other, now_s)
            if done.recheck_after is not None:
                self._recommend_at(key, now_s + done.recheck_after, requeue=True)

        return recommend_now

    def _domains_at(self, when_s: float) -> None:
        """Wake the domain pass at `when_s`, unless one is due by then (the work queue's de-duplication)."""
        if self._domain_pass_at is not None and self._domain_pass_at <= when_s:
            return
        self._domain_pass_at = when_s
        self._schedule.at(when_s, self._domain_pass, order=ORDER_RECOMMEND)

    def _domain_pass(self, now_s: float) -> None:
        if self._domain_pass_at is None or now_s + 1e-9 < self._domain_pass_at:
            return  # superseded by an earlier pass
        self._domain_pass_at = None
        moved, after = self._started().domains(now_s)
        for key in sorted(moved):
            self._recommend_at(key, now_s)
        if after is not None:
            self._domains_at(now_s + after)

    def _domain_change(self, name: str, patch: Mapping[str, Any]) -> Callable[[float], None]:
        def change(now_s: float) -> None:
            controllers = self._started()
            controllers.clock.now_s = now_s
            current = controllers.api.domains.get(name)
            assert current is not None, f"no domain {name}"
            controllers.api.write("domain", name, "spec", {**current["spec"], **patch}, writer=USER)

        return change

    def _monitor_later(self, key: str) -> Callable[[float], None]:
        return lambda now_s: self._started().monitor(key, now_s)

    def _tune_later(self, name: str) -> Callable[[float], None]:
        return lambda now_s: self._started().tune(name, now_s)

    def _guard_later(self, name: str) -> Callable[[float], None]:
        return lambda now_s: self._started().guard(name, now_s)
