"""`climatik tune --probe`: what the tuner would see on this node, read without changing anything.

For the GPUs: the library and driver versions and, per GPU, its UUID, model, MIG mode, clock range and steps,
power limits and readings, persistence mode, and whether the tuner may lock its clocks (MIG off, and this
process holding CAP_SYS_ADMIN, which NVML's clock locks need). For the CPUs: every cpufreq policy with its
driver, governor, CPUs and limits, and the offline CPUs. Printed for people by default, or as JSON.

Nothing here writes: the backends are asked for read-only facts (`GpuBackendExtras.facts`, or the inventory of
a backend without it) and for the cpufreq policies; no state file is opened and no Kubernetes API is needed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from climatik.tune.backends.base import (
    BackendUnavailableError,
    CpuBackend,
    CpuPolicy,
    GpuBackend,
    GpuBackendExtras,
    GpuFacts,
    GpuNodeFacts,
)

#: CAP_SYS_ADMIN's bit in the capability sets of /proc/<pid>/status (linux/capability.h).
CAP_SYS_ADMIN = 21


@dataclass(frozen=True)
class CpuFacts:
    """The node's cpufreq policies as the tuner would drive them (or why they cannot be read)."""

    backend: str
    policies: list[CpuPolicy] = field(default_factory=list)
    offline: list[int] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class NodeProbe:
    """Everything `--probe` reports; `sys_admin` is whether this process holds CAP_SYS_ADMIN (None: unknown)."""

    gpu: GpuNodeFacts | None
    cpu: CpuFacts | None
    sys_admin: bool | None = None


def has_sys_admin(status: Path = Path("/proc/self/status")) -> bool | None:
    """Whether this process's effective capabilities include CAP_SYS_ADMIN; None when they cannot be read."""
    try:
        for line in status.read_text(encoding="ascii").splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def collect(*, gpu: GpuBackend | None, cpu: CpuBackend | None, sys_admin: bool | None) -> NodeProbe:
    """Ask each backend what it sees; one that cannot see anything says why instead."""
    gpu_facts = None
    if gpu is not None:
        gpu_facts = gpu.facts() if isinstance(gpu, GpuBackendExtras) else _from_inventory(gpu)
        if gpu.name == "nvml" and sys_admin is False:
            gpu_facts = dataclasses.replace(gpu_facts, gpus=[_without_admin(one) for one in gpu_facts.gpus])
    cpu_facts = None
    if cpu is not None:
        try:
            policies = cpu.policies()
        except BackendUnavailableError as error:
            cpu_facts = CpuFacts(backend=cpu.name, error=str(error))
        else:
            offline = sorted(c for policy in policies for c in policy.cpus if c not in policy.online)
            cpu_facts = CpuFacts(backend=cpu.name, policies=policies, offline=offline)
    return NodeProbe(gpu=gpu_facts, cpu=cpu_facts, sys_admin=sys_admin)


def render_json(probe: NodeProbe) -> str:
    return json.dumps(dataclasses.asdict(probe), indent=2, sort_keys=False)


def render_text(probe: NodeProbe) -> str:
    lines: list[str] = []
    if probe.gpu is not None:
        lines += _gpu_lines(probe.gpu)
    if probe.cpu is not None:
        lines += _cpu_lines(probe.cpu)
    if probe.gpu is None and probe.cpu is None:
        lines.append("no GPU backend and no cpufreq: the tuner would change nothing on this node")
    return "\n".join(lines) + "\n"


def _from_inventory(gpu: GpuBackend) -> GpuNodeFacts:
    try:
        listing = gpu.inventory()
    except BackendUnavailableError as error:
        return GpuNodeFacts(backend=gpu.name, error=str(error))
    return GpuNodeFacts(backend=gpu.name, gpus=[
        GpuFacts(uuid=one.uuid, index=one.index, model=one.model, min_clock_mhz=one.min_frequency,
                 max_clock_mhz=one.max_frequency, steps=len(one.supported_frequencies or []) or None,
                 default_clock_mhz=one.default_frequency, power_limit_w=one.power_limit,
                 min_power_limit_w=one.min_power_limit, max_power_limit_w=one.max_power_limit,
                 lockable=one.max_frequency is not None) for one in listing])


def _without_admin(gpu: GpuFacts) -> GpuFacts:
    if not gpu.lockable:
        return gpu
    return dataclasses.replace(gpu, lockable=False, lock_note="this process lacks CAP_SYS_ADMIN, which NVML's "
                                                              "clock locks need (NO_PERMISSION)")


