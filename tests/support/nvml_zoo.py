"""A device zoo for the tuner's NVML side: a fake `pynvml` module whose GPUs are built from public facts.

`FakeNvml` answers the nvidia-ml-py calls the tuner makes (or will make) the way the installed
nvidia-ml-py 13.x does: same function names and argument orders, the same return types (lists where
pynvml returns lists, `str` where its `convertStrBytes` decodes, a ctypes array for field values), and
the real module's constants and exception classes, so `error.value` and `str(error)` read as in production.

Facts live in `ZOO`, one frozen `GpuModel` row per model with the public source it came from and what
had to be assumed; `print(facts_table())` shows them. Build nodes with `device()` and `FakeNvml`:

    nvml = FakeNvml([device("h100-sxm", 0), device("h100-sxm", 1)])
    nvml = FakeNvml.node("l4", count=4)
    nvml.load(0)                      # GDDR: memory clock leaves 405 MHz and reads 6250 (one under 6251)
    nvml.set_state(0, power_w=250.0)  # pin a reading
    nvml.fail_init(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

Faults: `fail_init(code)` (library not found, driver not loaded, LIB_RM_VERSION_MISMATCH, UNKNOWN),
`deny_writes()` (NO_PERMISSION on every set/reset), `lose(i)` (GPU_IS_LOST), `device(..., uuid_error=code)`,
an empty node (`FakeNvml([])`: the runtime hid the GPUs, nvmlInit works and counts 0) or
`FakeNvml([], gpus_bound=False)` (nvmlInit fails with GPU_NOT_FOUND unless NVML_INIT_FLAG_NO_GPUS),
`driver_reload()` (settings gone, every call fails until nvmlShutdown + nvmlInit, old handles stay dead),
`fail(function, code, device=..., times=...)` for anything else, and `missing_functions=` for a symbol an
older or newer libnvidia-ml lacks (FUNCTION_NOT_FOUND, as pynvml raises it).

Every call is logged in `calls` as `Call(function, args)`; `writes()` keeps the ones that change a GPU.

Behaviour chosen where NVML documents nothing (each also listed in the relevant row's source):
* A lock range is stored as asked (INVALID_ARGUMENT if min > max or only one bound is symbolic); the clock it
  produces snaps down to a supported step of the top memory clock.
* Idle: the SM clock sits at the model's idle clock, held inside a lock range ("take effect regardless if
  a cuda app is running"). Loaded: the lock's upper bound or the max clock. Power under load follows
  docs/gpu-model.md's shape (beta 0.2, alpha 2.5) and is capped by the power limit (SwPowerCap).
* SetGpuLockedClocks/ResetGpuLockedClocks on a MIG-enabled GPU: NOT_SUPPORTED (NVIDIA's CUPTI clock-control
  docs say clock locking is unavailable on MIG-partitioned devices; nvml.h is silent). Per-device switch
  `mig_locks_supported`. MIG device handles answer identity calls only; the rest is NOT_SUPPORTED.
* After `driver_reload()` the failing calls raise GPU_IS_LOST (configurable).
* `str()` of codes pynvml has no text for (e.g. GPU_NOT_FOUND, 28) reads "NVML Error with code 28" because
  no libnvidia-ml is loaded to ask; production prints the library's text ("No supported GPUs were found").
"""

# The fake's methods and parameters carry pynvml's own camelCase names, which is the point of the fake.
# ruff: noqa: N802, N803

from __future__ import annotations

import ctypes
import functools
import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple, TypeVar

import pynvml

F = TypeVar("F", bound=Callable[..., Any])


def _steps(top: int, bottom: int, step: int = 15) -> tuple[int, ...]:
    """Supported graphics clocks as NVML lists them: highest first."""
    return tuple(range(top, bottom - 1, -step))


@dataclass(frozen=True)
class MigInstance:
    """One MIG device (a GPU instance with one compute instance) on a MIG-enabled GPU."""

    gpu_instance_id: int
    compute_instance_id: int
    profile: str


@dataclass(frozen=True)
class GpuModel:
    """What NVML reports for one GPU model. Clocks in MHz, power in W (the fake answers NVML's mW)."""

    key: str
    name: str
    memory_type: str
    memory_clocks: tuple[int, ...]
    graphics_clocks: tuple[tuple[int, tuple[int, ...]], ...]
    max_sm_mhz: int
    default_app_sm_mhz: int
    default_app_mem_mhz: int
    idle_sm_mhz: int
    idle_mem_reading_mhz: int
    busy_mem_reading_mhz: int
    max_video_mhz: int
    idle_video_mhz: int
    power_default_w: float
    power_min_w: float
    power_max_w: float
    idle_power_w: float
    power_usage_averaged: bool
    instant_power_field: bool
    idle_pstate: int
    mig_capable: bool
    source: str
    mig_enabled: bool = False
    mig_instances: tuple[MigInstance, ...] = ()
    max_mig_devices: int = 0

    def steps_at(self, memory_mhz: int) -> tuple[int, ...] | None:
        return dict(self.graphics_clocks).get(memory_mhz)

    @property
    def top_steps(self) -> tuple[int, ...]:
        steps = self.steps_at(max(self.memory_clocks))
        assert steps is not None
        return steps


