"""The monitor's pure core: from one policy, its pods and the latest Prometheus sample to the policy's status.

Inputs in, desired status out, nothing read from a cache or a clock: the reconciler does that I/O around it, and
the simulated-time benchmark runs exactly this code.

* Which pods count: running pods bound to a node, matching the selector (`select_pods`). A pod that holds no GPU
  (no `nvidia.com/gpu` or MIG resource, no resource claim: a router, a CPU-only sidecar) draws no GPU power and
  never makes the data incomplete; only a pod that holds GPUs and has no series is missing data.
* Whose SM clocks a sample reads (`clock_level`): those of the policies whose clocks are steered or may be.
* What they draw (`measure`): the distinct GPUs of the pods, each counted once however many pods share it
  (time-slicing), per node and per GPU, bounded in size.
* Whether capping is required (`decide`): on at the threshold, off only under the release level (hysteresis).
* The whole verdict (`evaluate`), its exceptions included: no sample yet, a failed query, a stale sample, a
  selector that cannot select, readings missing for some GPUs.
* The status (`desired_status`): the monitor owns the observation fields and the MetricsAvailable and
  CappingRequired conditions; everything else (the recommender's) is carried over untouched. A steady policy is
  written only when something a reader acts on changed, or when the heartbeat is due.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from climatik.api import (
    GpuObservation,
    LabelSelector,
    NodeObservation,
    PolicySpec,
    PowerCappingPolicy,
    format_precise_time,
    parse_time,
    to_dict,
)
from climatik.api.conditions import CAPPING_REQUIRED, INCOMPLETE_DATA, METRICS_AVAILABLE, UNKNOWN, set_condition
from climatik.api.constants import DEFAULT_RELEASE_BAND
from climatik.prom.errors import PromError
from climatik.prom.profiles import PodKey
from climatik.prom.snapshot import GpuReading, GpuSnapshot, PowerTotal

MAX_NODES = 512
MAX_GPUS_PER_NODE = 64
MAX_PODS_PER_GPU = 16
MAX_PODS_WITHOUT_METRICS = 64

#: The conditions this core writes; any other condition in a status belongs to another writer.
OWNED_CONDITIONS = (METRICS_AVAILABLE, CAPPING_REQUIRED)


# -- inputs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectedPod:
    """A selected pod, the node it runs on, and whether it holds GPUs (a device-plugin or DRA allocation)."""

    key: PodKey
    node: str
    holds_gpus: bool = True


@dataclass(frozen=True)
class Selection:
    """The pods a policy's selector chose when a sample was taken: the pods whose series the sample read."""

    selector: LabelSelector
    pods: tuple[SelectedPod, ...]


@dataclass(frozen=True)
class SampleOutcome:
    """The latest Prometheus sample: a snapshot, or the error that prevented one, and when it was taken (UNIX s).
    `policies` are the keys of the policies whose pods it read (None: every policy); `selected` the pods each of
    them selected then, by key."""

    snapshot: GpuSnapshot | None
    error: PromError | None
    taken_at: float
    policies: frozenset[str] | None = None
    selected: Mapping[str, Selection] = field(default_factory=dict)

    def serves(self, key: str) -> bool:
        """Whether this sample can judge the policy `key`: it read the policy's pods, or it failed (which no
        policy can be measured through)."""
        return self.policies is None or self.snapshot is None or key in self.policies

    def pods_of(self, key: str, selector: LabelSelector) -> tuple[SelectedPod, ...] | None:
        """The pods policy `key` selected with `selector` when the sample was taken; None when the sample did not
        select for it, or did with another selector (the policy changed since)."""
        found = self.selected.get(key)
        return found.pods if found is not None and found.selector == selector else None


