"""Test doubles for the tuner tests: a pynvml stand-in, a sysfs-shaped CPU tree, and in-memory backends.

The pynvml stand-in is a MagicMock carrying the real module's constants and error classes, so the backend's
`except nvml.NVMLError` and its error-code checks behave as with the real bindings. Its SM clock reads back
the locked upper bound, so results can be checked as a user would see them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pynvml
from pytest_mock import MockerFixture

from climatik.api import CpuInventory, GpuInventory
from climatik.api.nodefrequencies import APPLIED, UNSUPPORTED
from climatik.tune.backends.base import BackendUnavailableError, DeviceResult, fit_to_steps

H100_STEPS = list(range(210, 1981, 15))
GPU_A = "GPU-5fd4c8a1-0000-4000-8000-00000000000a"
GPU_B = "GPU-5fd4c8a1-0000-4000-8000-00000000000b"


@dataclass
class NvmlStandIn:
    """The mocked module plus the two device handles it hands out."""

    lib: MagicMock
    handles: list[object]
    locked: dict[int, tuple[int, int]] = field(default_factory=dict)

    def handle(self, uuid: str) -> object:
        return self.handles[[GPU_A, GPU_B].index(uuid)]


def nvml_stand_in(mocker: MockerFixture) -> NvmlStandIn:
    """Two H100s behind a mocked pynvml: GPU_A (its UUID returned as bytes) and GPU_B (as str)."""
    lib = mocker.MagicMock(name="pynvml")
    for name in dir(pynvml):
        if name.startswith(("NVML_", "NVMLError")):
            setattr(lib, name, getattr(pynvml, name))
    handles = [object(), object()]
    # One version of nvidia-ml-py returns bytes, another str: the stand-in does both.
    uuids: dict[int, bytes | str] = {id(handles[0]): GPU_A.encode(), id(handles[1]): GPU_B}
    stand_in = NvmlStandIn(lib=lib, handles=handles)

    def clock_info(handle: object, clock: int) -> int:
        if clock == pynvml.NVML_CLOCK_MEM:
            return 2619
        locked = stand_in.locked.get(id(handle))
        return 1980 if locked is None else locked[1]

    def set_locked(handle: object, low: int, high: int) -> None:
        stand_in.locked[id(handle)] = (low, high)

    lib.nvmlDeviceGetCount.return_value = 2
    lib.nvmlDeviceGetHandleByIndex.side_effect = lambda index: handles[index]
    lib.nvmlDeviceGetUUID.side_effect = lambda handle: uuids[id(handle)]
    lib.nvmlDeviceGetName.return_value = b"NVIDIA H100 80GB HBM3"
    lib.nvmlDeviceGetClockInfo.side_effect = clock_info
    lib.nvmlDeviceGetSupportedGraphicsClocks.return_value = list(reversed(H100_STEPS))
    lib.nvmlDeviceGetMaxClockInfo.return_value = 1980
    lib.nvmlDeviceGetDefaultApplicationsClock.return_value = 1755
    lib.nvmlDeviceGetPowerManagementLimit.return_value = 700_000
    lib.nvmlDeviceGetPowerManagementLimitConstraints.return_value = [200_000, 700_000]
    lib.nvmlDeviceSetGpuLockedClocks.side_effect = set_locked
    lib.nvmlDeviceResetGpuLockedClocks.side_effect = lambda handle: stand_in.locked.pop(id(handle), None)
    return stand_in


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
