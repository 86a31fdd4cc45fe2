"""Simulated-GPU backend: drives a simulated node's GPUs through its JSON control API over HTTP.

The backend talks to the simulator with its own small client (the simulator's code is never loaded by the
tuner): GET /sim/gpus lists the GPUs, POST and DELETE /sim/gpus/<uuid>/locked-clock lock and unlock a clock.
The simulator snaps a locked clock to its own steps; targets are fitted here first, with the same rule as for
NVML, so that results carry the same messages whichever backend runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
import structlog

from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED, GpuInventory
from climatik.tune.backends.base import BackendUnavailableError, DeviceResult, fit_to_steps

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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimGpu:
        return cls(uuid=str(data["uuid"]), index=int(data["index"]), model=str(data["model"]),
                   min_clock_mhz=int(data["min_clock_mhz"]), max_clock_mhz=int(data["max_clock_mhz"]),
                   default_clock_mhz=int(data["default_clock_mhz"]),
                   supported_clocks_mhz=tuple(int(mhz) for mhz in data["supported_clocks_mhz"]),
                   power_limit_w=float(data["power_limit_w"]), current_clock_mhz=int(data["current_clock_mhz"]))


class SimNodeClient:
    """The part of one simulated node's control API the tuner uses; raises requests.HTTPError on an error answer."""

    def __init__(self, base_url: str, *, session: requests.Session, timeout_s: float = 5.0) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._timeout_s = timeout_s

    def gpus(self) -> list[SimGpu]:
        answer = self._session.get(f"{self._base}/sim/gpus", timeout=self._timeout_s)
        answer.raise_for_status()
        return [SimGpu.from_json(entry) for entry in answer.json()["gpus"]]

    def set_locked_clock(self, uuid: str, max_mhz: int) -> int:
        """Lock a GPU's SM clock upper bound; returns the bound as the simulator snapped it."""
        answer = self._session.post(f"{self._base}/sim/gpus/{uuid}/locked-clock", json={"max": max_mhz},
                                    timeout=self._timeout_s)
        answer.raise_for_status()
        return int(answer.json()["locked_clock_mhz"])

    def reset_locked_clock(self, uuid: str) -> None:
        answer = self._session.delete(f"{self._base}/sim/gpus/{uuid}/locked-clock", timeout=self._timeout_s)
        answer.raise_for_status()


class SimGpuBackend:
    """The GPUs of one simulated node, reached at `base_url` through `session`."""

    name = "sim"

    def __init__(self, *, base_url: str, session: requests.Session, timeout_s: float = 5.0) -> None:
        self._base_url = base_url
        self._client = SimNodeClient(base_url, session=session, timeout_s=timeout_s)
        self._steps: dict[str, tuple[int, ...]] = {}
        self._log = structlog.get_logger(__name__).bind(backend=self.name, url=base_url)

    def inventory(self) -> list[GpuInventory]:
        try:
            gpus = self._client.gpus()
        except _ANSWER_ERRORS as error:
            reason = f"simulator at {self._base_url} cannot list its GPUs: {_reason(error)}"
            raise BackendUnavailableError(reason) from error
        self._steps = {gpu.uuid: gpu.supported_clocks_mhz for gpu in gpus}
        return [_inventory(gpu) for gpu in gpus]

    def apply(self, uuid: str, max_mhz: int) -> DeviceResult:
        try:
            steps = self._steps.get(uuid) or self._find_steps(uuid)
            if not steps:
                return DeviceResult(UNSUPPORTED, requested_mhz=max_mhz, message=f"no GPU {uuid} on this node")
            fit = fit_to_steps(max_mhz, steps)
            locked = self._client.set_locked_clock(uuid, fit.mhz)
        except _ANSWER_ERRORS as error:
            return self._failure(error, uuid, max_mhz, "lock the clock")
        return DeviceResult(APPLIED, requested_mhz=max_mhz, applied_mhz=locked,
                            current_mhz=self.current_clock(uuid), message=fit.note)

    def reset(self, uuid: str) -> DeviceResult:
        try:
            self._client.reset_locked_clock(uuid)
        except _ANSWER_ERRORS as error:
            return self._failure(error, uuid, None, "reset the clock")
        return DeviceResult(APPLIED, current_mhz=self.current_clock(uuid), message="locked clocks reset")

    def current_clock(self, uuid: str) -> int | None:
        try:
            gpus = self._client.gpus()
        except _ANSWER_ERRORS as error:
            self._log.warning("clock_unreadable", gpu=uuid, error=_reason(error))
            return None
        return next((gpu.current_clock_mhz for gpu in gpus if gpu.uuid == uuid), None)

    def close(self) -> None:
        """The session belongs to the caller, who closes it."""

    def _find_steps(self, uuid: str) -> tuple[int, ...]:
        self._steps = {gpu.uuid: gpu.supported_clocks_mhz for gpu in self._client.gpus()}
        return self._steps.get(uuid, ())

    def _failure(self, error: Exception, uuid: str, requested: int | None, action: str) -> DeviceResult:
        unknown = isinstance(error, requests.HTTPError) and error.response is not None \
            and error.response.status_code == 404
        self._log.warning("sim_call_failed", gpu=uuid, action=action, error=_reason(error))
        return DeviceResult(UNSUPPORTED if unknown else FAILED, requested_mhz=requested,
                            message=f"simulator could not {action} of GPU {uuid}: {_reason(error)}")


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
    )


def _reason(error: Exception) -> str:
    """The simulator's own explanation when it gave one, else the client's error."""
    response = getattr(error, "response", None)
    if response is not None:
        try:
            return f"{response.status_code} {response.json()['error']}"
        except (ValueError, KeyError, TypeError):
            return f"{response.status_code} {response.reason}"
    return str(error) or type(error).__name__
