"""Simulated-GPU backend: drives a simulated node's GPUs through its JSON control API over HTTP.

The backend talks to the simulator with its own small client (the simulator's code is never loaded by the
tuner): GET /sim/gpus lists the GPUs, POST and DELETE /sim/gpus/<uuid>/locked-clock lock and unlock a clock, POST
/sim/gpus/<uuid>/power-limit sets a board power limit. The node guard's tick (`power_states`) is one GET for every
GPU: the instantaneous power, the limit in force and its range, and the clock.
The simulator snaps a locked clock to its own steps; targets are fitted here first, with the same rule as for
NVML, so that results carry the same messages whichever backend runs. With a `baseline` range, a released GPU
is locked at the baseline's maximum (the simulator locks an upper bound only) instead of unlocked, as on NVML.
It offers the optional extras too: its health is whether the simulator answered last time, and `facts` is what
`climatik tune --probe` prints for a simulated node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import requests
import structlog

from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED, GpuInventory
from climatik.tune.backends.base import (
    BackendHealth,
    BackendUnavailableError,
    DeviceResult,
    GpuFacts,
    GpuNodeFacts,
    fit_to_steps,
    join_notes,
)
from climatik.tune.levers import PowerLimitError, PowerState

_ANSWER_ERRORS = (requests.RequestException, ValueError, KeyError, TypeError)


@dataclass(frozen=True)
class SimGpu:
    """One GPU as the simulator lists it: what the tuner needs of an entry of GET /sim/gpus."""

    uuid: str
    index: int
    model: str
    min_clock_mhz: int
    max_clock_mhz: int
    default_clock_mhz: int
    supported_clocks_mhz: tuple[int, ...]
    power_limit_w: float
    current_clock_mhz: int
    locked_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_w: float | None = None
    instant_power_w: float | None = None
    min_power_limit_w: float | None = None
    max_power_limit_w: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimGpu:
        locked, memory, power = data.get("locked_clock_mhz"), data.get("mem_clock_mhz"), data.get("power_w")
        instant = data.get("instant_power_w", power)
        # A simulator without limit ranges answers 0 (or nothing): its GPUs take no limits.
        low, high = (float(data.get(key) or 0.0) or None for key in ("min_power_limit_w", "max_power_limit_w"))
        return cls(uuid=str(data["uuid"]), index=int(data["index"]), model=str(data["model"]),
                   min_clock_mhz=int(data["min_clock_mhz"]), max_clock_mhz=int(data["max_clock_mhz"]),
                   default_clock_mhz=int(data["default_clock_mhz"]),
                   supported_clocks_mhz=tuple(int(mhz) for mhz in data["supported_clocks_mhz"]),
                   power_limit_w=float(data["power_limit_w"]), current_clock_mhz=int(data["current_clock_mhz"]),
                   locked_clock_mhz=None if locked is None else int(locked),
                   mem_clock_mhz=None if memory is None else int(memory),
                   power_w=None if power is None else float(power),
                   instant_power_w=None if instant is None else float(instant),
                   min_power_limit_w=low, max_power_limit_w=high)


class SimNodeClient:
    """The part of one simulated node's control API the tuner uses; raises requests.HTTPError on an error answer."""

    def __init__(self, base_url: str, *, session: requests.Session, timeout_s: float = 5.0) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._timeout_s = timeout_s

    def gpus(self) -> list[SimGpu]:
        return [SimGpu.from_json(entry) for entry in self.entries()]

    def entries(self) -> list[dict[str, Any]]:
        """The GPUs as the simulator lists them, undecoded (the guard reads a few fields every tick)."""
        answer = self._session.get(f"{self._base}/sim/gpus", timeout=self._timeout_s)
        answer.raise_for_status()
        return list(answer.json()["gpus"])

    def set_locked_clock(self, uuid: str, max_mhz: int) -> int:
        """Lock a GPU's SM clock upper bound; returns the bound as the simulator snapped it."""
        answer = self._session.post(f"{self._base}/sim/gpus/{uuid}/locked-clock", json={"max": max_mhz},
                                    timeout=self._timeout_s)
        answer.raise_for_status()
        return int(answer.json()["locked_clock_mhz"])

    def reset_locked_clock(self, uuid: str) -> None:
        answer = self._session.delete(f"{self._base}/sim/gpus/{uuid}/locked-clock", timeout=self._timeout_s)
        answer.raise_for_status()

    def set_power_limit(self, uuid: str, watts: float) -> None:
        """Set a GPU's board power limit (the simulator answers 400 outside the board's range)."""
        answer = self._session.post(f"{self._base}/sim/gpus/{uuid}/power-limit", json={"watts": watts},
                                    timeout=self._timeout_s)
        answer.raise_for_status()