@dataclass(frozen=True)
class Rules:
    """How the monitor judges and writes: a sample older than `max_age` seconds is stale; `release_band` is the
    default distance (percent of the limit) under the threshold at which capping is released; a changed
    observation is worth a write when power moved by `power_delta_percent` of the limit (at least
    `power_delta_watts`), a GPU's clock moved by `clock_delta_mhz`, or `heartbeat` seconds passed."""

    max_age: float = 30.0
    release_band: int = DEFAULT_RELEASE_BAND
    # The status records moves a reader acts on; every cycle's power is in the monitor's metrics. At 3 % of the
    # limit, a steady load's own jitter (a few percent of each GPU's power, partly averaging out over the GPUs)
    # does not rewrite the status every few seconds, while a load that drifts towards the cap is written well
    # before it reaches it (the threshold is 10 % under the cap by default).
    power_delta_percent: float = 3.0
    power_delta_watts: float = 1.0
    clock_delta_mhz: int = 15
    heartbeat: float = 60.0
    #: How long after the recommender changed its targets every new observation is written: the algorithm needs
    #: the observations that show its change; once it holds, the loop is steady and only news is written.
    motion_window: float = 10.0

    @classmethod
    def for_period(cls, interval: float, *, release_band: int = DEFAULT_RELEASE_BAND,
                   heartbeat: float = 60.0) -> Rules:
        """The rules of a monitor sampling every `interval` seconds: a sample is stale after three periods (15 s
        at least), so that one slow query does not count as lost data."""
        return cls(max_age=max(3 * interval, 15.0), release_band=release_band, heartbeat=heartbeat,
                   motion_window=max(3 * interval, 10.0))


def is_running_on_a_node(pod: Mapping[str, Any]) -> bool:
    """Only running pods scheduled on a node draw power; pending, finished and deleted pods do not count."""
    metadata = pod.get("metadata") or {}
    return (
        bool((pod.get("spec") or {}).get("nodeName"))
        and (pod.get("status") or {}).get("phase") == "Running"
        and not metadata.get("deletionTimestamp")
    )


def holds_gpus(pod: Mapping[str, Any]) -> bool:
    """Whether a pod was given GPUs: a GPU or MIG extended resource in a container's limits (the device plugin
    allocates from limits), or a dynamic resource claim (DRA, which names no resource we could check)."""
    spec = pod.get("spec") or {}
    if spec.get("resourceClaims"):
        return True
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        limits = (container.get("resources") or {}).get("limits") or {}
        for name, amount in limits.items():
            if is_gpu_resource(str(name)) and str(amount) not in ("0", ""):
                return True
    return False


def is_gpu_resource(name: str) -> bool:
    """`<vendor>/gpu`, `<vendor>/gpu.<shared>`, `<vendor>/gpu-<model>` or `<vendor>/mig-<profile>`."""
    vendor, _, resource = name.partition("/")
    return bool(vendor) and (resource == "gpu" or resource.startswith(("gpu.", "gpu-", "mig-")))


def select_pods(selector: LabelSelector, pods: Iterable[Mapping[str, Any]]) -> list[SelectedPod]:
    """The running pods among `pods` (all from one namespace) that `selector` matches, sorted by name."""
    chosen = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        if is_running_on_a_node(pod) and selector.matches(metadata.get("labels")):
            chosen.append(SelectedPod(PodKey(metadata.get("namespace", ""), metadata.get("name", "")),
                                      pod["spec"]["nodeName"], holds_gpus(pod)))
    return sorted(chosen, key=lambda p: p.key)


def clock_level(policy: PowerCappingPolicy, rules: Rules) -> float:
    """The power at or above which a sample reads the SM clocks of the policy's GPUs (0: always).

    Clocks are what the algorithms steer by. They are read while the policy's clocks are steered (capping is
    required, or the recommender holds targets for it), and otherwise whenever the policy draws at least its
    release level, below which capping cannot start. Where its status said so already (or says no power yet),
    the sample reads the clocks with the power; where the sample's own power gets there first, a second read at
    the same evaluation time adds them, so that the observation that starts capping has its clocks. A policy
    well under its cap is measured by power alone, and its observations carry no SM clock: reading every GPU's
    clock was about half of what a sample cost Prometheus and the monitor."""
    status = policy.status
    if status is None or status.current_power is None or status.capping_action_required:
        return 0.0
    if status.recommendation is not None and status.recommendation.target_count:
        return 0.0
    level = policy.spec.release_watts(rules.release_band)
    return 0.0 if status.current_power >= level else level


