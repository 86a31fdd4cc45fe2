"""Test doubles for the tuner tests: a minimal sysfs-shaped CPU directory and an in-memory GPU backend.

Real-shaped hardware lives in the device zoo (tests/support/nvml_zoo.py, tests/support/sysfs_zoo.py); these are
for tests about the applier's and reconciler's own logic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from climatik.api import CpuInventory, GpuInventory
from climatik.api.nodefrequencies import APPLIED, UNSUPPORTED
from climatik.tune.backends.base import BackendUnavailableError, DeviceResult, fit_to_steps
from climatik.tune.levers import PowerLimitError, PowerState

H100_STEPS = list(range(210, 1981, 15))
GPU_A = "GPU-5fd4c8a1-0000-4000-8000-00000000000a"
GPU_B = "GPU-5fd4c8a1-0000-4000-8000-00000000000b"


def make_cpu(
    root: Path,
    cpu_id: int,
    *,
    min_khz: int = 800_000,
    max_khz: int = 3_500_000,
    scaling_max_khz: int | None = None,
    cur_khz: int = 2_100_000,
    driver: str = "intel_pstate",
    governor: str = "powersave",
) -> Path:
    """A sysfs-shaped cpufreq directory for one CPU under `root`; returns the cpufreq directory."""
    directory = root / "devices" / "system" / "cpu" / f"cpu{cpu_id}" / "cpufreq"
    directory.mkdir(parents=True)
    files = {
        "cpuinfo_min_freq": min_khz,
        "cpuinfo_max_freq": max_khz,
        "scaling_min_freq": min_khz,
        "scaling_max_freq": max_khz if scaling_max_khz is None else scaling_max_khz,
        "scaling_cur_freq": cur_khz,
        "scaling_driver": driver,
        "scaling_governor": governor,
    }
    for name, value in files.items():
        (directory / name).write_text(f"{value}\n")
    return directory


def read_khz(cpufreq_dir: Path) -> int:
    return int((cpufreq_dir / "scaling_max_freq").read_text())


class FakeGpuBackend:
    """In-memory GPUs: a locked bound per GPU and a clock that follows it; counts every call."""

    name = "fake"

    def __init__(self, uuids: list[str], *, steps: list[int] | None = None, default_mhz: int = 1980) -> None:
        self.steps = steps or H100_STEPS
        self.default_mhz = default_mhz
        self.locked: dict[str, int | None] = dict.fromkeys(uuids)
        self.calls: list[tuple[str, Any]] = []
        self.unavailable: str | None = None

    def inventory(self) -> list[GpuInventory]:
        self.calls.append(("inventory", None))
        if self.unavailable:
            raise BackendUnavailableError(self.unavailable)
        return [GpuInventory(uuid=uuid, index=index, model="Fake GPU", min_frequency=self.steps[0],
                             max_frequency=self.steps[-1], default_frequency=self.default_mhz,
                             supported_frequencies=list(self.steps))
                for index, uuid in enumerate(self.locked)]

    def apply(self, uuid: str, max_mhz: int) -> DeviceResult:
        self.calls.append(("apply", (uuid, max_mhz)))
        if uuid not in self.locked:
            return DeviceResult(UNSUPPORTED, requested_mhz=max_mhz, message=f"no GPU {uuid}")
        fit = fit_to_steps(max_mhz, self.steps)
        self.locked[uuid] = fit.mhz
        return DeviceResult(APPLIED, requested_mhz=max_mhz, applied_mhz=fit.mhz, current_mhz=self.clock(uuid),
                            message=fit.note)

    def reset(self, uuid: str) -> DeviceResult:
        self.calls.append(("reset", uuid))
        if uuid not in self.locked:
            return DeviceResult(UNSUPPORTED, message=f"no GPU {uuid}")
        self.locked[uuid] = None
        return DeviceResult(APPLIED, current_mhz=self.clock(uuid))

    def current_clock(self, uuid: str) -> int | None:
        self.calls.append(("current_clock", uuid))
        return self.clock(uuid) if uuid in self.locked else None

    def close(self) -> None:
        self.calls.append(("close", None))

    def clock(self, uuid: str) -> int:
        locked = self.locked[uuid]
        return self.default_mhz if locked is None else locked

    def changes(self) -> list[tuple[str, Any]]:
        """The calls that change hardware."""
        return [call for call in self.calls if call[0] in ("apply", "reset")]


def cpu_inventory(cpu_id: int) -> CpuInventory:
    return CpuInventory(cpu_id=cpu_id, min_frequency=800, max_frequency=3500, driver="intel_pstate",
                        governor="powersave")


class PoweredGpus(FakeGpuBackend):
    """FakeGpuBackend GPUs that also draw power and take power limits (200..700 W, 700 W at first), as the node
    guard reads and limits them: a GPU draws what the test demands, held under its limit and, when its clock is
    locked, scaled down with the clock above what it draws idle."""

    def __init__(self, uuids: list[str], *, demand: float = 650.0, idle: float = 60.0) -> None:
        super().__init__(uuids)
        self.idle = idle
        self.demand = dict.fromkeys(uuids, demand)
        self.limits = dict.fromkeys(uuids, 700.0)
        self.refusing: dict[str, str] = {}

    def draw(self, uuid: str) -> float:
        scale = (self.clock(uuid) / self.default_mhz) ** 2.7
        return min(self.idle + max(self.demand[uuid] - self.idle, 0.0) * scale, self.limits[uuid])

    def power_states(self) -> dict[str, PowerState]:
        if self.unavailable:
            raise BackendUnavailableError(self.unavailable)
        return {uuid: PowerState(power=self.draw(uuid), limit=self.limits[uuid], min_limit=200.0, max_limit=700.0,
                                 clock_mhz=self.clock(uuid)) for uuid in self.locked}

    def set_power_limit(self, uuid: str, watts: float) -> None:
        if uuid in self.refusing:
            raise PowerLimitError(self.refusing[uuid])
        self.calls.append(("set_power_limit", (uuid, watts)))
        self.limits[uuid] = watts
