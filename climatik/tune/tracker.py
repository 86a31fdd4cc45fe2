"""Drives one kind of device (GPUs or CPUs) towards its targets, remembering what it set and what to restore.

Idempotence: a target equal to the one we last set successfully costs no hardware call until
`verify_interval_s` has passed; then the bound is checked (not re-read against the request, since a
GPU under load or a power limit legitimately runs below its bound) and set again only if it was lost.
Every change is recorded in the state store first; every restore forgets it afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import structlog

from climatik.api.nodefrequencies import APPLIED, FAILED, PENDING, UNSUPPORTED
from climatik.clock import Clock
from climatik.tune.backends.base import DeviceResult, join_notes
from climatik.tune.devices import Devices
from climatik.tune.state import StateError, StateStore


@dataclass(frozen=True)
class Restoration:
    """The outcome of putting one device back to its original setting."""

    kind: str
    key: str
    result: DeviceResult


@dataclass(frozen=True)
class _Setting:
    requested_mhz: int
    result: DeviceResult
    checked_at: float


class DeviceTracker:
    """Applies targets to the devices of one kind and restores those no longer wanted."""

    def __init__(self, *, devices: Devices, state: StateStore, clock: Clock, verify_interval_s: float) -> None:
        self._devices = devices
        self._state = state
        self._clock = clock
        self._verify_interval_s = verify_interval_s
        self._settings: dict[str, _Setting] = {}
        self._recovery_done = False
        self._log = structlog.get_logger(__name__).bind(controller="tune", kind=devices.kind)

    def apply(
        self, desired: Mapping[str, int], *, dry_run: bool = False
    ) -> tuple[dict[str, DeviceResult], list[Restoration]]:
        """Set every desired device, then restore recorded ones no longer desired (not in a dry run)."""
        if not dry_run:
            self._recover()
        results = {key: self._apply_one(key, mhz, dry_run=dry_run) for key, mhz in desired.items()}
        restored = [] if dry_run else self._restore_where(lambda key: key not in desired)
        return results, restored

    def restore_all(self) -> list[Restoration]:
        """Put every device this tuner changed (in this run or an earlier one) back to its original."""
        self._recover()
        return self._restore_where(lambda key: True)

    def _apply_one(self, key: str, mhz: int, *, dry_run: bool) -> DeviceResult:
        blocked = self._devices.check(key, mhz)
        if blocked is not None:
            return blocked
        if dry_run:
            fit = self._devices.plan(key, mhz)
            return DeviceResult(PENDING, requested_mhz=mhz, applied_mhz=fit.mhz, current_mhz=self._devices.current(key),
                                message=join_notes(f"dry-run: would set {fit.mhz} MHz; nothing changed", fit.note))
        now = self._clock.now()
        setting = self._settings.get(key)
        if setting is not None and setting.requested_mhz == mhz:
            if now - setting.checked_at < self._verify_interval_s:
                return setting.result
            verified = self._verify(key, setting, now)
            if verified is not None:
                return verified
        try:
            if not self._state.has(self._devices.kind, key):
                self._state.record(self._devices.kind, key, self._devices.original(key))
        except StateError as error:
            self._log.error("change_refused", key=key, error=str(error))
            return DeviceResult(FAILED, requested_mhz=mhz, message=f"left unchanged: {error}")
        result = self._devices.apply(key, mhz)
        if result.ok:
            self._settings[key] = _Setting(mhz, result, now)
            self._log.info("target_applied", key=key, requested_mhz=mhz, applied_mhz=result.applied_mhz,
                           current_mhz=result.current_mhz)
        else:
            self._settings.pop(key, None)
            self._log.warning("target_not_applied", key=key, status=result.status, error=result.message)
        return result

    def _verify(self, key: str, setting: _Setting, now: float) -> DeviceResult | None:
        applied = setting.result.applied_mhz
        fresh = None if applied is None else self._devices.verify(key, applied)
        if fresh is None:
            self._log.warning("setting_lost", key=key, applied_mhz=applied)
            return None
        result = replace(setting.result, current_mhz=fresh.current_mhz)
        self._settings[key] = _Setting(setting.requested_mhz, result, now)
        return result

    def _restore_where(self, wanted: Callable[[str], bool]) -> list[Restoration]:
        restored = []
        for key, original in self._state.entries(self._devices.kind).items():
            if not wanted(key):
                continue
            result = self._devices.restore(key, original)
            # Unsupported means the device is gone or was never changeable: nothing is left to put back.
            if result.status in (APPLIED, UNSUPPORTED):
                self._settings.pop(key, None)
                self._forget(key)
                self._log.info("default_restored", key=key, status=result.status, detail=result.message)
            else:
                self._log.warning("restore_failed", key=key, error=result.message)
            restored.append(Restoration(self._devices.kind, key, result))
        return restored

    def _forget(self, key: str) -> None:
        try:
            self._state.forget(self._devices.kind, key)
        except StateError as error:
            self._log.warning("state_not_cleared", key=key, error=str(error))

    def _recover(self) -> None:
        """After an unusable state file, treat every device seen as changed, with its hardware default."""
        if self._recovery_done or not self._state.recovered:
            return
        keys = self._devices.keys()
        if not keys:
            return  # the inventory is not in yet; try again next time
        try:
            for key in keys:
                self._state.record(self._devices.kind, key, self._devices.default(key))
        except StateError as error:
            self._log.error("recovery_not_recorded", error=str(error))
            return
        self._recovery_done = True
        self._log.warning("state_recovered", devices=len(keys))