# -- measuring -------------------------------------------------------------------------------------------------


class NodeReadings(NamedTuple):
    """The GPUs of a policy measured on one node: the node's power (all its GPUs), and its first
    MAX_GPUS_PER_NODE readings, each with the selected pods it serves (sorted names, bounded)."""

    name: str
    power: float
    gpus: tuple[tuple[GpuReading, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Measurement:
    """What the monitor learned about one policy in one cycle.

    `power` is the sum over the distinct GPUs (plus CPU power where configured). `complete` is False when some
    GPU or pod the policy uses had no valid reading, so that `power` understates the truth. `readings` are the
    GPUs measured, by node (sorted, bounded), each with the selected pods it serves; `nodes` gives them as the
    status writes them, built only when asked (most cycles of a steady policy write nothing).
    """

    power: float
    complete: bool
    gpu_count: int
    readings: tuple[NodeReadings, ...]
    pods_without_metrics: list[str]
    missing_gpus: list[str]
    truncated: bool
    sample_time: float

    @functools.cached_property
    def nodes(self) -> list[NodeObservation]:
        """The observations of the status, per node."""
        return [NodeObservation(name=node.name, power=node.power,
                                gpus=[_gpu(reading, pods) for reading, pods in node.gpus]) for node in self.readings]

    def layout(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """Which GPUs on which nodes serve which selected pods, as the status would say it."""
        return [(node.name, reading.uuid or reading.key, pods) for node in self.readings for reading, pods in node.gpus]

    def clocks(self) -> dict[str, int]:
        """The SM clock of each GPU with a valid one, as the status would say it."""
        return {reading.uuid or reading.key: clock for node in self.readings for reading, _ in node.gpus
                if (clock := _clock(reading)) is not None}


def measure(pods: Sequence[SelectedPod], snapshot: GpuSnapshot) -> Measurement:
    """Sum the power of the GPUs `pods` use; GPUs shared by several pods (time-slicing) count once."""
    keys = [pod.key for pod in pods]
    total: PowerTotal = snapshot.total_for(keys)
    without = sorted(str(pod.key) for pod in pods if pod.holds_gpus and not snapshot.pod_gpus.get(pod.key))
    node_of_pod = {pod.key: pod.node for pod in pods}
    by_node: dict[str, list[GpuReading]] = {}
    for key in sorted(total.gpus):
        reading = snapshot.gpus[key]
        pod_nodes = sorted(node_of_pod[p] for p in reading.pods if p in node_of_pod)
        by_node.setdefault(pod_nodes[0] if pod_nodes else reading.hostname, []).append(reading)
    truncated = len(by_node) > MAX_NODES or len(without) > MAX_PODS_WITHOUT_METRICS
    readings = []
    for name in sorted(by_node)[:MAX_NODES]:
        found = by_node[name]
        truncated |= len(found) > MAX_GPUS_PER_NODE or any(len(r.pods) > MAX_PODS_PER_GPU for r in found)
        readings.append(NodeReadings(name, round(sum(r.power_watts for r in found), 3),
                                     tuple((r, _served(r, node_of_pod)) for r in found[:MAX_GPUS_PER_NODE])))
    times = [snapshot.gpus[key].timestamp for key in total.gpus]
    return Measurement(
        power=round(total.watts, 3),
        complete=total.complete and not without,
        gpu_count=len(total.gpus | total.missing_gpus),
        readings=tuple(readings),
        pods_without_metrics=without[:MAX_PODS_WITHOUT_METRICS],
        missing_gpus=sorted(total.missing_gpus),
        truncated=truncated,
        sample_time=min(times) if times else snapshot.query_time,
    )


def _served(reading: GpuReading, selected: Mapping[PodKey, str]) -> tuple[str, ...]:
    """The selected pods `reading`'s GPU serves, by name, sorted and bounded."""
    if len(reading.pods) == 1:  # the common case: one pod per GPU
        (pod,) = reading.pods
        return (str(pod),) if pod in selected else ()
    return tuple(sorted(str(p) for p in reading.pods if p in selected)[:MAX_PODS_PER_GPU])


def _clock(reading: GpuReading) -> int | None:
    clock = reading.sm_clock_mhz
    return round(clock) if clock is not None and math.isfinite(clock) else None


def _gpu(reading: GpuReading, pods: tuple[str, ...]) -> GpuObservation:
    return GpuObservation(
        uuid=reading.uuid or reading.key,
        mig_instance=reading.mig_instance,
        index=int(reading.gpu_index) if reading.gpu_index.isdigit() else None,
        model=reading.model or None,
        power=round(reading.power_watts, 3),
        sm_clock=_clock(reading),
        pods=list(pods),
    )


# -- deciding --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CappingDecision:
    """The decision and the reason for it, as a condition reason and a human message. Without data the decision
    is not `known`: the last one stands (status.cappingActionRequired keeps it) and CappingRequired says Unknown."""

    required: bool
    reason: str
    message: str
    known: bool = True


def decide(spec: PolicySpec, power: float | None, was_required: bool, *,
           release_band: int = DEFAULT_RELEASE_BAND) -> CappingDecision:
    """Decide from the policy's current power (None: no fresh, complete data) and the previous decision.

    Missing data is unknown, never a release: the clocks stay as they are (the recommender holds them), and so
    does the decision, so that a restart or a Prometheus outage neither says nor does "capping released".
    """
    on_at = spec.threshold_watts
    off_below = spec.release_watts(release_band)
    if power is None:
        last = "required" if was_required else "not required"
        return CappingDecision(was_required, "NoFreshData",
                               f"no fresh power data; the last decision ({last}) stands until there is", known=False)
    if power >= on_at:
        return CappingDecision(True, "AboveThreshold",
                               f"power {power:.1f} W is at or above the threshold {on_at:.1f} W "
                               f"({spec.threshold_percent}% of {spec.power_cap_limit} W)")
    if was_required and power >= off_below:
        return CappingDecision(True, "WithinReleaseBand",
                               f"power {power:.1f} W is below the threshold {on_at:.1f} W but not yet below "
                               f"the release level {off_below:.1f} W")
    return CappingDecision(False, "BelowThreshold",
                           f"power {power:.1f} W is below the {'release level' if was_required else 'threshold'} "
                           f"{off_below if was_required else on_at:.1f} W")


@dataclass(frozen=True)
class Verdict:
    """What the monitor concluded about one policy in one cycle."""

    capping: CappingDecision
    measurement: Measurement | None
    metrics_available: bool
    metrics_reason: str
    metrics_message: str
    #: The loop is in motion (over the threshold, or under the release level with clocks still capped): every new
    #: observation is worth a write, since the recommender acts only on new ones.
    urgent: bool = False


def evaluate(policy: PowerCappingPolicy, pods: Sequence[SelectedPod], outcome: SampleOutcome | None, *,
             now: dt.datetime, rules: Rules) -> Verdict:
    """The verdict on `policy` at `now`, from its selected `pods` and the latest sample `outcome`."""
    was = bool(policy.status and policy.status.capping_action_required)
    problems = policy.spec.selector.problems()
    if problems:
        return _no_data(policy, was, "InvalidSelector", f"the selector selects nothing: {'; '.join(problems)}",
                        rules)
    if outcome is None:
        return _no_data(policy, was, "NoSampleYet", "no Prometheus sample taken yet", rules)
    if outcome.snapshot is None:
        error = outcome.error
        return _no_data(policy, was, error.reason if error else "PrometheusError", str(error), rules)
    age = now.timestamp() - outcome.snapshot.query_time
    if age > rules.max_age:
        return _no_data(policy, was, "SampleStale", f"the last sample is {age:.0f} s old", rules)
    measurement = measure(pods, outcome.snapshot)
    if measurement.complete:
        capping = decide(policy.spec, measurement.power, was, release_band=rules.release_band)
        return Verdict(capping, measurement, True, "MetricsFresh",
                       f"{measurement.gpu_count} GPUs of {len(pods)} pods measured",
                       urgent=_in_motion(policy, measurement.power, now, rules))
    message = _incomplete(measurement, pods, outcome.snapshot)
    if measurement.power >= policy.spec.threshold_watts:
        # What is known already exceeds the threshold: the missing part can only add to it.
        capping = decide(policy.spec, measurement.power, was, release_band=rules.release_band)
    else:
        capping = CappingDecision(was, INCOMPLETE_DATA, f"holding the decision: {message}")
    return Verdict(capping, measurement, False, INCOMPLETE_DATA, message)


def _incomplete(measurement: Measurement, pods: Sequence[SelectedPod], snapshot: GpuSnapshot) -> str:
    """What is missing, and the likeliest cause where the sample shows one."""
    missing = measurement.missing_gpus + measurement.pods_without_metrics
    message = f"no valid reading for {len(missing)}: {', '.join(missing[:10])}"
    without = set(measurement.pods_without_metrics)
    attributed = {pod for pod, keys in snapshot.pod_gpus.items() if any(key in snapshot.gpus for key in keys)}
    busy_nodes = {pod.node for pod in pods if pod.key in attributed}
    busy_nodes |= {reading.hostname for reading in snapshot.gpus.values() if reading.pods}
    if any(str(pod.key) in without and pod.node in busy_nodes for pod in pods):
        # The exporter attributes GPUs to other pods on the same node but not to these: under GPU time-slicing,
        # dcgm-exporter labels each GPU with one pod unless it runs with virtual-GPU labelling.
        message += ("; GPUs of their nodes are attributed to other pods: if the GPUs are time-sliced, run "
                    "dcgm-exporter with KUBERNETES_VIRTUAL_GPUS=true so that every sharing pod is labelled")
    hints = [warning for warning in snapshot.warnings if "series in Prometheus" in warning]
    return "; ".join([message, *hints])


def _in_motion(policy: PowerCappingPolicy, power: float, now: dt.datetime, rules: Rules) -> bool:
    """The recommender changed its targets within the motion window, and power is where it acts: over the
    threshold, or under the release level with clock caps to give back. A loop that rests (inside a deadband, at
    a floor, holding caps it cannot safely raise) is steady, whatever its resting point."""
    spec = policy.spec
    recommendation = policy.status.recommendation if policy.status else None
    if recommendation is None or not recommendation.last_changed:
        return False
    try:
        since = (now - parse_time(recommendation.last_changed)).total_seconds()
    except ValueError:
        return False
    if since > rules.motion_window:
        return False
    return power >= spec.threshold_watts or (power < spec.release_watts(rules.release_band)
                                             and bool(recommendation.target_count))


def _no_data(policy: PowerCappingPolicy, was: bool, reason: str, message: str, rules: Rules) -> Verdict:
    capping = decide(policy.spec, None, was, release_band=rules.release_band)
    return Verdict(capping, None, False, reason, message)


# -- the status ------------------------------------------------------------------------------------------------


def desired_status(current: Mapping[str, Any] | None, verdict: Verdict, *, limit: int, generation: int | None,
                   now: dt.datetime, rules: Rules) -> dict[str, Any] | None:
    """The whole new status (the recommender's fields kept), or None when no write is due.

    Without a measurement (no data this cycle) the last observation stays as it was, so that its age tells
    readers how old it is; the conditions say why nothing newer is there. The per-node observations are encoded
    only once a write is due: most cycles of a steady policy write nothing.
    """
    current = dict(current or {})
    candidate = {**current, "cappingActionRequired": verdict.capping.required, "observedGeneration": generation}
    measurement = verdict.measurement
    if measurement is not None:
        candidate = {k: v for k, v in candidate.items() if k != "podsWithoutMetrics"}
        candidate.update(_observation_fields(measurement, now))
    candidate["conditions"] = _conditions(current.get("conditions"), verdict, generation, now)
    due = verdict.urgent and candidate.get("lastUpdated") != current.get("lastUpdated")
    if not due and not _worth_writing(current, candidate, measurement, limit=limit, now=now, rules=rules):
        return None
    if measurement is not None:
        candidate["nodes"] = [to_dict(node) for node in measurement.nodes]
    return candidate


def _observation_fields(measurement: Measurement, now: dt.datetime) -> dict[str, Any]:
    """The observation's fields but its nodes."""
    observed = dt.datetime.fromtimestamp(measurement.sample_time, dt.UTC)
    fields: dict[str, Any] = {
        "lastUpdated": format_precise_time(min(observed, now)),
        "currentPower": measurement.power,
        "gpuCount": measurement.gpu_count,
        "truncated": measurement.truncated,
    }
    if measurement.pods_without_metrics:
        fields["podsWithoutMetrics"] = measurement.pods_without_metrics
    return fields


def _conditions(existing: Any, verdict: Verdict, generation: int | None, now: dt.datetime) -> list[dict[str, Any]]:
    conditions = set_condition(existing, type=METRICS_AVAILABLE, status=verdict.metrics_available,
                               reason=verdict.metrics_reason, message=verdict.metrics_message,
                               observed_generation=generation, now=now)
    return set_condition(conditions, type=CAPPING_REQUIRED,
                         status=verdict.capping.required if verdict.capping.known else UNKNOWN,
                         reason=verdict.capping.reason, message=verdict.capping.message,
                         observed_generation=generation, now=now)


def _worth_writing(old: Mapping[str, Any], new: Mapping[str, Any], measurement: Measurement | None, *, limit: int,
                   now: dt.datetime, rules: Rules) -> bool:
    for key in ("cappingActionRequired", "observedGeneration", "gpuCount", "podsWithoutMetrics", "truncated"):
        if old.get(key) != new.get(key):
            return True
    if _condition_states(old) != _condition_states(new):
        return True
    if measurement is not None:
        if _layout(old) != measurement.layout() or "currentPower" not in old:
            return True
        threshold = max(rules.power_delta_watts, limit * rules.power_delta_percent / 100.0)
        if abs(measurement.power - float(old["currentPower"])) >= threshold:
            return True
        if _clock_moved(old, measurement, rules.clock_delta_mhz):
            return True
    last = old.get("lastUpdated")
    return last is None or (now - parse_time(str(last))).total_seconds() >= rules.heartbeat


def _condition_states(status: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What of the owned conditions is news: their status, and why metrics are missing. Whether capping is required
    because power is over the threshold or still inside the release band is the same decision, and a load resting
    at the threshold would otherwise flip between the two reasons on its own jitter."""
    return {c["type"]: (c.get("status"), c.get("reason") if c.get("type") == METRICS_AVAILABLE else None)
            for c in status.get("conditions") or [] if c.get("type") in OWNED_CONDITIONS}


def _layout(status: Mapping[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    """Which GPUs on which nodes serve which pods: a change here is always news."""
    return [(node["name"], gpu["uuid"], tuple(gpu.get("pods") or []))
            for node in status.get("nodes") or [] for gpu in node.get("gpus") or []]


def _clock_moved(old: Mapping[str, Any], measurement: Measurement, delta: int) -> bool:
    before = {gpu["uuid"]: gpu["smClock"] for node in old.get("nodes") or [] for gpu in node.get("gpus") or []
              if gpu.get("smClock") is not None}
    return any(abs(clock - before.get(uuid, clock)) >= delta for uuid, clock in measurement.clocks().items())