def _gpu_lines(facts: GpuNodeFacts) -> list[str]:
    library = "NVML" if facts.backend == "nvml" else "library"
    versions = [f"{name} {value}" for name, value in ((library, facts.library_version),
                                                      ("driver", facts.driver_version),
                                                      ("CUDA", facts.cuda_driver_version)) if value]
    where = f", {facts.location}" if facts.location else ""
    lines = [f"GPUs ({facts.backend}{where}): " + (", ".join(versions) or "no versions reported")]
    if facts.error is not None:
        return [*lines, f"  cannot see the GPUs: {facts.error}"]
    if not facts.gpus:
        lines.append("  no GPUs")
    for gpu in facts.gpus:
        lines.append(f"  GPU {_or(gpu.index)} {gpu.uuid} {gpu.model or 'unknown model'}")
        mig = f"MIG {gpu.mig_mode or 'unknown'}"
        if gpu.mig_devices is not None:
            mig += f" ({gpu.mig_devices} MIG devices)"
        persistence = {True: "on", False: "off", None: "unknown"}[gpu.persistence_mode]
        lines.append(f"    {mig}; persistence mode {persistence}")
        lines.append(f"    clocks: {_clock_range(gpu)}; default {_mhz(gpu.default_clock_mhz)}; now SM "
                     f"{_mhz(gpu.sm_clock_mhz)}, memory {_mhz(gpu.memory_clock_mhz)}"
                     + (f"; locked at {gpu.locked_clock_mhz} MHz" if gpu.locked_clock_mhz is not None else ""))
        lines.append(f"    power limit {_w(gpu.power_limit_w)} (default {_w(gpu.default_power_limit_w)}, range "
                     f"{_or(gpu.min_power_limit_w and f'{gpu.min_power_limit_w:g}')}-{_w(gpu.max_power_limit_w)}); "
                     f"drawing {_w(gpu.power_w)}"
                     + (f" (instantaneous {_w(gpu.instant_power_w)})" if gpu.instant_power_w is not None else ""))
        lines.append(f"    may lock clocks: {'yes' if gpu.lockable else 'no'}"
                     + (f": {gpu.lock_note}" if gpu.lock_note else ""))
        lines += [f"    problem: {problem}" for problem in gpu.problems]
    return lines


def _cpu_lines(facts: CpuFacts) -> list[str]:
    if facts.error is not None:
        return [f"CPUs ({facts.backend}): cannot read the cpufreq policies: {facts.error}"]
    cpus = sum(len(policy.cpus) for policy in facts.policies)
    lines = [f"CPUs ({facts.backend}): {len(facts.policies)} policies over {cpus} CPUs; offline: "
             f"{_cpulist(facts.offline) or 'none'}"]
    for policy in facts.policies:
        offline = _cpulist(cpu for cpu in policy.cpus if cpu not in policy.online)
        state = f", {offline} offline" if offline else ""
        if not policy.active:
            state += ": inactive, it takes no limit"
        lines.append(f"  policy {policy.leader} (CPUs {_cpulist(policy.cpus)}{state}): {policy.driver or '?'}, "
                     f"governor {policy.governor or '?'}, "
                     f"hardware {_khz_range(policy.hardware_min_khz, policy.hardware_max_khz)}, "
                     f"limits {_khz_range(policy.min_khz, policy.max_khz)}, now {_khz(policy.current_khz)}"
                     + (f", firmware limit {_khz(policy.bios_limit_khz)}" if policy.bios_limit_khz else ""))
    return lines


def _clock_range(gpu: GpuFacts) -> str:
    if gpu.min_clock_mhz is None and gpu.max_clock_mhz is None:
        return "no lockable range"
    steps = f" in {gpu.steps} steps" if gpu.steps else ""
    if gpu.steps and gpu.step_mhz:
        steps += f" of {gpu.step_mhz} MHz"
    memory = f" (memory clocks {', '.join(map(str, gpu.memory_clocks_mhz))} MHz)" if gpu.memory_clocks_mhz else ""
    return f"{_or(gpu.min_clock_mhz)}-{_or(gpu.max_clock_mhz)} MHz{steps}{memory}"


def _cpulist(cpus: Any) -> str:
    """CPUs as the kernel writes them: "0-3,6"."""
    ordered = sorted(cpus)
    runs: list[list[int]] = []
    for cpu in ordered:
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def _or(value: object) -> str:
    return "?" if value is None else str(value)


def _mhz(value: int | None) -> str:
    return "?" if value is None else f"{value} MHz"


def _khz(value: int | None) -> str:
    return "?" if value is None else f"{value // 1000} MHz"


def _khz_range(low: int | None, high: int | None) -> str:
    return f"{'?' if low is None else low // 1000}-{'?' if high is None else high // 1000} MHz"


def _w(value: float | None) -> str:
    return "?" if value is None else f"{value:g} W"
