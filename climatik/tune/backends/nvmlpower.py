"""GPU power through NVML, as the node guard reads and limits it every tick (climatik.tune.levers.PowerDevices).

One pass over the GPUs reads, per GPU: the power now (the instantaneous field `NVML_FI_DEV_POWER_INSTANT` where the
GPU offers it: Ampere and newer report a one-second average through `nvmlDeviceGetPowerUsage`, too slow to see a
prefill burst; the averaged reading otherwise), the power limit in force, the range of limits it accepts, and the
SM clock. The range and whether the GPU has the instantaneous field do not change while a handle lives, so they
are asked once per handle. A GPU whose reading fails is left out of the pass (the others still count).

A limit is set in milliwatts through `nvmlDeviceSetPowerManagementLimit`. NVML's refusals (NO_PERMISSION: the
tuner lacks root or CAP_SYS_ADMIN; NOT_SUPPORTED; INVALID_ARGUMENT: outside the range) become `PowerLimitError`
with NVML's message, which the guard reports and answers by capping that GPU's clock instead. A GPU in MIG mode
is read but never limited: its board limit is shared by every MIG instance, so a budget of one tenant would
throttle all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from climatik.tune.backends import nvmlfacts
from climatik.tune.backends.nvmlsession import error_code
from climatik.tune.levers import PowerLimitError, PowerState

# NVML's answers that say "this GPU will not take that limit", as opposed to a passing fault.
_REFUSALS = ("NVML_ERROR_NO_PERMISSION", "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_INVALID_ARGUMENT")
# Answers that say the GPU or library lacks the instantaneous field: read the averaged power instead.
_NO_FIELD = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_INVALID_ARGUMENT")


@dataclass(frozen=True)
class _Board:
    """What does not change while a handle lives: the limit range (None: no limits), the instantaneous field,
    and MIG mode."""

    limits: tuple[float, float] | None
    instant: bool
    mig: bool


class NvmlPower:
    """Power readings and limits over NVML handles; `nvml` is the pynvml module the backend's session opened."""

    def __init__(self) -> None:
        self._boards: dict[str, _Board] = {}
        self._unreadable: dict[str, str] = {}
        self._log = structlog.get_logger(__name__).bind(backend="nvml")

    def forget(self) -> None:
        """Drop what was learnt of the handles (they were enumerated again, or the session closed)."""
        self._boards.clear()

    def states(self, nvml: Any, handles: Mapping[str, Any], *, gone: Callable[[BaseException], bool]
               ) -> dict[str, PowerState]:
        """Every GPU of `handles` (UUID -> handle) that can be read, in one pass. One GPU's trouble leaves only
        that GPU out; when no GPU could be read and `gone` says an error means the session is gone (a driver
        reload), that error is raised so that the backend starts a new session."""
        states: dict[str, PowerState] = {}
        failures: dict[str, BaseException] = {}
        for uuid, handle in handles.items():
            try:
                states[uuid] = self._state(nvml, uuid, handle)
            except nvml.NVMLError as error:
                failures[uuid] = error
                self._boards.pop(uuid, None)
        if failures and not states and any(gone(error) for error in failures.values()):
            raise next(error for error in failures.values() if gone(error))
        unreadable = {uuid: str(error) for uuid, error in failures.items()}
        if unreadable != self._unreadable:
            # Said when it starts and when it ends, not on every tick.
            if unreadable:
                self._log.warning("gpu_power_unreadable", gpus=unreadable)
            else:
                self._log.info("gpu_power_readable_again", gpus=sorted(self._unreadable))
            self._unreadable = unreadable
        return states

    def set_limit(self, nvml: Any, uuid: str, handle: Any, watts: float) -> None:
        """Set the GPU's power limit; PowerLimitError when it refuses (MIG, no permission, unsupported, range)."""
        board = self._board(nvml, uuid, handle)
        if board.mig:
            raise PowerLimitError(f"MIG mode is enabled on GPU {uuid}: its power limit is shared by every MIG "
                                  "instance, so the tuner never sets it on behalf of one tenant")
        try:
            nvml.nvmlDeviceSetPowerManagementLimit(handle, round(watts * 1000))
        except nvml.NVMLError as error:
            if error_code(error) not in _codes(nvml, _REFUSALS):
                raise
            hint = " (needs root or CAP_SYS_ADMIN)" if error_code(error) == nvml.NVML_ERROR_NO_PERMISSION else ""
            raise PowerLimitError(f"NVML refused a power limit of {watts:g} W on GPU {uuid}: {error}{hint}") \
                from error

    def _state(self, nvml: Any, uuid: str, handle: Any) -> PowerState:
        board = self._board(nvml, uuid, handle)
        power = _instant(nvml, handle) if board.instant else None
        if power is None:
            if board.instant:
                # The field answered once and not now: the averaged reading from now on for this handle.
                self._boards[uuid] = _Board(board.limits, False, board.mig)
            power = int(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000
        limit = int(nvml.nvmlDeviceGetPowerManagementLimit(handle)) / 1000
        low, high = board.limits if board.limits is not None else (None, None)
        return PowerState(power=power, limit=limit, min_limit=low, max_limit=high,
                          clock_mhz=int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)))

    def _board(self, nvml: Any, uuid: str, handle: Any) -> _Board:
        board = self._boards.get(uuid)
        if board is None:
            board = _Board(limits=_limit_range(nvml, handle), instant=_instant(nvml, handle) is not None,
                           mig=nvmlfacts.mig_enabled(nvml, handle))
            self._boards[uuid] = board
        return board


def _limit_range(nvml: Any, handle: Any) -> tuple[float, float] | None:
    try:
        low, high = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
    except nvml.NVMLError as error:
        if error_code(error) in _codes(nvml, _NO_FIELD):
            return None
        raise
    return int(low) / 1000, int(high) / 1000


def _instant(nvml: Any, handle: Any) -> float | None:
    """The instantaneous power in W, or None where the GPU or the library does not offer the field."""
    field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)
    if field_id is None:
        return None
    try:
        (value,) = nvml.nvmlDeviceGetFieldValues(handle, [field_id])
    except nvml.NVMLError as error:
        if error_code(error) in _codes(nvml, _NO_FIELD):
            return None
        raise
    if value.nvmlReturn != nvml.NVML_SUCCESS:
        return None
    return _field_value(nvml, value) / 1000


def _field_value(nvml: Any, value: Any) -> float:
    """A field's value by its declared type (the power fields are milliwatts, as an unsigned int today)."""
    kind = int(value.valueType)
    member = ("dVal" if kind == nvml.NVML_VALUE_TYPE_DOUBLE else
              "ullVal" if kind == nvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG else
              "ulVal" if kind == nvml.NVML_VALUE_TYPE_UNSIGNED_LONG else
              "sllVal" if kind == nvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG else
              "siVal" if kind == nvml.NVML_VALUE_TYPE_SIGNED_INT else "uiVal")
    return float(getattr(value.value, member))


def _codes(nvml: Any, names: tuple[str, ...]) -> set[int]:
    return {code for name in names if isinstance(code := getattr(nvml, name, None), int)}
