"""The framework around every algorithm: its input built from the typed API objects, one step run with the
guarantees no algorithm may break, and the clamping of targets to what the hardware supports.

Whatever an algorithm (a plug-in included) returns, the result only bounds GPUs the policy uses (observed now
or targeted already), only CPUs of those GPUs' nodes and only when the spec tunes CPUs, stays within the
hardware's limits on supported steps, and carries state that fits the status field. The caller supplies the
time (`inp.now`), so the benchmark can run steps against a simulated clock.

A GPU target is clamped to the GPU's [min, max] and snapped down to a supported clock, so it never asks for
more than the algorithm wanted. A CPU target is clamped to the CPU's cpuinfo range (cpufreq takes any value in
it). Targets for hardware whose limits are not known yet are dropped and reported, never guessed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from climatik.algorithms.base import (
    Algorithm,
    AlgorithmError,
    AlgorithmFailedError,
    AlgorithmInput,
    AlgorithmOutput,
    CpuKey,
    CpuLimits,
    GpuLimits,
    Inventory,
    Observation,
    ObservedGpu,
    StateTooLargeError,
    Targets,
    decode_state,
    encode_state,
)
from climatik.api import GpuInventory, NodeFrequencies, PolicyStatus, PowerCappingPolicy, parse_time
from climatik.api.constants import DEFAULT_RELEASE_BAND


def observation_from_status(status: PolicyStatus | None) -> Observation:
    """The workload's latest observation as the monitor recorded it (empty when there is none)."""
    if status is None:
        return Observation()
    at = _timestamp(status.last_updated)
    # A MIG instance is measured (its share is in the power) but never capped: locking the GPU's clock would cap
    # every tenant of the GPU on behalf of one.
    gpus = tuple(
        ObservedGpu(uuid=gpu.uuid, node=node.name, power=_finite(gpu.power), sm_clock=gpu.sm_clock)
        for node in status.nodes or [] for gpu in node.gpus or [] if gpu.mig_instance is None
    )
    return Observation(at=at, power=_finite(status.current_power),
                       capping_required=bool(status.capping_action_required), gpus=gpus,
                       truncated=bool(status.truncated))


def gpu_limits(gpu: GpuInventory) -> GpuLimits | None:
    """A GPU's limits, or None when its tuner has not reported a usable clock range."""
    low, high = gpu.min_frequency, gpu.max_frequency
    if low is None or high is None or low <= 0 or high < low:
        return None
    steps = tuple(sorted({mhz for mhz in gpu.supported_frequencies or [] if low <= mhz <= high}))
    return GpuLimits(uuid=gpu.uuid, min_frequency=low, max_frequency=high, supported=steps,
                     default_frequency=gpu.default_frequency,
                     power_limit=float(gpu.power_limit) if gpu.power_limit else None)


def inventory_of(nodes: Iterable[NodeFrequencies], node_names: Iterable[str] | None = None) -> Inventory:
    """The GPU and CPU limits the tuners of `nodes` reported (only of `node_names`, when given)."""
    wanted = set(node_names) if node_names is not None else None
    gpus: dict[str, GpuLimits] = {}
    cpus: dict[CpuKey, CpuLimits] = {}
    for node in nodes:
        name = node.spec.node_name or node.metadata.name
        inventory = node.inventory
        if inventory is None or (wanted is not None and name not in wanted):
            continue
        for gpu in inventory.gpus or []:
            limits = gpu_limits(gpu)
            if limits is not None:
                gpus[gpu.uuid] = limits
        for cpu in inventory.cpus or []:
            if cpu.min_frequency and cpu.max_frequency and cpu.min_frequency <= cpu.max_frequency:
                cpus[(name, cpu.cpu_id)] = CpuLimits(cpu.min_frequency, cpu.max_frequency)
    return Inventory(gpus, cpus)


def policy_targets(policy_key: str, nodes: Iterable[NodeFrequencies]) -> Targets:
    """The bounds `policy_key` (namespace/name) holds now: its entries in the NodeFrequencies specs."""
    gpus: dict[str, int | None] = {}
    cpus: dict[CpuKey, int | None] = {}
    for node in nodes:
        name = node.spec.node_name or node.metadata.name
        for gpu in node.spec.gpu_frequencies or []:
            if gpu.policy == policy_key:
                gpus[gpu.gpu_id] = gpu.target_frequency
        for cpu in node.spec.cpu_frequencies or []:
            if cpu.policy == policy_key:
                cpus[(name, cpu.cpu_id)] = cpu.target_frequency
    return Targets(gpus, cpus)


