"""A client for a simulated node's control API, for the tuner's `sim` backend and for tests."""

from __future__ import annotations

from collections.abc import Mapping

import requests

from climatik.sim.control import GpuInfo


class SimControlClient:
    """Talks to one node's /sim API; raises requests.HTTPError on an error answer."""

    def __init__(self, base_url: str, *, session: requests.Session, timeout_s: float = 5.0) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._timeout_s = timeout_s

    def gpus(self) -> list[GpuInfo]:
        """The node's GPUs with their inventory and current clocks."""
        answer = self._session.get(f"{self._base}/sim/gpus", timeout=self._timeout_s)
        answer.raise_for_status()
        return [GpuInfo.from_json(entry) for entry in answer.json()["gpus"]]

    def set_locked_clock(self, uuid: str, max_mhz: int) -> int:
        """Lock a GPU's SM clock upper bound; returns the bound as snapped to a supported step."""
        answer = self._session.post(
            f"{self._base}/sim/gpus/{uuid}/locked-clock", json={"max": max_mhz}, timeout=self._timeout_s
        )
        answer.raise_for_status()
        return int(answer.json()["locked_clock_mhz"])

    def reset_locked_clock(self, uuid: str) -> None:
        """Unlock a GPU's SM clock."""
        answer = self._session.delete(f"{self._base}/sim/gpus/{uuid}/locked-clock", timeout=self._timeout_s)
        answer.raise_for_status()

    def set_power_limit(self, uuid: str, watts: float) -> None:
        """Change a GPU's board power limit."""
        answer = self._session.post(
            f"{self._base}/sim/gpus/{uuid}/power-limit", json={"watts": watts}, timeout=self._timeout_s
        )
        answer.raise_for_status()

    def set_load(self, utilisation: float, mix: Mapping[str, float], *, uuid: str | None = None) -> None:
        """Run a fixed load from now on, on one GPU or (uuid None) on all of them."""
        body: dict[str, object] = {"utilisation": utilisation, "mix": dict(mix)}
        if uuid is not None:
            body["uuid"] = uuid
        answer = self._session.post(f"{self._base}/sim/load", json=body, timeout=self._timeout_s)
        answer.raise_for_status()
