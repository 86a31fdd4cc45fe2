"""Building an algorithm's input from the typed API objects: the policy, its status and the NodeFrequencies.

Pure conversions, so that the recommender, the tests and the benchmark build inputs the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from climatik.algorithms.base import (
    AlgorithmInput,
    CpuKey,
    CpuLimits,
    GpuLimits,
    GpuReading,
    Inventory,
    Observation,
    Targets,
)
from climatik.api import GpuInventory, NodeFrequencies, PolicyStatus, PowerCappingPolicy, parse_time
from climatik.api.constants import DEFAULT_RELEASE_BAND


def observation_from_status(status: PolicyStatus | None) -> Observation:
    """The workload's latest observation as the monitor recorded it (empty when there is none)."""
    if status is None:
        return Observation()
    at = _timestamp(status.last_updated)
    gpus = tuple(
        GpuReading(uuid=gpu.uuid, node=node.name, power=_finite(gpu.power), sm_clock=gpu.sm_clock)
        for node in status.nodes or [] for gpu in node.gpus or []
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


def algorithm_input(policy: PowerCappingPolicy, nodes: Iterable[NodeFrequencies], *, state: Mapping[str, Any],
                    now: float, current: Targets | None = None,
                    release_band: int = DEFAULT_RELEASE_BAND) -> AlgorithmInput:
    """The input of one step for `policy`. `current` overrides the bounds read from `nodes` (dry-run keeps its
    would-be targets elsewhere); `now` is UNIX seconds."""
    node_list = list(nodes)
    observation = observation_from_status(policy.status)
    held = current if current is not None else policy_targets(policy.key, node_list)
    node_names = {gpu.node for gpu in observation.gpus} | {node for node, _ in held.cpus}
    node_names |= {_node_of(uuid, node_list) or "" for uuid in held.gpus} - {""}
    return AlgorithmInput(spec=policy.spec, observation=observation, inventory=inventory_of(node_list, node_names),
                          current=held, state=state, now=now, release_band=release_band)


def _node_of(uuid: str, nodes: Iterable[NodeFrequencies]) -> str | None:
    for node in nodes:
        inventory = node.inventory
        if any(gpu.gpu_id == uuid for gpu in node.spec.gpu_frequencies or []) or (
                inventory is not None and inventory.gpu(uuid) is not None):
            return node.spec.node_name or node.metadata.name
    return None


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
