"""A workload's operating point as the closed-loop controller models it, and the levels it holds.

Turns one observation into per-GPU points (clock fractions measured, capped and floor; power; idle estimate)
for the GPUs whose limits are known, and turns clock fractions back into snapped MHz targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from climatik.algorithms.base import AlgorithmInput, CpuKey, GpuLimits
from climatik.algorithms.clamp import clamp_cpu, clamp_gpu, floor_gpu
from climatik.algorithms.model import IDLE_SHARE, GpuPoint

#: Lowest measured clock fraction the model anchors at (an idle GPU may report a very low SM clock).
_MIN_X_OP = 0.05


@dataclass(frozen=True)
class Workload:
    """The modelled GPUs (with known limits) and the power no GPU clock explains (`other`)."""

    points: tuple[GpuPoint, ...]
    limits: dict[str, GpuLimits]
    other: float


def workload(inp: AlgorithmInput, min_frequency: int | None) -> Workload:
    """The operating point of every observed GPU with known limits; needs `inp.observation.power`."""
    obs = inp.observation
    total = obs.power or 0.0
    known = [gpu.power for gpu in obs.gpus if gpu.power is not None]
    fallback = (sum(known) / len(known)) if known else total / max(len(obs.gpus), 1)
    points: list[GpuPoint] = []
    limits: dict[str, GpuLimits] = {}
    for gpu in sorted(obs.gpus, key=lambda g: g.uuid):
        gpu_limits = inp.inventory.gpus.get(gpu.uuid)
        if gpu_limits is None:
            continue
        top = float(gpu_limits.max_frequency)
        cap = inp.current.gpus.get(gpu.uuid)
        cap_mhz = min(float(cap), top) if cap is not None else top
        measured = float(gpu.sm_clock) if gpu.sm_clock is not None else cap_mhz
        power = gpu.power if gpu.power is not None else fallback
        idle = IDLE_SHARE * gpu_limits.power_limit if gpu_limits.power_limit else 0.0
        points.append(GpuPoint(
            uuid=gpu.uuid, max_mhz=top, x_op=max(min(measured, top) / top, _MIN_X_OP), x_cap=cap_mhz / top,
            x_floor=floor_gpu(gpu_limits, min_frequency) / top, power=power, idle=min(idle, power),
        ))
        limits[gpu.uuid] = gpu_limits
    other = total - sum(point.power for point in points)
    return Workload(tuple(points), limits, other)


def anchored_at(work: Workload, x: float) -> Workload:
    """The workload as if every GPU ran at least at clock fraction `x`: how a reading that may predate the last
    change (or average across it) is read, so that it asks for no more than the load itself added."""
    bound = min(max(x, 0.0), 1.0)
    return Workload(tuple(replace(p, x_op=max(p.x_op, bound)) for p in work.points), work.limits, work.other)


def above_idle(work: Workload) -> float:
    """The GPUs' power above their idle estimate: what their clocks can move."""
    return sum(max(p.power - p.idle, 0.0) for p in work.points)


def raised(work: Workload, before: Mapping[str, int | None], after: Mapping[str, int | None]) -> bool:
    """Whether going from caps `before` to `after` raised some GPU's cap and lowered none."""
    old, new = fractions(work, before), fractions(work, after)
    return old != new and all(b >= a - 1e-9 for a, b in zip(old, new, strict=True))


def raised_from(work: Workload, before: Mapping[str, int | None], after: Mapping[str, int | None]) -> float | None:
    """For a change that only raised caps: the highest clock (MHz) measured on a GPU that ran at its cap before
    it (a reading shows the raise once some clock is above it). None for other changes, or when no GPU ran at its
    cap (the raise then has no visible signature)."""
    if not raised(work, before, after):
        return None
    binding = [p.x_op * p.max_mhz for p in work.points if p.binding]
    return max(binding) if binding else None


def gpu_targets(work: Workload, xs: list[float]) -> dict[str, int | None]:
    """Snapped MHz per GPU for clock fractions `xs`; a GPU at its maximum gets no bound (None)."""
    out: dict[str, int | None] = {}
    for point, x in zip(work.points, xs, strict=True):
        limits = work.limits[point.uuid]
        mhz = clamp_gpu(x * point.max_mhz, limits)
        out[point.uuid] = None if mhz >= limits.max_frequency else mhz
    return out


def fractions(work: Workload, targets: Mapping[str, int | None]) -> list[float]:
    """Clock fractions of `targets` (no bound: 1.0), in the order of `work.points`."""
    return [min((targets.get(p.uuid) or p.max_mhz) / p.max_mhz, 1.0) for p in work.points]


def cpu_scope(inp: AlgorithmInput) -> list[CpuKey]:
    """The CPUs of the nodes the workload's GPUs are on, when the spec tunes CPUs."""
    if not inp.spec.tune_cpus:
        return []
    nodes = {gpu.node for gpu in inp.observation.gpus}
    return sorted(key for key in inp.inventory.cpus if key[0] in nodes)


def cpu_level(inp: AlgorithmInput, scope: list[CpuKey]) -> float:
    """The workload's current CPU cap as a fraction of each CPU's maximum (1.0: none)."""
    levels = [mhz / inp.inventory.cpus[key].max_frequency
              for key, mhz in inp.current.cpu_entries().items() if key in scope]
    return min(min(levels, default=1.0), 1.0)


def cpu_targets(inp: AlgorithmInput, scope: list[CpuKey], level: float) -> dict[CpuKey, int | None]:
    """Every CPU in scope capped at `level` of its maximum; none when the level is (about) the maximum."""
    if level >= 0.999:
        return {}
    return {key: clamp_cpu(level * inp.inventory.cpus[key].max_frequency, inp.inventory.cpus[key])
            for key in scope}
