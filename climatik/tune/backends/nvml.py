"""NVML backend: bounds each GPU's SM clock with a locked clock range, and reads and limits its power for the node
guard (climatik.tune.backends.nvmlpower), through nvidia-ml-py.

A target becomes the upper end of the range `nvmlDeviceSetGpuLockedClocks(handle, lowest step, target)`, so the
GPU may still drop below it when idle or power-limited but never runs above it. The tuner owns the SM locked
clocks of its node: releasing a GPU resets its lock, or re-locks the node's `baseline` range where a site locks
clocks itself (`nvidia-smi -lgc` at boot); targets above the baseline are held at it.

Supported steps are those NVML lists for the highest supported memory clock, the one a loaded GPU runs at. The
current memory clock is no key: idle GDDR parts run at 405 MHz, whose list stops at ~645 MHz, and a loaded part
reads a MHz or two under its supported value, for which NVML answers NOT_FOUND.

A GPU in MIG mode is listed (model, power) without a clock range and never locked: its SM clocks are shared by
every MIG instance, so a cap asked for one tenant would throttle all of them.

NVML's session comes and goes (climatik.tune.backends.nvmlsession): after driver trouble it is started afresh
and the call retried once; between reconciles it is closed where every GPU is in persistence mode, so that the
tuner does not keep the driver loaded or the GPUs busy for a driver upgrade, a reset or a MIG change. While the
node guard keeps a budget it holds the session instead (climatik.tune.levers.CappedGpus.hold): it reads every
tick, and without persistence mode the limits it set would go with the last session.
NOT_SUPPORTED becomes Unsupported; every other NVML error is Failed with NVML's message. Handles are found by
enumerating devices rather than by UUID, whose expected type changed across nvidia-ml-py releases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import structlog

from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED, GpuInventory
from climatik.clock import Clock, SystemClock
from climatik.tune.backends import nvmlfacts
from climatik.tune.backends.base import (
    GPU_RUNTIME_HINT,
    BackendHealth,
    BackendUnavailableError,
    DeviceResult,
    GpuNodeFacts,
    NoGpusVisibleError,
    fit_to_steps,
    join_notes,
)
from climatik.tune.backends.nvmlpower import NvmlPower
from climatik.tune.backends.nvmlsession import NvmlSession, error_code, nvml_text
from climatik.tune.levers import PowerLimitError, PowerState

T = TypeVar("T")


class NvmlGpuBackend:
    """GPUs driven through NVML. `nvml` is the pynvml module (injected by tests; imported on first use);
    `baseline` the (min, max) MHz range a released GPU is locked to instead of unlocked."""

    name = "nvml"

    def __init__(self, *, nvml: Any | None = None, clock: Clock | None = None,
                 baseline: tuple[int, int] | None = None, retry_initial_s: float = 10.0,
                 retry_max_s: float = 300.0, restart_after_s: float = 300.0) -> None:
        if baseline is not None and not 0 < baseline[0] <= baseline[1]:
            raise ValueError(f"a baseline clock range needs 0 < min <= max, got {baseline}")
        self._session = NvmlSession(nvml=nvml, clock=clock or SystemClock(), retry_initial_s=retry_initial_s,
                                    retry_max_s=retry_max_s, restart_after_s=restart_after_s)
        self._baseline = baseline
        self._handles: dict[str, Any] = {}
        self._steps: dict[str, list[int]] = {}
        self._mig: dict[str, str] = {}
        self._persistent = False
        self._visible: int | None = None
        self._unreadable: dict[int, str] = {}
        self._power = NvmlPower()
        self._log = structlog.get_logger(__name__).bind(backend=self.name)

    # ------------------------------------------------------------------------------------------ GpuBackend

    def inventory(self) -> list[GpuInventory]:
        found = self._found()
        if not found:
            raise NoGpusVisibleError(f"NVML sees no GPUs on this node: {GPU_RUNTIME_HINT}")
        nvml = self._session.lib()
        return [self._describe(nvml, uuid, index, handle) for uuid, (index, handle) in found.items()]

    def apply(self, uuid: str, max_mhz: int) -> DeviceResult:
        return self._on_device(uuid, max_mhz, "lock the GPU clocks", self._lock)

    def reset(self, uuid: str) -> DeviceResult:
        return self._on_device(uuid, None, "release the GPU clocks", lambda nvml, u, h, _: self._release(nvml, u, h))

    def current_clock(self, uuid: str) -> int | None:
        def read(nvml: Any) -> int | None:
            handle = self._handle(nvml, uuid)
            return None if handle is None else int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))

        try:
            return self._run(read)
        except BackendUnavailableError:
            return None
        except self._session.lib().NVMLError as error:
            self._log.warning("clock_unreadable", gpu=uuid, error=str(error))
            return None

    def close(self) -> None:
        self._handles.clear()
        self._session.close(reason="tuner stopping")

    # ------------------------------------------------------------------------------------------ PowerDevices

    def power_states(self) -> Mapping[str, PowerState]:
        """Every GPU's power in one pass; BackendUnavailableError when NVML cannot start or count the GPUs."""

        def read(nvml: Any) -> dict[str, PowerState]:
            handles = self._handles or {uuid: handle for uuid, (_, handle) in self._enumerate(nvml).items()}
            return self._power.states(nvml, handles, gone=self._session.gone)

        try:
            return self._run(read)
        except self._session.lib().NVMLError as error:
            raise BackendUnavailableError(f"NVML cannot read the GPUs' power: {error}") from error

    def set_power_limit(self, uuid: str, watts: float) -> None:
        """Set a GPU's power limit; PowerLimitError when it refuses, BackendUnavailableError on passing trouble."""

        def call(nvml: Any) -> None:
            handle = self._handle(nvml, uuid)
            if handle is None:
                raise PowerLimitError(f"no GPU {uuid} on this node")
            self._power.set_limit(nvml, uuid, handle, watts)

        try:
            self._run(call)
        except self._session.lib().NVMLError as error:
            raise BackendUnavailableError(f"NVML could not set the power limit of GPU {uuid}: {error}") from error

    # --------------------------------------------------------------------------------------- GpuBackendExtras

    def release(self) -> None:
        """Close NVML between reconciles where every GPU is in persistence mode: the driver then keeps the GPUs
        initialised, locks included, and nothing holds the device nodes open for a driver upgrade, a GPU
        reset or a MIG change. Without persistence mode the session is kept, since the last client closing
        deinitialises the GPUs."""
        if self._session.is_open and self._persistent:
            self._handles.clear()
            self._session.close()

    def health(self) -> BackendHealth:
        health = self._session.health()
        if health.ready and self._visible == 0:
            return BackendHealth(False, True, f"NVML sees no GPUs on this node: {GPU_RUNTIME_HINT}")
        return health

    def blocked(self) -> Mapping[str, str]:
        return dict(self._mig)

    def facts(self) -> GpuNodeFacts:
        try:
            found = self._found()
        except BackendUnavailableError as error:
            return GpuNodeFacts(backend=self.name, error=str(error))
        facts = nvmlfacts.node_facts(self._session.lib(), {uuid: handle for uuid, (_, handle) in found.items()},
                                     baseline=self._baseline)
        if not found:
            return replace(facts, error=f"NVML sees no GPUs on this node: {GPU_RUNTIME_HINT}")
        return facts

    # ---------------------------------------------------------------------------------------------- session

    def _run(self, action: Callable[[Any], T]) -> T:
        """`action(nvml)` in an open session; when the session turns out to be gone (driver reloaded), start
        afresh and try once more. Raises BackendUnavailableError, or the NVMLError of a second failure."""
        nvml = self._session.open()
        try:
            return action(nvml)
        except nvml.NVMLError as error:
            # GPU_IS_LOST may be one GPU off the bus: then the session still counts the GPUs and stays, since
            # closing it without persistence mode could deinitialise the other GPUs and drop their locks.
            if not self._session.gone(error) or self._counts(nvml):
                raise
            self._log.warning("nvml_session_lost", error=str(error))
            self._handles.clear()
            self._session.close(reason=str(error))
        return action(self._session.open())

    @staticmethod
    def _counts(nvml: Any) -> bool:
        try:
            nvml.nvmlDeviceGetCount()
        except nvml.NVMLError:
            return False
        return True

    def _found(self) -> dict[str, tuple[int, Any]]:
        """Every GPU NVML enumerates; BackendUnavailableError when NVML cannot start or count them."""
        try:
            return self._run(self._enumerate)
        except self._session.lib().NVMLError as error:
            raise BackendUnavailableError(f"NVML cannot list the GPUs: {error}") from error

    def _on_device(self, uuid: str, requested: int | None, action: str,
                   body: Callable[[Any, str, Any, int | None], DeviceResult]) -> DeviceResult:
        def call(nvml: Any) -> DeviceResult:
            handle = self._handle(nvml, uuid)
            if handle is None and self._unreadable:
                # It may be one of the GPUs NVML cannot read now (fallen off the bus, failing): not "no such GPU".
                unreadable = ", ".join(f"index {index}: {error}" for index, error in sorted(self._unreadable.items()))
                return DeviceResult(FAILED, requested_mhz=requested,
                                    message=f"GPU {uuid} is not among the GPUs NVML can read now ({unreadable})")
            if handle is None:
                return DeviceResult(UNSUPPORTED, requested_mhz=requested, message=f"no GPU {uuid} on this node")
            return body(nvml, uuid, handle, requested)

        try:
            return self._run(call)
        except BackendUnavailableError as error:
            return DeviceResult(FAILED, requested_mhz=requested, message=str(error))
        except self._session.lib().NVMLError as error:
            return self._failure(error, uuid, requested, action)

    def _handle(self, nvml: Any, uuid: str) -> Any:
        if uuid not in self._handles:
            # A device we have not seen in this session: enumerate again in case it appeared or its handle went.
            self._enumerate(nvml)
        return self._handles.get(uuid)

    def _enumerate(self, nvml: Any) -> dict[str, tuple[int, Any]]:
        """UUID -> (index, handle) of every device whose UUID can be read; one bad device hides no other."""
        count = int(nvml.nvmlDeviceGetCount())
        found: dict[str, tuple[int, Any]] = {}
        unreadable: dict[int, str] = {}
        persistent = []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                found[nvml_text(nvml.nvmlDeviceGetUUID(handle))] = (index, handle)
            except nvml.NVMLError as error:
                if self._session.gone(error) and error_code(error) != nvml.NVML_ERROR_GPU_IS_LOST:
                    raise
                self._log.warning("gpu_skipped", index=index, error=str(error))
                unreadable[index] = str(error)
                continue
            persistent.append(nvmlfacts.persistence_mode(nvml, handle) is True)
        self._handles = {uuid: handle for uuid, (_, handle) in found.items()}
        self._power.forget()
        self._persistent = all(persistent)
        self._visible = len(found)
        self._unreadable = unreadable
        return found

    # ---------------------------------------------------------------------------------------------- devices

    def _lock(self, nvml: Any, uuid: str, handle: Any, max_mhz: int | None) -> DeviceResult:
        assert max_mhz is not None
        if self._mig_enabled(nvml, uuid, handle):
            return DeviceResult(UNSUPPORTED, requested_mhz=max_mhz, message=self._mig[uuid])
        steps = self._steps.get(uuid) or nvmlfacts.graphics_steps(nvml, handle)
        if not steps:
            return DeviceResult(UNSUPPORTED, requested_mhz=max_mhz,
                                message=f"NVML lists no supported graphics clocks for GPU {uuid}")
        self._steps[uuid] = steps
        fit = fit_to_steps(max_mhz, steps)
        mhz, note = fit.mhz, fit.note
        if self._baseline is not None and mhz > self._baseline[1]:
            mhz = self._baseline[1]
            note = join_notes(note, f"held at the node's baseline maximum of {mhz} MHz")
        nvml.nvmlDeviceSetGpuLockedClocks(handle, steps[0], mhz)
        return DeviceResult(APPLIED, requested_mhz=max_mhz, applied_mhz=mhz,
                            current_mhz=self._read_clock(nvml, handle), message=note)

    def _release(self, nvml: Any, uuid: str, handle: Any) -> DeviceResult:
        if self._mig_enabled(nvml, uuid, handle):
            # Enabling MIG needs a GPU reset, which drops any lock: there is nothing of ours left to undo.
            return DeviceResult(UNSUPPORTED, message=f"MIG mode is enabled on GPU {uuid}; its locked clocks were "
                                                     "reset when MIG was enabled")
        if self._baseline is not None:
            low, high = self._baseline
            nvml.nvmlDeviceSetGpuLockedClocks(handle, low, high)
            message = f"locked clocks returned to the node's baseline {low}-{high} MHz"
        else:
            nvml.nvmlDeviceResetGpuLockedClocks(handle)
            message = "locked clocks reset"
        return DeviceResult(APPLIED, current_mhz=self._read_clock(nvml, handle), message=message)

    def _mig_enabled(self, nvml: Any, uuid: str, handle: Any) -> bool:
        if nvmlfacts.mig_enabled(nvml, handle):
            self._mig[uuid] = (f"MIG mode is enabled on GPU {uuid}: its SM clocks are shared by every MIG instance, "
                               "so the tuner never locks them on behalf of one tenant")
            return True
        self._mig.pop(uuid, None)
        return False

    def _describe(self, nvml: Any, uuid: str, index: int, handle: Any) -> GpuInventory:
        def optional(read: Callable[[], T], what: str) -> T | None:
            # Details are nice to have: one the GPU does not support must not hide the GPU.
            try:
                return read()
            except nvml.NVMLError as error:
                self._log.info("gpu_detail_unavailable", gpu=uuid, detail=what, error=str(error))
                return None

        limits = optional(lambda: nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle), "power_limits")
        power = GpuInventory(
            uuid=uuid, index=index, model=optional(lambda: nvml_text(nvml.nvmlDeviceGetName(handle)), "name"),
            power_limit=_watts(optional(lambda: nvml.nvmlDeviceGetPowerManagementLimit(handle), "power_limit")),
            min_power_limit=_watts(limits[0]) if limits else None,
            max_power_limit=_watts(limits[1]) if limits else None,
        )
        if self._mig_enabled(nvml, uuid, handle):
            return power  # no clock range: nothing for the recommender to target
        steps = optional(lambda: nvmlfacts.graphics_steps(nvml, handle), "supported_clocks") or []
        if steps:
            self._steps[uuid] = steps
        max_clock = optional(lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)), "max_clock")
        top = max_clock if max_clock is not None else (steps[-1] if steps else None)
        return GpuInventory(
            uuid=uuid, index=index, model=power.model, min_frequency=steps[0] if steps else None, max_frequency=top,
            default_frequency=nvmlfacts.default_clock(nvml, handle) or top, supported_frequencies=steps or None,
            power_limit=power.power_limit, min_power_limit=power.min_power_limit,
            max_power_limit=power.max_power_limit,
        )

    def _read_clock(self, nvml: Any, handle: Any) -> int | None:
        try:
            return int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))
        except nvml.NVMLError as error:
            self._log.warning("clock_unreadable", error=str(error))
            return None

    def _failure(self, error: Exception, uuid: str, requested: int | None, action: str) -> DeviceResult:
        nvml = self._session.lib()
        code = error_code(error)
        if code == nvml.NVML_ERROR_GPU_IS_LOST:
            # The handle is useless now; enumerate afresh next time in case the GPU comes back.
            self._handles.pop(uuid, None)
            self._steps.pop(uuid, None)
        # Only NOT_SUPPORTED says the hardware cannot; NOT_FOUND and the rest are errors to look into.
        unsupported = code == nvml.NVML_ERROR_NOT_SUPPORTED
        hint = " (needs root or CAP_SYS_ADMIN)" if code == nvml.NVML_ERROR_NO_PERMISSION else ""
        self._log.warning("nvml_call_failed", gpu=uuid, action=action, error=str(error))
        return DeviceResult(UNSUPPORTED if unsupported else FAILED, requested_mhz=requested,
                            message=f"NVML could not {action} of GPU {uuid}: {error}{hint}")


def _watts(milliwatts: Any) -> int | None:
    return None if milliwatts is None else round(int(milliwatts) / 1000)