class SimGpuBackend:
    """The GPUs of one simulated node, reached at `base_url` through `session`."""

    name = "sim"

    def __init__(self, *, base_url: str, session: requests.Session, timeout_s: float = 5.0,
                 baseline: tuple[int, int] | None = None) -> None:
        self._base_url = base_url
        self._client = SimNodeClient(base_url, session=session, timeout_s=timeout_s)
        self._baseline = baseline
        self._steps: dict[str, tuple[int, ...]] = {}
        self._unreachable: str | None = None
        self._log = structlog.get_logger(__name__).bind(backend=self.name, url=base_url)

    def inventory(self) -> list[GpuInventory]:
        return [_inventory(gpu) for gpu in self._list()]

    def apply(self, uuid: str, max_mhz: int) -> DeviceResult:
        try:
            steps = self._steps.get(uuid) or self._find_steps(uuid)
            if not steps:
                return DeviceResult(UNSUPPORTED, requested_mhz=max_mhz, message=f"no GPU {uuid} on this node")
            fit = fit_to_steps(max_mhz, steps)
            mhz, note = fit.mhz, fit.note
            if self._baseline is not None and mhz > self._baseline[1]:
                mhz = self._baseline[1]
                note = join_notes(note, f"held at the node's baseline maximum of {mhz} MHz")
            locked = self._client.set_locked_clock(uuid, mhz)
        except _ANSWER_ERRORS as error:
            return self._failure(error, uuid, max_mhz, "lock the clock")
        self._unreachable = None
        return DeviceResult(APPLIED, requested_mhz=max_mhz, applied_mhz=locked,
                            current_mhz=self.current_clock(uuid), message=note)

    def reset(self, uuid: str) -> DeviceResult:
        try:
            if self._baseline is not None:
                self._client.set_locked_clock(uuid, self._baseline[1])
                message = f"locked clocks returned to the node's baseline maximum of {self._baseline[1]} MHz"
            else:
                self._client.reset_locked_clock(uuid)
                message = "locked clocks reset"
        except _ANSWER_ERRORS as error:
            return self._failure(error, uuid, None, "reset the clock")
        self._unreachable = None
        return DeviceResult(APPLIED, current_mhz=self.current_clock(uuid), message=message)

    def current_clock(self, uuid: str) -> int | None:
        try:
            gpus = self._client.gpus()
        except _ANSWER_ERRORS as error:
            self._log.warning("clock_unreadable", gpu=uuid, error=_reason(error))
            return None
        return next((gpu.current_clock_mhz for gpu in gpus if gpu.uuid == uuid), None)

    def power_states(self) -> Mapping[str, PowerState]:
        """Every GPU's power in one GET; BackendUnavailableError when the simulator does not answer."""
        try:
            states = {str(entry["uuid"]): _power_state(entry) for entry in self._client.entries()}
        except _ANSWER_ERRORS as error:
            self._unreachable = f"simulator at {self._base_url} cannot list its GPUs: {_reason(error)}"
            raise BackendUnavailableError(self._unreachable) from error
        self._unreachable = None
        return states

    def set_power_limit(self, uuid: str, watts: float) -> None:
        """PowerLimitError when the simulator refuses the limit (unknown GPU, out of range), BackendUnavailableError
        when it does not answer."""
        try:
            self._client.set_power_limit(uuid, watts)
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status in (400, 404):
                raise PowerLimitError(f"simulator refused a power limit of {watts:g} W on GPU {uuid}: "
                                      f"{_reason(error)}") from error
            raise BackendUnavailableError(f"simulator could not set the power limit of GPU {uuid}: "
                                          f"{_reason(error)}") from error
        except _ANSWER_ERRORS as error:
            self._unreachable = f"simulator at {self._base_url} does not answer: {_reason(error)}"
            raise BackendUnavailableError(self._unreachable) from error

    def close(self) -> None:
        """The session belongs to the caller, who closes it."""

    def release(self) -> None:
        """Nothing is held between calls."""

    def health(self) -> BackendHealth:
        if self._unreachable is not None:
            return BackendHealth(False, True, self._unreachable)
        return BackendHealth(True, True, "simulator ok")

    def blocked(self) -> Mapping[str, str]:
        return {}

    def facts(self) -> GpuNodeFacts:
        try:
            gpus = self._list()
        except BackendUnavailableError as error:
            return GpuNodeFacts(backend=self.name, error=str(error))
        release = (f"re-locked to the baseline maximum of {self._baseline[1]} MHz" if self._baseline is not None
                   else "unlocked")
        return GpuNodeFacts(backend=self.name, location=f"simulated node at {self._base_url}", gpus=[
            GpuFacts(uuid=gpu.uuid, index=gpu.index, model=gpu.model, mig_mode="not supported",
                     min_clock_mhz=gpu.min_clock_mhz, max_clock_mhz=gpu.max_clock_mhz,
                     steps=len(gpu.supported_clocks_mhz), step_mhz=_step(gpu.supported_clocks_mhz),
                     default_clock_mhz=gpu.default_clock_mhz, sm_clock_mhz=gpu.current_clock_mhz,
                     memory_clock_mhz=gpu.mem_clock_mhz, locked_clock_mhz=gpu.locked_clock_mhz,
                     power_limit_w=gpu.power_limit_w, min_power_limit_w=gpu.min_power_limit_w,
                     max_power_limit_w=gpu.max_power_limit_w, power_w=gpu.power_w,
                     instant_power_w=gpu.instant_power_w, lockable=True,
                     lock_note=f"the simulator locks an upper bound on the SM clock, {release} on release")
            for gpu in gpus])

    def _list(self) -> list[SimGpu]:
        try:
            gpus = self._client.gpus()
        except _ANSWER_ERRORS as error:
            self._unreachable = f"simulator at {self._base_url} cannot list its GPUs: {_reason(error)}"
            raise BackendUnavailableError(self._unreachable) from error
        self._unreachable = None
        self._steps = {gpu.uuid: gpu.supported_clocks_mhz for gpu in gpus}
        return gpus

    def _find_steps(self, uuid: str) -> tuple[int, ...]:
        self._steps = {gpu.uuid: gpu.supported_clocks_mhz for gpu in self._client.gpus()}
        return self._steps.get(uuid, ())

    def _failure(self, error: Exception, uuid: str, requested: int | None, action: str) -> DeviceResult:
        unknown = isinstance(error, requests.HTTPError) and error.response is not None \
            and error.response.status_code == 404
        if isinstance(error, requests.ConnectionError | requests.Timeout):
            # Not this GPU's trouble: the simulated node itself is gone (the probes say so).
            self._unreachable = f"simulator at {self._base_url} does not answer: {_reason(error)}"
        self._log.warning("sim_call_failed", gpu=uuid, action=action, error=_reason(error))
        return DeviceResult(UNSUPPORTED if unknown else FAILED, requested_mhz=requested,
                            message=f"simulator could not {action} of GPU {uuid}: {_reason(error)}")


