"""Keeping targets within what the hardware supports: the framework applies this to every algorithm's output.

A GPU target is clamped to the GPU's [min, max] and snapped down to a supported clock, so it never asks for
more than the algorithm wanted. A CPU target is clamped to the CPU's cpuinfo range (cpufreq takes any value in
it). Targets for hardware whose limits are not known yet are dropped and reported, never guessed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from climatik.algorithms.base import CpuKey, CpuLimits, GpuLimits, Inventory, Targets


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
