"""NVML backend: bounds each GPU's SM clock with a locked clock range and resets it, through nvidia-ml-py.

A target becomes the upper end of the range `nvmlDeviceSetGpuLockedClocks(handle, lowest step, target)`, so
the GPU may still drop below it when idle or power-limited but never runs above it. Supported steps are
those NVML lists at the current memory clock. NVML errors turn into per-device Failed or Unsupported
results carrying NVML's message. nvidia-ml-py has returned both bytes and str over its versions, so every
string it returns is decoded here, and handles are found by enumerating devices rather than by passing a
UUID whose expected type also changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED, GpuInventory
from climatik.tune.backends.base import BackendUnavailableError, DeviceResult, fit_to_steps

T = TypeVar("T")


class NvmlGpuBackend:
    """GPUs driven through NVML. `nvml` is the pynvml module (injected by tests; imported on first use)."""

    name = "nvml"

    def __init__(self, *, nvml: Any | None = None) -> None:
        self._module = nvml
        self._started = False
        self._handles: dict[str, Any] = {}
        self._steps: dict[str, list[int]] = {}
        self._log = structlog.get_logger(__name__).bind(backend=self.name)

    def inventory(self) -> list[GpuInventory]:
        nvml = self._start()
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as error:
            raise BackendUnavailableError(f"NVML cannot count GPUs: {error}") from error
        found = self._enumerate(nvml, count)
        self._handles = {uuid: handle for uuid, (_, handle) in found.items()}
        return [self._describe(nvml, uuid, index, handle) for uuid, (index, handle) in found.items()]

    def apply(self, uuid: str, max_mhz: int) -> DeviceResult:
        try:
            nvml = self._start()
        except BackendUnavailableError as error:
            return DeviceResult(FAILED, requested_mhz=max_mhz, message=str(error))
        try:
            handle = self._handle(nvml, uuid)
            if handle is None:
                return DeviceResult(UNSUPPORTED, requested_mhz=max_mhz, message=f"no GPU {uuid} on this node")
            steps = self._steps.get(uuid) or self._read_steps(nvml, handle)
            if not steps:
                return DeviceResult(UNSUPPORTED, requested_mhz=max_mhz,
                                    message=f"NVML lists no supported graphics clocks for GPU {uuid}")
            self._steps[uuid] = steps
            fit = fit_to_steps(max_mhz, steps)
            nvml.nvmlDeviceSetGpuLockedClocks(handle, steps[0], fit.mhz)
        except nvml.NVMLError as error:
            return self._failure(nvml, error, uuid, max_mhz, "lock the GPU clocks")
        return DeviceResult(APPLIED, requested_mhz=max_mhz, applied_mhz=fit.mhz,
                            current_mhz=self._read_clock(nvml, handle), message=fit.note)

    def reset(self, uuid: str) -> DeviceResult:
        try:
            nvml = self._start()
        except BackendUnavailableError as error:
            return DeviceResult(FAILED, message=str(error))
        try:
            handle = self._handle(nvml, uuid)
            if handle is None:
                return DeviceResult(UNSUPPORTED, message=f"no GPU {uuid} on this node")
            nvml.nvmlDeviceResetGpuLockedClocks(handle)
        except nvml.NVMLError as error:
            return self._failure(nvml, error, uuid, None, "reset the GPU clocks")
        return DeviceResult(APPLIED, current_mhz=self._read_clock(nvml, handle), message="locked clocks reset")

    def current_clock(self, uuid: str) -> int | None:
        try:
            nvml = self._start()
            handle = self._handle(nvml, uuid)
        except BackendUnavailableError:
            return None
        except self._lib().NVMLError as error:
            self._log.warning("clock_unreadable", gpu=uuid, error=str(error))
            return None
        return None if handle is None else self._read_clock(nvml, handle)

    def close(self) -> None:
        if not self._started:
            return
        nvml = self._lib()
        self._started = False
        self._handles.clear()
        self._steps.clear()
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as error:
            self._log.warning("nvml_shutdown_failed", error=str(error))

    def _lib(self) -> Any:
        if self._module is None:
            # Imported on first use so that the tuner and its tests load without the NVML bindings.
            import pynvml  # noqa: PLC0415

            self._module = pynvml
        return self._module

    def _start(self) -> Any:
        nvml = self._lib()
        if not self._started:
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as error:
                raise BackendUnavailableError(f"NVML cannot start: {error}") from error
            self._started = True
        return nvml

    def _handle(self, nvml: Any, uuid: str) -> Any:
        if uuid not in self._handles:
            # A device we have not seen: enumerate again in case it appeared or its handle went stale.
            found = self._enumerate(nvml, int(nvml.nvmlDeviceGetCount()))
            self._handles.update({key: handle for key, (_, handle) in found.items()})
        return self._handles.get(uuid)

    def _enumerate(self, nvml: Any, count: int) -> dict[str, tuple[int, Any]]:
        """UUID -> (index, handle) of every device whose UUID can be read; one bad device hides no other."""
        found = {}
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                found[_text(nvml.nvmlDeviceGetUUID(handle))] = (index, handle)
            except nvml.NVMLError as error:
                self._log.warning("gpu_skipped", index=index, error=str(error))
        return found

    def _describe(self, nvml: Any, uuid: str, index: int, handle: Any) -> GpuInventory:
        steps = self._optional(lambda: self._read_steps(nvml, handle), uuid, "supported_clocks")
        if steps:
            self._steps[uuid] = steps
        constraints = self._optional(lambda: nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle), uuid,
                                     "power_limit_constraints")
        max_clock = self._optional(lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)),
                                   uuid, "max_clock")
        return GpuInventory(
            uuid=uuid,
            index=index,
            model=self._optional(lambda: _text(nvml.nvmlDeviceGetName(handle)), uuid, "name"),
            min_frequency=steps[0] if steps else None,
            max_frequency=max_clock if max_clock is not None else (steps[-1] if steps else None),
            default_frequency=self._optional(
                lambda: int(nvml.nvmlDeviceGetDefaultApplicationsClock(handle, nvml.NVML_CLOCK_SM)),
                uuid, "default_clock"),
            supported_frequencies=steps or None,
            power_limit=_watts(self._optional(lambda: nvml.nvmlDeviceGetPowerManagementLimit(handle), uuid,
                                              "power_limit")),
            min_power_limit=_watts(constraints[0]) if constraints else None,
            max_power_limit=_watts(constraints[1]) if constraints else None,
        )

    def _read_steps(self, nvml: Any, handle: Any) -> list[int]:
        memory_mhz = nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)
        return sorted({int(mhz) for mhz in nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, memory_mhz)})

    def _read_clock(self, nvml: Any, handle: Any) -> int | None:
        try:
            return int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))
        except nvml.NVMLError as error:
            self._log.warning("clock_unreadable", error=str(error))
            return None

    def _optional(self, read: Callable[[], T], uuid: str, what: str) -> T | None:
        # Inventory details are nice to have: one the GPU does not support must not hide the GPU.
        nvml = self._lib()
        try:
            return read()
        except nvml.NVMLError as error:
            self._log.info("gpu_detail_unavailable", gpu=uuid, detail=what, error=str(error))
            return None

    def _failure(self, nvml: Any, error: Exception, uuid: str, requested: int | None, action: str) -> DeviceResult:
        code = getattr(error, "value", None)
        if code == nvml.NVML_ERROR_GPU_IS_LOST:
            # The handle is useless now; enumerate afresh next time in case the GPU comes back.
            self._handles.pop(uuid, None)
            self._steps.pop(uuid, None)
        unsupported = code in (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_NOT_FOUND)
        hint = " (needs root or CAP_SYS_ADMIN)" if code == nvml.NVML_ERROR_NO_PERMISSION else ""
        self._log.warning("nvml_call_failed", gpu=uuid, action=action, error=str(error))
        return DeviceResult(UNSUPPORTED if unsupported else FAILED, requested_mhz=requested,
                            message=f"NVML could not {action} of GPU {uuid}: {error}{hint}")


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _watts(milliwatts: Any) -> int | None:
    return None if milliwatts is None else round(int(milliwatts) / 1000)