def held_targets(nodes: Iterable[NodeFrequencies]) -> dict[str, Targets]:
    """The bounds every policy holds now (by namespace/name), from one pass over the NodeFrequencies specs."""
    gpus: dict[str, dict[str, int | None]] = {}
    cpus: dict[str, dict[CpuKey, int | None]] = {}
    for node in nodes:
        name = node.spec.node_name or node.metadata.name
        for gpu in node.spec.gpu_frequencies or []:
            if gpu.policy:
                gpus.setdefault(gpu.policy, {})[gpu.gpu_id] = gpu.target_frequency
        for cpu in node.spec.cpu_frequencies or []:
            if cpu.policy:
                cpus.setdefault(cpu.policy, {})[(name, cpu.cpu_id)] = cpu.target_frequency
    return {key: Targets(gpus.get(key, {}), cpus.get(key, {})) for key in set(gpus) | set(cpus)}


def algorithm_input(policy: PowerCappingPolicy, nodes: Iterable[NodeFrequencies], *, state: Mapping[str, Any],
                    now: float, current: Targets | None = None,
                    release_band: int = DEFAULT_RELEASE_BAND) -> AlgorithmInput:
    """The input of one step for `policy`. `current` overrides the bounds read from `nodes` (dry-run keeps its
    would-be targets elsewhere); `now` is UNIX seconds."""
    node_list = list(nodes)
    observation = observation_from_status(policy.status)
    held = current if current is not None else policy_targets(policy.key, node_list)
    node_names = {gpu.node for gpu in observation.gpus} | {node for node, _ in held.cpus}
    node_names |= _nodes_of(set(held.gpus), node_list)
    return AlgorithmInput(spec=policy.spec, observation=observation, inventory=inventory_of(node_list, node_names),
                          current=held, state=state, now=now, release_band=release_band)


def _nodes_of(uuids: set[str], nodes: Iterable[NodeFrequencies]) -> set[str]:
    """The nodes holding any of `uuids` (in an entry of their spec or in their inventory), in one pass."""
    found: set[str] = set()
    if not uuids:
        return found
    for node in nodes:
        inventory = node.inventory
        listed = {gpu.gpu_id for gpu in node.spec.gpu_frequencies or []}
        listed |= {gpu.uuid for gpu in inventory.gpus or []} if inventory is not None else set()
        if listed & uuids:
            found.add(node.spec.node_name or node.metadata.name)
    return found


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_time(text).timestamp()
    except ValueError:
        return None


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def clamp_gpu(mhz: float, limits: GpuLimits) -> int:
    """The highest supported clock not above `mhz`, within the GPU's range (its lowest clock at worst)."""
    bounded = min(max(mhz, limits.min_frequency), limits.max_frequency)
    steps = [step for step in limits.supported if limits.min_frequency <= step <= limits.max_frequency]
    if not steps:
        return int(bounded)
    below = bisect.bisect_right(steps, bounded)
    return steps[below - 1] if below else steps[0]


def clamp_cpu(mhz: float, limits: CpuLimits) -> int:
    """`mhz` within the CPU's range, rounded down to whole MHz."""
    return int(min(max(mhz, limits.min_frequency), limits.max_frequency))


def gpu_steps(limits: GpuLimits) -> list[int]:
    """The clocks a GPU can be set to, ascending (its whole MHz range when it reported no list)."""
    steps = [step for step in limits.supported if limits.min_frequency <= step <= limits.max_frequency]
    return steps or list(range(limits.min_frequency, limits.max_frequency + 1))


def floor_gpu(limits: GpuLimits, min_frequency: int | None) -> int:
    """The lowest clock an algorithm will set: `min_frequency` (if any) snapped up to a step, within the range."""
    steps = gpu_steps(limits)
    wanted = max(limits.min_frequency, min_frequency or 0)
    index = bisect.bisect_left(steps, wanted)
    return steps[min(index, len(steps) - 1)]


def step_above(limits: GpuLimits, mhz: int) -> int:
    """The next clock above `mhz` the GPU supports (its maximum when there is none)."""
    steps = gpu_steps(limits)
    index = bisect.bisect_right(steps, mhz)
    return steps[index] if index < len(steps) else limits.max_frequency


@dataclass(frozen=True)
class ClampedTargets:
    """Targets after clamping, and what had to be left out."""

    targets: Targets
    waiting_for_inventory: tuple[str, ...]
    cpus_without_inventory: tuple[CpuKey, ...]