_H100_SOURCE = (
    "nvidia-smi -q dumps: an 'NVIDIA H100 80GB HBM3' node (driver 565.57.01: power limit 700 W default/max, 200 W "
    "min; idle at 345 MHz SM, 2619 MHz memory, 82.8-100.9 W; default application clocks 1980/2619; max SM 1980, "
    "video 1545/765 idle) and an H800 SXM (driver 525.105.17: 74.71 W idle, same limits); NVIDIA H100 product page "
    "(700 W). gpu-model.md: idle 72-78 W. nvml.h: Ampere-but-GA100 and newer report a 1 s average power. "
    "ASSUMED: graphics steps 1980..210 in 15 MHz (no public SUPPORTED_CLOCKS dump found; the A100/L4 lists and "
    "gpu-model.md's H100 PCIe table 210-1755 have that shape); idle power 75 W; instant-power field present."
)

H100_SXM = GpuModel(
    key="h100-sxm", name="NVIDIA H100 80GB HBM3", memory_type="HBM3",
    memory_clocks=(2619,), graphics_clocks=((2619, _steps(1980, 210)),),
    max_sm_mhz=1980, default_app_sm_mhz=1980, default_app_mem_mhz=2619,
    idle_sm_mhz=345, idle_mem_reading_mhz=2619, busy_mem_reading_mhz=2619, max_video_mhz=1545, idle_video_mhz=765,
    power_default_w=700.0, power_min_w=200.0, power_max_w=700.0, idle_power_w=75.0,
    power_usage_averaged=True, instant_power_field=True, idle_pstate=0, mig_capable=True, max_mig_devices=7,
    source=_H100_SOURCE,
)

H200 = GpuModel(
    key="h200", name="NVIDIA H200", memory_type="HBM3e",
    memory_clocks=(3201,), graphics_clocks=((3201, _steps(1980, 210)),),
    max_sm_mhz=1980, default_app_sm_mhz=1980, default_app_mem_mhz=3201,
    idle_sm_mhz=345, idle_mem_reading_mhz=3199, busy_mem_reading_mhz=3199, max_video_mhz=1545, idle_video_mhz=765,
    power_default_w=700.0, power_min_w=200.0, power_max_w=700.0, idle_power_w=74.58,
    power_usage_averaged=True, instant_power_field=True, idle_pstate=0, mig_capable=True, max_mig_devices=7,
    source=(
        "nvidia-smi -q dump of an 'NVIDIA H200' (driver 550.90.12, kept as an nvidia-smi simulator fixture): "
        "power limit 700 W default/max, 200 W min; 74.58 W idle at 345 MHz; application/default/max memory clock "
        "3201 MHz while the current memory clock READS 3199 MHz (so even this HBM part fails "
        "nvmlDeviceGetSupportedGraphicsClocks(h, current memory clock)); max SM 1980. ASSUMED: graphics steps as "
        "H100; the memory reading stays 3199 under load; instant-power field present."
    ),
)

_A100_SOURCE = (
    "nvidia-smi -q dumps of 'NVIDIA A100-SXM4-80GB': 400 W board (driver 525.60.13): limits 400 W default/max, "
    "100 W min, default application clocks 1155/1593, max SM 1410, video max 1290; a 500 W board (driver "
    "555.42.02) idles at 210 MHz SM / 585 video, 59.77 W; `-d SUPPORTED_CLOCKS` (driver 510.73.08): memory "
    "1593 MHz with graphics 1410, 1395, ... 225, 210. nvml.h: GA100 reports instantaneous power. "
    "gpu-model.md: idle about 60 W. ASSUMED: instant-power field present."
)

A100_SXM4_80GB = GpuModel(
    key="a100-sxm4-80gb", name="NVIDIA A100-SXM4-80GB", memory_type="HBM2e",
    memory_clocks=(1593,), graphics_clocks=((1593, _steps(1410, 210)),),
    max_sm_mhz=1410, default_app_sm_mhz=1155, default_app_mem_mhz=1593,
    idle_sm_mhz=210, idle_mem_reading_mhz=1593, busy_mem_reading_mhz=1593, max_video_mhz=1290, idle_video_mhz=585,
    power_default_w=400.0, power_min_w=100.0, power_max_w=400.0, idle_power_w=60.0,
    power_usage_averaged=False, instant_power_field=True, idle_pstate=0, mig_capable=True, max_mig_devices=7,
    source=_A100_SOURCE,
)

A100_SXM4_80GB_MIG = replace(
    A100_SXM4_80GB,
    key="a100-sxm4-80gb-mig",
    mig_enabled=True,
    mig_instances=(MigInstance(2, 0, "3g.40gb"), MigInstance(3, 0, "2g.20gb"), MigInstance(9, 0, "1g.10gb")),
    source=(
        _A100_SOURCE + " MIG: NVIDIA MIG User Guide (A100 80GB profiles 1g.10gb, 2g.20gb, 3g.40gb, 4g.40gb, "
        "7g.80gb; at most 7 MIG devices); nvml.h: nvmlDeviceGetMaxMigDeviceCount is 0 unless MIG is enabled, "
        "GetMigDeviceHandleByIndex is NOT_FOUND for an empty slot. ASSUMED: GPU instance IDs 2/3/9 (the user "
        "guide's placement example); SetGpuLockedClocks answers NOT_SUPPORTED while MIG is on (CUPTI clock-control "
        "docs: clock locking unavailable on MIG-partitioned devices; nvml.h is silent)."
    ),
)

