"""What NVML says about a GPU, read without changing anything: the supported clock steps, MIG and persistence
mode, the default clock, and the whole description `climatik tune --probe` prints.

Every function takes the pynvml module and a device handle, makes read calls only and decodes what
nvidia-ml-py returns (bytes or str, ctypes field values). A detail a GPU or an older or newer library does not
offer (NOT_SUPPORTED, FUNCTION_NOT_FOUND) reads as None, so one missing detail never hides the GPU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any, TypeVar

from climatik.tune.backends.base import GpuFacts, GpuNodeFacts
from climatik.tune.backends.nvmlsession import error_code, nvml_text

T = TypeVar("T")

# Answers that mean "this GPU or this library does not offer that", as opposed to a failure.
_ABSENT = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_NOT_FOUND",
           "NVML_ERROR_INVALID_ARGUMENT")


def _absent(nvml: Any, error: BaseException) -> bool:
    return error_code(error) in {getattr(nvml, name, None) for name in _ABSENT}


def _read(nvml: Any, read: Callable[[], T]) -> T | None:
    """`read()`, or None when the GPU or library does not offer it; other errors propagate."""
    try:
        return read()
    except nvml.NVMLError as error:
        if _absent(nvml, error):
            return None
        raise


def _bind(function: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: function(*args)


def graphics_steps(nvml: Any, handle: Any) -> list[int]:
    """The SM clocks a lock may use, ascending: NVML's list for the highest supported memory clock.

    Never the current memory clock: idle GDDR parts run at 405 MHz, whose list stops near 645 MHz, and loaded
    parts read a MHz or two under the supported value, which NVML does not know (NOT_FOUND).
    """
    memory = sorted({int(mhz) for mhz in nvml.nvmlDeviceGetSupportedMemoryClocks(handle)}, reverse=True)
    for memory_mhz in memory:
        steps = _read(nvml, _bind(nvml.nvmlDeviceGetSupportedGraphicsClocks, handle, memory_mhz))
        if steps:
            return sorted({int(mhz) for mhz in steps})
    return []


def mig_mode(nvml: Any, handle: Any) -> tuple[bool, bool] | None:
    """(current, pending) MIG mode, or None on a GPU without MIG."""
    modes = _read(nvml, lambda: nvml.nvmlDeviceGetMigMode(handle))
    if modes is None:
        return None
    enabled = nvml.NVML_DEVICE_MIG_ENABLE
    return int(modes[0]) == enabled, int(modes[1]) == enabled


def mig_enabled(nvml: Any, handle: Any) -> bool:
    modes = mig_mode(nvml, handle)
    return modes is not None and modes[0]


def persistence_mode(nvml: Any, handle: Any) -> bool | None:
    mode = _read(nvml, lambda: nvml.nvmlDeviceGetPersistenceMode(handle))
    return None if mode is None else int(mode) == nvml.NVML_FEATURE_ENABLED


def default_clock(nvml: Any, handle: Any) -> int | None:
    """The default application SM clock, asked the way that outlives nvmlDeviceGetDefaultApplicationsClock
    (deprecated in CUDA 13, removed in 14); None where the driver no longer reports one."""
    mhz = _read(nvml, lambda: nvml.nvmlDeviceGetClock(handle, nvml.NVML_CLOCK_GRAPHICS,
                                                         nvml.NVML_CLOCK_ID_APP_CLOCK_DEFAULT))
    return None if mhz is None else int(mhz)


def node_facts(nvml: Any, handles: Mapping[str, Any], *, baseline: tuple[int, int] | None) -> GpuNodeFacts:
    """The library, the driver and every GPU of `handles` (UUID -> handle)."""
    cuda = _read(nvml, lambda: int(nvml.nvmlSystemGetCudaDriverVersion()))
    return GpuNodeFacts(
        backend="nvml",
        driver_version=_read(nvml, lambda: nvml_text(nvml.nvmlSystemGetDriverVersion())),
        library_version=_read(nvml, lambda: nvml_text(nvml.nvmlSystemGetNVMLVersion())),
        cuda_driver_version=None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
        gpus=[gpu_facts(nvml, uuid, handle, baseline=baseline) for uuid, handle in handles.items()],
    )


def gpu_facts(nvml: Any, uuid: str, handle: Any, *, baseline: tuple[int, int] | None = None) -> GpuFacts:
    """One GPU, every reading optional: a failing one is noted in `problems` and the rest still read."""
    problems: list[str] = []

    def read(what: str, reading: Callable[[], T]) -> T | None:
        try:
            return _read(nvml, reading)
        except nvml.NVMLError as error:
            problems.append(f"{what}: {error}")
            return None

    modes = read("MIG mode", lambda: mig_mode(nvml, handle))
    steps = read("supported clocks", lambda: graphics_steps(nvml, handle)) or []
    memory = read("memory clocks", lambda: sorted({int(m) for m in nvml.nvmlDeviceGetSupportedMemoryClocks(handle)},
                                                  reverse=True))
    limits = read("power limits", lambda: nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle))
    mig_devices = read("MIG devices", lambda: _mig_devices(nvml, handle)) if modes and modes[0] else None
    lockable, note = _lockable(modes, steps, baseline)
    return GpuFacts(
        uuid=uuid,
        index=read("index", lambda: int(nvml.nvmlDeviceGetIndex(handle))),
        model=read("name", lambda: nvml_text(nvml.nvmlDeviceGetName(handle))),
        mig_mode=_mig_text(modes),
        mig_devices=mig_devices,
        persistence_mode=read("persistence mode", lambda: persistence_mode(nvml, handle)),
        memory_clocks_mhz=memory,
        min_clock_mhz=steps[0] if steps else None,
        max_clock_mhz=read("max clock", lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM))),
        steps=len(steps) or None,
        step_mhz=_step(steps),
        default_clock_mhz=read("default clock", lambda: default_clock(nvml, handle)),
        sm_clock_mhz=read("SM clock", lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))),
        memory_clock_mhz=read("memory clock", lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM))),
        power_limit_w=_w(read("power limit", lambda: nvml.nvmlDeviceGetPowerManagementLimit(handle))),
        default_power_limit_w=_w(read("default power limit",
                                      lambda: nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle))),
        min_power_limit_w=_w(limits[0]) if limits else None,
        max_power_limit_w=_w(limits[1]) if limits else None,
        power_w=_w(read("power", lambda: nvml.nvmlDeviceGetPowerUsage(handle))),
        instant_power_w=_w(read("instantaneous power", lambda: _instant_power(nvml, handle))),
        lockable=lockable,
        lock_note=note,
        problems=problems,
    )


def _lockable(modes: tuple[bool, bool] | None, steps: list[int],
              baseline: tuple[int, int] | None) -> tuple[bool, str]:
    if modes is not None and modes[0]:
        return False, "MIG mode is enabled: its SM clocks are shared by every MIG instance and never locked"
    if not steps:
        return False, "NVML lists no supported graphics clocks"
    release = (f"re-locked to the baseline {baseline[0]}-{baseline[1]} MHz" if baseline is not None
               else "reset to the default")
    pending = "; MIG mode will be enabled at the next GPU reset" if modes is not None and modes[1] else ""
    return True, f"SM clocks locked between {steps[0]} MHz and a target, {release} on release{pending}"


def _mig_text(modes: tuple[bool, bool] | None) -> str:
    if modes is None:
        return "not supported"
    current, pending = ("enabled" if mode else "disabled" for mode in modes)
    return current if current == pending else f"{current} (pending {pending})"


def _mig_devices(nvml: Any, handle: Any) -> int:
    count = 0
    for index in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
        # An empty slot answers NOT_FOUND.
        if _read(nvml, _bind(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, index)) is not None:
            count += 1
    return count


def _instant_power(nvml: Any, handle: Any) -> int | None:
    """The instantaneous power in mW where the GPU has the field (Ampere and newer report a 1 s average)."""
    field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)
    if field_id is None:
        return None
    (value,) = nvml.nvmlDeviceGetFieldValues(handle, [field_id])
    if value.nvmlReturn != nvml.NVML_SUCCESS:
        return None
    return int(value.value.uiVal)


def _step(steps: list[int]) -> int | None:
    gaps = Counter(high - low for low, high in pairwise(steps))
    return gaps.most_common(1)[0][0] if gaps else None


def _w(milliwatts: Any) -> float | None:
    return None if milliwatts is None else round(int(milliwatts) / 1000, 2)