def _power_state(entry: dict[str, Any]) -> PowerState:
    gpu = SimGpu.from_json({**entry, "supported_clocks_mhz": ()})  # the clock list is not read on a tick
    return PowerState(power=gpu.instant_power_w if gpu.instant_power_w is not None else gpu.power_w or 0.0,
                      limit=gpu.power_limit_w, min_limit=gpu.min_power_limit_w, max_limit=gpu.max_power_limit_w,
                      clock_mhz=gpu.current_clock_mhz)


def _inventory(gpu: SimGpu) -> GpuInventory:
    return GpuInventory(
        uuid=gpu.uuid,
        index=gpu.index,
        model=gpu.model,
        min_frequency=gpu.min_clock_mhz,
        max_frequency=gpu.max_clock_mhz,
        default_frequency=gpu.default_clock_mhz,
        supported_frequencies=sorted(gpu.supported_clocks_mhz),
        power_limit=round(gpu.power_limit_w),
        min_power_limit=None if gpu.min_power_limit_w is None else round(gpu.min_power_limit_w),
        max_power_limit=None if gpu.max_power_limit_w is None else round(gpu.max_power_limit_w),
    )


def _step(steps: tuple[int, ...]) -> int | None:
    ordered = sorted(steps)
    return min((high - low for low, high in pairwise(ordered)), default=None)


def _reason(error: Exception) -> str:
    """The simulator's own explanation when it gave one, else the client's error, without the object addresses
    urllib3 puts in it: the reason ends up in status, which must read the same for the same fault."""
    response = getattr(error, "response", None)
    if response is not None:
        try:
            return f"{response.status_code} {response.json()['error']}"
        except (ValueError, KeyError, TypeError):
            return f"{response.status_code} {response.reason}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(error)) or type(error).__name__