L4 = GpuModel(
    key="l4", name="NVIDIA L4", memory_type="GDDR6",
    memory_clocks=(6251, 405), graphics_clocks=((6251, _steps(2040, 210)), (405, _steps(645, 210))),
    max_sm_mhz=2040, default_app_sm_mhz=2040, default_app_mem_mhz=6251,
    idle_sm_mhz=210, idle_mem_reading_mhz=405, busy_mem_reading_mhz=6250, max_video_mhz=1770, idle_video_mhz=765,
    power_default_w=72.0, power_min_w=40.0, power_max_w=72.0, idle_power_w=16.0,
    power_usage_averaged=True, instant_power_field=True, idle_pstate=8, mig_capable=False,
    source=(
        "public nvidia-smi -q -x dump of two 'NVIDIA L4' (driver 555.42.06, a Go test fixture; the one cited in "
        "hardware-review H-1): supported memory clocks 6251 MHz (graphics 2040..210 in 15 MHz) and 405 MHz "
        "(645..210); under load mem_clock reads 6250 MHz; power limit 72 W default/max, 40 W min; application and "
        "max clocks 2040/6251; video max 1770; 27.22 W at P0 with two light ffmpeg processes. "
        "NVIDIA/nvidia-docker#1447: the same one-MHz-under reading (7250 vs 7251). ASSUMED: idle (P8) power 16 W, "
        "idle video 765 MHz, instant-power field present."
    ),
)

L40S = GpuModel(
    key="l40s", name="NVIDIA L40S", memory_type="GDDR6",
    memory_clocks=(9001, 405), graphics_clocks=((9001, _steps(2520, 210)), (405, _steps(645, 210))),
    max_sm_mhz=2520, default_app_sm_mhz=2520, default_app_mem_mhz=9001,
    idle_sm_mhz=210, idle_mem_reading_mhz=405, busy_mem_reading_mhz=9000, max_video_mhz=1965, idle_video_mhz=1185,
    power_default_w=350.0, power_min_w=100.0, power_max_w=350.0, idle_power_w=33.44,
    power_usage_averaged=True, instant_power_field=True, idle_pstate=8, mig_capable=False,
    source=(
        "nvidia-smi -q dump of an 'NVIDIA L40S' (driver 550.127.05, an nvidia-smi simulator fixture): P8 idle at "
        "210 MHz SM / 405 MHz memory / 1185 MHz video, 33.44 W; power limit 350 W default/max, 100 W min; "
        "application and max clocks 2520/9001; video max 1965. ASSUMED: supported memory clocks 9001 and 405 only "
        "(consumer Ada boards also list 5001 and 810), graphics 2520..210 at 9001 and 645..210 at 405 (as the L4), "
        "a loaded memory reading one under (9000, as L4 and nvidia-docker#1447), instant-power field present."
    ),
)

T4 = GpuModel(
    key="t4", name="Tesla T4", memory_type="GDDR6",
    memory_clocks=(5001, 405), graphics_clocks=((5001, _steps(1590, 300)), (405, _steps(645, 300))),
    max_sm_mhz=1590, default_app_sm_mhz=585, default_app_mem_mhz=5001,
    idle_sm_mhz=300, idle_mem_reading_mhz=405, busy_mem_reading_mhz=5000, max_video_mhz=1470, idle_video_mhz=540,
    power_default_w=70.0, power_min_w=60.0, power_max_w=70.0, idle_power_w=14.04,
    power_usage_averaged=False, instant_power_field=False, idle_pstate=8, mig_capable=False,
    source=(
        "nvidia-smi -q dump of a 'Tesla T4' (driver 530.30.02): P8 idle at 300 MHz SM / 405 MHz memory / 540 MHz "
        "video, 14.04 W; power limit 70 W default/max, 60 W min; default application clocks 585/5001; max SM 1590, "
        "video 1470 (NVIDIA/nvidia-docker#1628 shows the same clocks). nvml.h: pre-Ampere reports instantaneous "
        "power. ASSUMED: graphics 1590..300 in 15 MHz at 5001 and 645..300 at 405, a loaded memory reading of 5000, "
        "no NVML_FI_DEV_POWER_INSTANT field (per-field NOT_SUPPORTED)."
    ),
)

ZOO: tuple[GpuModel, ...] = (H100_SXM, H200, A100_SXM4_80GB, A100_SXM4_80GB_MIG, L4, L40S, T4)


def model(key: str) -> GpuModel:
    for row in ZOO:
        if row.key == key:
            return row
    raise KeyError(f"no GPU model {key!r} in the zoo; known: {', '.join(row.key for row in ZOO)}")