def clamp_targets(targets: Targets, inventory: Inventory) -> ClampedTargets:
    """Clamp every bound in `targets`; drop (and report) those for hardware without known limits."""
    gpus: dict[str, int | None] = {}
    waiting: list[str] = []
    for uuid, mhz in sorted(targets.gpus.items()):
        gpu_limits = inventory.gpus.get(uuid)
        if mhz is None:
            gpus[uuid] = None
        elif gpu_limits is None:
            waiting.append(uuid)
        else:
            gpus[uuid] = clamp_gpu(mhz, gpu_limits)
    cpus: dict[CpuKey, int | None] = {}
    unknown_cpus: list[CpuKey] = []
    for key, mhz in sorted(targets.cpus.items()):
        cpu_limits = inventory.cpus.get(key)
        if mhz is None:
            cpus[key] = None
        elif cpu_limits is None:
            unknown_cpus.append(key)
        else:
            cpus[key] = clamp_cpu(mhz, cpu_limits)
    return ClampedTargets(Targets(gpus, cpus), tuple(waiting), tuple(unknown_cpus))


@dataclass(frozen=True)
class StepResult:
    """The checked outcome of one step.

    `changed` says the bounds differ from the policy's current ones. `waiting_for_inventory` lists the policy's
    GPUs whose tuner has not reported limits yet (they get no target); `out_of_scope` lists GPUs and CPUs the
    algorithm targeted although the policy does not use them (dropped).
    """

    algorithm: str
    targets: Targets
    state: dict[str, Any]
    state_text: str
    reason: str
    changed: bool
    waiting_for_inventory: tuple[str, ...] = ()
    out_of_scope: tuple[str, ...] = ()


def run_step(algorithm: Algorithm, inp: AlgorithmInput) -> StepResult:
    """Run one step of `algorithm` on `inp`; raises AlgorithmFailedError when the algorithm misbehaves."""
    name = getattr(algorithm, "name", type(algorithm).__name__)
    try:
        output = algorithm.step(inp)
    except AlgorithmError:
        raise
    except Exception as err:
        raise AlgorithmFailedError(name, f"{type(err).__name__}: {err}") from err
    if not isinstance(output, AlgorithmOutput):
        raise AlgorithmFailedError(name, f"step returned {type(output).__name__}, not AlgorithmOutput")
    _check_values(name, output.targets)
    scoped, out_of_scope = _scope(output.targets, inp)
    clamped = clamp_targets(scoped, inp.inventory)
    try:
        state_text = encode_state(output.state)
    except StateTooLargeError as err:
        raise AlgorithmFailedError(name, str(err)) from None
    observed = {gpu.uuid for gpu in inp.observation.gpus}
    waiting = sorted(set(clamped.waiting_for_inventory) | {u for u in observed if u not in inp.inventory.gpus})
    dropped = out_of_scope + [f"{node}/cpu{cpu}" for node, cpu in clamped.cpus_without_inventory]
    return StepResult(
        algorithm=name,
        targets=clamped.targets,
        # As JSON gives it back: the next step sees the same state whether or not the recommender restarted.
        state=decode_state(state_text),
        state_text=state_text,
        reason=output.reason,
        changed=not clamped.targets.same_as(inp.current),
        waiting_for_inventory=tuple(waiting),
        out_of_scope=tuple(dropped),
    )


def _check_values(name: str, targets: Targets) -> None:
    for key, mhz in [*targets.gpus.items(), *targets.cpus.items()]:
        if mhz is None:
            continue
        if isinstance(mhz, bool) or not isinstance(mhz, (int, float)) or not math.isfinite(mhz) or mhz <= 0:
            raise AlgorithmFailedError(name, f"target {mhz!r} for {key} is not a positive number of MHz")


def _scope(targets: Targets, inp: AlgorithmInput) -> tuple[Targets, list[str]]:
    gpus_in_scope = {gpu.uuid for gpu in inp.observation.gpus} | set(inp.current.gpus)
    nodes = {gpu.node for gpu in inp.observation.gpus} | {node for node, _ in inp.current.cpus}
    tune_cpus = bool(inp.spec.tune_cpus)
    gpus = {uuid: mhz for uuid, mhz in targets.gpus.items() if uuid in gpus_in_scope}
    cpus: dict[CpuKey, int | None] = {}
    dropped = sorted(uuid for uuid, mhz in targets.gpus.items() if uuid not in gpus_in_scope and mhz is not None)
    for key, mhz in targets.cpus.items():
        if mhz is None or (tune_cpus and key[0] in nodes):
            cpus[key] = mhz
        else:
            dropped.append(f"{key[0]}/cpu{key[1]}")
    return Targets(gpus, cpus), dropped