def facts_table() -> str:
    """The zoo as text, one block per model, for test logs and reviews."""
    lines = []
    for row in ZOO:
        mig = "on" if row.mig_enabled else "capable" if row.mig_capable else "no"
        clocks = "; ".join(f"mem {mem}: {steps[0]}..{steps[-1]} ({len(steps)} steps)" for mem, steps in
                           row.graphics_clocks)
        lines += [
            f"{row.key}: {row.name!r} ({row.memory_type}, MIG {mig})",
            f"  supported memory clocks {list(row.memory_clocks)}; {clocks}",
            f"  max SM {row.max_sm_mhz}, default application {row.default_app_sm_mhz}/{row.default_app_mem_mhz}, "
            f"idle SM {row.idle_sm_mhz}, memory reads {row.idle_mem_reading_mhz} idle / "
            f"{row.busy_mem_reading_mhz} busy",
            f"  power limit {row.power_default_w:g} W default, {row.power_min_w:g}..{row.power_max_w:g} W, idle "
            f"{row.idle_power_w:g} W, {'1 s average' if row.power_usage_averaged else 'instantaneous'} power usage, "
            f"instant field {'yes' if row.instant_power_field else 'no'}",
            f"  source: {row.source}",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class DeviceSpec:
    """One GPU of a fake node: a model plus per-board details and quirks."""

    model: GpuModel
    index: int
    uuid: str
    busy_mem_reading_mhz: int | None = None
    idle_mem_reading_mhz: int | None = None
    uuid_error: int | None = None
    persistence: int = pynvml.NVML_FEATURE_ENABLED
    mig_locks_supported: bool = False


def device(model_key: str, index: int = 0, *, uuid: str | None = None, busy_mem_mhz: int | None = None,
           idle_mem_mhz: int | None = None, uuid_error: int | None = None,
           persistence: int = pynvml.NVML_FEATURE_ENABLED, mig_locks_supported: bool = False) -> DeviceSpec:
    """A GPU of the given model at NVML index `index`. `busy_mem_mhz`/`idle_mem_mhz` override the memory clock
    reading (e.g. 6251 to take away the L4's off-by-one); `uuid_error` makes nvmlDeviceGetUUID raise that code."""
    row = model(model_key)
    name = uuid or f"GPU-{uuidlib.uuid5(uuidlib.NAMESPACE_URL, f'climatik-zoo/{model_key}/{index}')}"
    return DeviceSpec(row, index, name, busy_mem_mhz, idle_mem_mhz, uuid_error, persistence, mig_locks_supported)


class Call(NamedTuple):
    """One call made to the fake module."""

    function: str
    args: tuple[Any, ...]


WRITE_FUNCTIONS = frozenset({
    "nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks", "nvmlDeviceSetPowerManagementLimit",
})


class FakeHandle:
    """A device handle. Like pynvml's ctypes pointers, every lookup returns a new object that compares by identity."""

    __slots__ = ("generation", "index", "mig")

    def __init__(self, index: int, generation: int, mig: MigInstance | None = None) -> None:
        self.index = index
        self.generation = generation
        self.mig = mig

    def __repr__(self) -> str:
        suffix = f" mig={self.mig.profile}" if self.mig else ""
        return f"<FakeHandle gpu={self.index}{suffix}>"


@dataclass
class DeviceState:
    """Mutable per-GPU state. Overrides (None = computed from the model) pin what NVML reports."""

    spec: DeviceSpec
    power_limit_mw: int
    locked: tuple[int, int] | None = None
    utilization: float = 0.0
    lost: bool = False
    sm_mhz: int | None = None
    mem_mhz: int | None = None
    power_w: float | None = None
    instant_power_w: float | None = None
    event_reasons: int | None = None

    @property
    def model(self) -> GpuModel:
        return self.spec.model


@dataclass
class _Fault:
    function: str
    code: int
    device: int | None
    remaining: int | None


_KEEP: Any = object()


def _api(*, write: bool = False, needs_init: bool = True) -> Callable[[F], F]:
    """Log the call and apply what every NVML entry point shares: library loaded, symbol present, session open,
    injected faults."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def call(self: FakeNvml, *args: Any) -> Any:
            self._enter(method.__name__, args, needs_init=needs_init)
            if write and self.write_error is not None:
                raise pynvml.NVMLError(self.write_error)
            return method(self, *args)

        return call  # type: ignore[return-value]

    return wrap


class FakeNvml:
    """A module-like stand-in for `pynvml` (see the module docstring). NVML_* constants, NVMLError* classes and
    ctypes types come from the real module; functions are the fake's own."""

    NVMLError = pynvml.NVMLError

    def __init__(self, devices: Iterable[DeviceSpec] = (), *, strings: Literal["str", "bytes"] = "str",
                 driver_version: str = "555.42.06", cuda_driver_version: int = 12050, gpus_bound: bool = True,
                 missing_functions: Iterable[str] = ()) -> None:
        specs = sorted(devices, key=lambda spec: spec.index)
        if [spec.index for spec in specs] != list(range(len(specs))):
            raise ValueError(f"device indexes must be 0..n-1, got {[spec.index for spec in specs]}")
        self._states = [DeviceState(spec, round(spec.model.power_default_w * 1000)) for spec in specs]
        self.strings = strings
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self.gpus_bound = gpus_bound
        self.missing_functions = set(missing_functions)
        self.calls: list[Call] = []
        self.init_count = 0
        self.shutdown_count = 0
        self.write_error: int | None = None
        self.init_error: int | None = None
        self.stale_error = pynvml.NVML_ERROR_GPU_IS_LOST
        self._library_loaded = False
        self._refcount = 0
        self._generation = 0
        self._stale = False
        self._faults: list[_Fault] = []
        self._clock_us = 1_700_000_000_000_000

    @classmethod
    def node(cls, model_key: str, count: int = 1, **kwargs: Any) -> FakeNvml:
        """`count` GPUs of one model at indexes 0..count-1; keyword arguments go to the constructor."""
        return cls([device(model_key, index) for index in range(count)], **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Constants, exception classes and ctypes types come from the real module; a function the zoo does not
        # model must fail loudly instead of reaching the real bindings (which would need a real libnvidia-ml).
        value = getattr(pynvml, name, None)
        if value is not None and (isinstance(value, type) or not callable(value)):
            return value
        raise AttributeError(f"FakeNvml does not model pynvml.{name}; add it to tests/support/nvml_zoo.py")

    # ----------------------------------------------------------------- test-side controls

    def state(self, index: int) -> DeviceState:
        return self._states[index]

    @property
    def session_open(self) -> bool:
        """Whether NVML is initialised (the process holds /dev/nvidia* open, which blocks a driver unload)."""
        return self._refcount > 0

    def uuids(self) -> list[str]:
        return [state.spec.uuid for state in self._states]

    def load(self, index: int, utilization: float = 1.0) -> None:
        """Put a GPU under load: P0, top memory clock (read with the model's quirk), SM at the lock or max."""
        self._states[index].utilization = utilization

    def idle(self, index: int) -> None:
        self._states[index].utilization = 0.0

    def set_state(self, index: int, *, sm_mhz: int | None = _KEEP, mem_mhz: int | None = _KEEP,
                  power_w: float | None = _KEEP, instant_power_w: float | None = _KEEP,
                  event_reasons: int | None = _KEEP, utilization: float = _KEEP) -> None:
        """Pin readings (None goes back to the computed value)."""
        state = self._states[index]
        for name, value in (("sm_mhz", sm_mhz), ("mem_mhz", mem_mhz), ("power_w", power_w),
                            ("instant_power_w", instant_power_w), ("event_reasons", event_reasons),
                            ("utilization", utilization)):
            if value is not _KEEP:
                setattr(state, name, value)

    def locked(self, index: int) -> tuple[int, int] | None:
        return self._states[index].locked

    def power_limit_w(self, index: int) -> float:
        return self._states[index].power_limit_mw / 1000

    def fail_init(self, code: int | None) -> None:
        """nvmlInit/nvmlInitWithFlags raise `code` until cleared with None (LIBRARY_NOT_FOUND, DRIVER_NOT_LOADED,
        LIB_RM_VERSION_MISMATCH, UNKNOWN as after a lost cgroup device grant, NO_PERMISSION)."""
        self.init_error = code

    def deny_writes(self, code: int | None = pynvml.NVML_ERROR_NO_PERMISSION) -> None:
        """Every set/reset raises `code` (no CAP_SYS_ADMIN); None allows writes again."""
        self.write_error = code

    def lose(self, index: int) -> None:
        """The GPU fell off the bus: its handle lookups and calls raise GPU_IS_LOST."""
        self._states[index].lost = True

    def recover(self, index: int) -> None:
        self._states[index].lost = False

    def driver_reload(self, error: int = pynvml.NVML_ERROR_GPU_IS_LOST) -> None:
        """The driver was reloaded (or the GPUs reset) under an open session: locks and power limits are back to
        their defaults, calls raise `error` until nvmlShutdown + nvmlInit, and old handles never work again."""
        self.stale_error = error
        self._generation += 1
        self._stale = self._refcount > 0
        for state in self._states:
            state.locked = None
            state.power_limit_mw = round(state.model.power_default_w * 1000)

    def fail(self, function: str, code: int, *, device: int | None = None, times: int | None = None) -> None:
        """The next `times` calls (all, if None) of `function` (on GPU `device`, if given) raise `code`."""
        self._faults.append(_Fault(function, code, device, times))

    def clear_faults(self) -> None:
        self._faults.clear()

    def writes(self) -> list[Call]:
        """The calls that change a GPU (whether or not they succeeded)."""
        return [call for call in self.calls if call.function in WRITE_FUNCTIONS]

    # ----------------------------------------------------------------- shared plumbing

    def _enter(self, function: str, args: tuple[Any, ...], *, needs_init: bool) -> None:
        self.calls.append(Call(function, args))
        if not needs_init:
            return
        if not self._library_loaded:
            # pynvml raises this itself when libnvidia-ml was never loaded.
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if function in self.missing_functions:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        if self._refcount == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if self._stale:
            raise pynvml.NVMLError(self.stale_error)
        handle = args[0] if args and isinstance(args[0], FakeHandle) else None
        for fault in self._faults:
            if fault.function != function or fault.remaining == 0:
                continue
            if fault.device is not None and (handle is None or handle.index != fault.device):
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            raise pynvml.NVMLError(fault.code)

    def _text(self, value: str) -> str | bytes:
        return value.encode() if self.strings == "bytes" else value

    def _state(self, handle: Any, *, mig_ok: bool = False) -> DeviceState:
        if not isinstance(handle, FakeHandle) or not 0 <= handle.index < len(self._states):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        state = self._states[handle.index]
        if handle.generation != self._generation or state.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if handle.mig is not None and not mig_ok:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return state

    def _sm_clock(self, state: DeviceState) -> int:
        if state.sm_mhz is not None:
            return state.sm_mhz
        row = state.model
        clock = row.max_sm_mhz if state.utilization > 0 else row.idle_sm_mhz
        if state.locked is not None:
            low, high = (self._snap(row, bound) for bound in state.locked)
            clock = min(max(clock, low), high)
        return clock

    @staticmethod
    def _snap(row: GpuModel, mhz: int) -> int:
        below = [step for step in row.top_steps if step <= mhz]
        return below[0] if below else row.top_steps[-1]

    def _mem_clock(self, state: DeviceState) -> int:
        if state.mem_mhz is not None:
            return state.mem_mhz
        if state.utilization > 0:
            return state.spec.busy_mem_reading_mhz or state.model.busy_mem_reading_mhz
        return state.spec.idle_mem_reading_mhz or state.model.idle_mem_reading_mhz

    def _power(self, state: DeviceState) -> tuple[float, bool]:
        """(watts, capped by the power limit)."""
        if state.power_w is not None:
            return state.power_w, False
        row = state.model
        if state.utilization <= 0:
            return row.idle_power_w, False
        ratio = self._sm_clock(state) / row.max_sm_mhz
        watts = row.idle_power_w + state.utilization * (row.power_default_w - row.idle_power_w) * (
            0.2 + 0.8 * ratio ** 2.5)
        limit = state.power_limit_mw / 1000
        return (limit, True) if watts > limit else (watts, False)

    # ----------------------------------------------------------------- init and system

    def _init(self, flags: int) -> None:
        if self.init_error is not None:
            # LIBRARY_NOT_FOUND comes from pynvml's loader, which leaves the library unloaded; any other code is
            # libnvidia-ml's own answer, so the library is loaded by then.
            if self.init_error != pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
                self._library_loaded = True
            raise pynvml.NVMLError(self.init_error)
        self._library_loaded = True
        if not self._states and not self.gpus_bound and not flags & pynvml.NVML_INIT_FLAG_NO_GPUS:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_NOT_FOUND)
        self._refcount += 1
        self.init_count += 1

    @_api(needs_init=False)
    def nvmlInitWithFlags(self, flags: int) -> None:
        self._init(flags)

    @_api(needs_init=False)
    def nvmlInit(self) -> None:
        self._init(0)

    @_api(needs_init=False)
    def nvmlShutdown(self) -> None:
        if not self._library_loaded:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        # nvml.h: no error when called more often than nvmlInit.
        self._refcount = max(0, self._refcount - 1)
        if self._refcount == 0:
            self._stale = False
        self.shutdown_count += 1

    @_api()
    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self._text(self.driver_version)

    @_api()
    def nvmlSystemGetNVMLVersion(self) -> str | bytes:
        return self._text(f"{self.cuda_driver_version // 1000}.{self.driver_version}")

    @_api()
    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda_driver_version

    @_api()
    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self.cuda_driver_version

    # ----------------------------------------------------------------- enumeration and identity

    @_api()
    def nvmlDeviceGetCount(self) -> int:
        return len(self._states)

    @_api()
    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        if not 0 <= index < len(self._states):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if self._states[index].lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return FakeHandle(index, self._generation)

    @_api()
    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeHandle:
        if isinstance(uuid, str) and self.strings == "bytes":
            # Releases without convertStrBytes hand the str straight to ctypes.c_char_p.
            raise TypeError("bytes or integer address expected instead of str instance")
        wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
        for index, state in enumerate(self._states):
            if state.spec.uuid == wanted:
                if state.lost:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
                return FakeHandle(index, self._generation)
            for slot, mig in enumerate(state.model.mig_instances if state.model.mig_enabled else ()):
                if self._mig_uuid(state, slot) == wanted:
                    return FakeHandle(index, self._generation, mig)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    @_api()
    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str | bytes:
        state = self._state(handle, mig_ok=True)
        if handle.mig is not None:
            return self._text(self._mig_uuid(state, state.model.mig_instances.index(handle.mig)))
        if state.spec.uuid_error is not None:
            raise pynvml.NVMLError(state.spec.uuid_error)
        return self._text(state.spec.uuid)

    @_api()
    def nvmlDeviceGetName(self, handle: FakeHandle) -> str | bytes:
        state = self._state(handle, mig_ok=True)
        suffix = f" MIG {handle.mig.profile}" if handle.mig is not None else ""
        return self._text(state.model.name + suffix)

    @_api()
    def nvmlDeviceGetIndex(self, handle: FakeHandle) -> int:
        return self._state(handle).spec.index

    @_api()
    def nvmlDeviceGetPersistenceMode(self, handle: FakeHandle) -> int:
        return self._state(handle).spec.persistence

    @_api()
    def nvmlDeviceGetPerformanceState(self, handle: FakeHandle) -> int:
        state = self._state(handle)
        return pynvml.NVML_PSTATE_0 if state.utilization > 0 else state.model.idle_pstate

    # ----------------------------------------------------------------- clocks

    def _clock_of(self, state: DeviceState, clock_type: int) -> int:
        if clock_type in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM):
            return self._sm_clock(state)
        if clock_type == pynvml.NVML_CLOCK_MEM:
            return self._mem_clock(state)
        if clock_type == pynvml.NVML_CLOCK_VIDEO:
            return state.model.max_video_mhz if state.utilization > 0 else state.model.idle_video_mhz
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    @staticmethod
    def _max_of(row: GpuModel, clock_type: int) -> int:
        if clock_type in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM):
            return row.max_sm_mhz
        if clock_type == pynvml.NVML_CLOCK_MEM:
            return max(row.memory_clocks)
        if clock_type == pynvml.NVML_CLOCK_VIDEO:
            return row.max_video_mhz
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    @staticmethod
    def _default_app_of(row: GpuModel, clock_type: int) -> int:
        # ASSUMED: the SM domain answers like graphics (SM and graphics clocks are equal in every dump).
        if clock_type in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM):
            return row.default_app_sm_mhz
        if clock_type == pynvml.NVML_CLOCK_MEM:
            return row.default_app_mem_mhz
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    @_api()
    def nvmlDeviceGetClockInfo(self, handle: FakeHandle, type: int) -> int:
        return self._clock_of(self._state(handle), type)

    @_api()
    def nvmlDeviceGetMaxClockInfo(self, handle: FakeHandle, type: int) -> int:
        return self._max_of(self._state(handle).model, type)

    @_api()
    def nvmlDeviceGetMaxCustomerBoostClock(self, handle: FakeHandle, type: int) -> int:
        state = self._state(handle)
        if type not in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return state.model.max_sm_mhz

    @_api()
    def nvmlDeviceGetApplicationsClock(self, handle: FakeHandle, type: int) -> int:
        return self._default_app_of(self._state(handle).model, type)

    @_api()
    def nvmlDeviceGetDefaultApplicationsClock(self, handle: FakeHandle, type: int) -> int:
        return self._default_app_of(self._state(handle).model, type)

    @_api()
    def nvmlDeviceGetClock(self, handle: FakeHandle, type: int, id: int) -> int:
        state = self._state(handle)
        if id == pynvml.NVML_CLOCK_ID_CURRENT:
            return self._clock_of(state, type)
        if id in (pynvml.NVML_CLOCK_ID_APP_CLOCK_TARGET, pynvml.NVML_CLOCK_ID_APP_CLOCK_DEFAULT):
            return self._default_app_of(state.model, type)
        if id == pynvml.NVML_CLOCK_ID_CUSTOMER_BOOST_MAX:
            if type == pynvml.NVML_CLOCK_MEM:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return self._max_of(state.model, type)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    @_api()
    def nvmlDeviceGetSupportedMemoryClocks(self, handle: FakeHandle) -> list[int]:
        return list(self._state(handle).model.memory_clocks)

    @_api()
    def nvmlDeviceGetSupportedGraphicsClocks(self, handle: FakeHandle, memoryClockMHz: int) -> list[int]:
        steps = self._state(handle).model.steps_at(int(memoryClockMHz))
        if steps is None:
            # nvml.h: NOT_FOUND "if the specified memoryClockMHz is not a supported frequency".
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return list(steps)

    def _check_lock_allowed(self, state: DeviceState) -> None:
        if state.model.mig_enabled and not state.spec.mig_locks_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    @_api(write=True)
    def nvmlDeviceSetGpuLockedClocks(self, handle: FakeHandle, minGpuClockMHz: int, maxGpuClockMHz: int) -> None:
        state = self._state(handle)
        self._check_lock_allowed(state)
        low, high = int(minGpuClockMHz), int(maxGpuClockMHz)
        symbolic = [value >= pynvml.NVML_CLOCK_LIMIT_ID_RANGE_START for value in (low, high)]
        if symbolic[0] != symbolic[1] or (not symbolic[0] and low > high):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if symbolic[0]:
            limits = {pynvml.NVML_CLOCK_LIMIT_ID_UNLIMITED: None,
                      pynvml.NVML_CLOCK_LIMIT_ID_TDP: state.model.default_app_sm_mhz}
            if low not in limits or high not in limits:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            lower, upper = limits[low], limits[high]
            state.locked = None if lower is None and upper is None else (
                lower or state.model.top_steps[-1], upper or state.model.max_sm_mhz)
            return
        state.locked = (low, high)

    @_api(write=True)
    def nvmlDeviceResetGpuLockedClocks(self, handle: FakeHandle) -> None:
        state = self._state(handle)
        self._check_lock_allowed(state)
        state.locked = None

    def _event_reasons(self, state: DeviceState) -> int:
        if state.event_reasons is not None:
            return state.event_reasons
        if state.utilization <= 0:
            return int(pynvml.nvmlClocksEventReasonGpuIdle)
        capped = self._power(state)[1]
        return int(pynvml.nvmlClocksEventReasonSwPowerCap if capped else pynvml.nvmlClocksEventReasonNone)

    @_api()
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeHandle) -> int:
        return self._event_reasons(self._state(handle))

    @_api()
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeHandle) -> int:
        # Deprecated name of the same reading.
        return self._event_reasons(self._state(handle))

    @_api()
    def nvmlDeviceGetSupportedClocksEventReasons(self, handle: FakeHandle) -> int:
        self._state(handle)
        return int(pynvml.nvmlClocksEventReasonAll)

    # ----------------------------------------------------------------- power

    @_api()
    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        return round(self._power(self._state(handle))[0] * 1000)

    @_api()
    def nvmlDeviceGetPowerManagementLimit(self, handle: FakeHandle) -> int:
        return self._state(handle).power_limit_mw

    @_api()
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        return self._state(handle).power_limit_mw

    @_api()
    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: FakeHandle) -> int:
        return round(self._state(handle).model.power_default_w * 1000)

    @_api()
    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: FakeHandle) -> list[int]:
        row = self._state(handle).model
        return [round(row.power_min_w * 1000), round(row.power_max_w * 1000)]

    @_api(write=True)
    def nvmlDeviceSetPowerManagementLimit(self, handle: FakeHandle, limit: int) -> None:
        state = self._state(handle)
        if not round(state.model.power_min_w * 1000) <= int(limit) <= round(state.model.power_max_w * 1000):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        state.power_limit_mw = int(limit)

    def _field(self, state: DeviceState, field_id: int, scope: int) -> int | None:
        """A field's value in mW, or None when the device does not support it."""
        row = state.model
        if scope != pynvml.NVML_POWER_SCOPE_GPU:
            return None  # module and memory scopes read N/A on these boards
        watts, _ = self._power(state)
        values = {
            pynvml.NVML_FI_DEV_POWER_AVERAGE: watts,
            pynvml.NVML_FI_DEV_POWER_MIN_LIMIT: row.power_min_w,
            pynvml.NVML_FI_DEV_POWER_MAX_LIMIT: row.power_max_w,
            pynvml.NVML_FI_DEV_POWER_DEFAULT_LIMIT: row.power_default_w,
            pynvml.NVML_FI_DEV_POWER_CURRENT_LIMIT: state.power_limit_mw / 1000,
            pynvml.NVML_FI_DEV_POWER_REQUESTED_LIMIT: state.power_limit_mw / 1000,
        }
        if row.instant_power_field:
            values[pynvml.NVML_FI_DEV_POWER_INSTANT] = (
                state.instant_power_w if state.instant_power_w is not None else watts)
        value = values.get(field_id)
        return None if value is None else round(value * 1000)

    @_api()
    def nvmlDeviceGetFieldValues(self, handle: FakeHandle, fieldIds: Sequence[int | tuple[int, int]]) -> Any:
        state = self._state(handle)
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        for slot, wanted in enumerate(fieldIds):
            field_id, scope = wanted if isinstance(wanted, tuple) else (wanted, 0)
            entry = values[slot]
            entry.fieldId, entry.scopeId = field_id, scope
            self._clock_us += 1000
            entry.timestamp = self._clock_us
            value = self._field(state, field_id, scope)
            if value is None:
                entry.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            else:
                entry.nvmlReturn = pynvml.NVML_SUCCESS
                entry.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                entry.value.uiVal = value
        return values

    # ----------------------------------------------------------------- MIG

    def _mig_uuid(self, state: DeviceState, slot: int) -> str:
        return f"MIG-{uuidlib.uuid5(uuidlib.NAMESPACE_URL, f'{state.spec.uuid}/mig/{slot}')}"

    @_api()
    def nvmlDeviceGetMigMode(self, device: FakeHandle) -> list[int]:
        row = self._state(device).model
        if not row.mig_capable:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if row.mig_enabled else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    @_api()
    def nvmlDeviceGetMaxMigDeviceCount(self, device: FakeHandle) -> int:
        row = self._state(device).model
        return row.max_mig_devices if row.mig_enabled else 0

    @_api()
    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: FakeHandle, index: int) -> FakeHandle:
        state = self._state(device)
        row = state.model
        if not row.mig_enabled:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= index < row.max_mig_devices:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if index >= len(row.mig_instances):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return FakeHandle(device.index, self._generation, row.mig_instances[index])

    @_api()
    def nvmlDeviceIsMigDeviceHandle(self, device: FakeHandle) -> ctypes.c_uint:
        # pynvml returns the ctypes object itself here, not its .value.
        self._state(device, mig_ok=True)
        return ctypes.c_uint(1 if device.mig is not None else 0)

    def _mig(self, device: FakeHandle) -> MigInstance:
        self._state(device, mig_ok=True)
        if device.mig is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return device.mig

    @_api()
    def nvmlDeviceGetGpuInstanceId(self, device: FakeHandle) -> int:
        return self._mig(device).gpu_instance_id

    @_api()
    def nvmlDeviceGetComputeInstanceId(self, device: FakeHandle) -> int:
        return self._mig(device).compute_instance_id

    @_api()
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: FakeHandle) -> FakeHandle:
        self._mig(migDevice)
        return FakeHandle(migDevice.index, self._generation)


__all__ = [
    "A100_SXM4_80GB", "A100_SXM4_80GB_MIG", "H100_SXM", "H200", "L4", "L40S", "T4", "WRITE_FUNCTIONS", "ZOO",
    "Call", "DeviceSpec", "DeviceState", "FakeHandle", "FakeNvml", "GpuModel", "MigInstance", "device",
    "facts_table", "model",
]
