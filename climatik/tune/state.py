"""The tuner's node-local memory of what it changed, so that defaults come back even after a crash.

A device is recorded BEFORE its setting is changed and forgotten only once its default is back, so the file
always lists every device that may be off its default. The file is JSON, replaced atomically:

    {"version": 1, "devices": {"gpu": {"GPU-5fd4...": null}, "cpu": {"3": 3500000}}}

Each value is the original setting to restore (kHz for CPUs); null means "the hardware default" (for GPUs,
resetting the locked clocks). A file that cannot be read or parsed is set aside as <path>.corrupt and the
store starts empty with `recovered` set, so that the tuner can fall back to restoring every device it sees.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import structlog

STATE_VERSION = 1


class StateError(Exception):
    """The state file could not be written; the change it was meant to guard must not be made."""


class StateStore:
    """Devices changed by the tuner, per kind ("gpu", "cpu"), with their original settings.

    With `path=None` the store lives in memory only (simulated nodes, tests). Not thread-safe: the applier
    serialises access.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._devices: dict[str, dict[str, int | None]] | None = None
        self._recovered = False
        self._log = structlog.get_logger(__name__).bind(path=str(path))

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def recovered(self) -> bool:
        """True when the file on disk was unusable and the store started from nothing."""
        self._loaded()
        return self._recovered

    def entries(self, kind: str) -> dict[str, int | None]:
        """A copy of the devices of `kind` recorded as changed, each with its original setting."""
        return dict(self._loaded().get(kind, {}))

    def has(self, kind: str, key: str) -> bool:
        """Whether `key` is recorded as changed."""
        return key in self._loaded().get(kind, {})

    def record(self, kind: str, key: str, original: int | None) -> None:
        """Remember that `key` is about to change; keeps the first original if it is already recorded."""
        devices = self._loaded()
        if key in devices.get(kind, {}):
            return
        devices.setdefault(kind, {})[key] = original
        try:
            self._save()
        except StateError:
            del devices[kind][key]
            raise

    def forget(self, kind: str, key: str) -> None:
        """Drop `key` once its original is back. If the write fails, the file still lists it, which only
        means it is restored once more later."""
        entries = self._loaded().get(kind, {})
        if key in entries:
            del entries[key]
            self._save()

    def _loaded(self) -> dict[str, dict[str, int | None]]:
        if self._devices is None:
            self._devices = self._read()
        return self._devices

    def _read(self) -> dict[str, dict[str, int | None]]:
        if self._path is None:
            return {}
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            self._log.error("state_file_unreadable", error=str(error))
            self._recovered = True
            return {}
        try:
            return _parse(json.loads(raw))
        except ValueError as error:
            self._set_aside(self._path, str(error))
            return {}

    def _set_aside(self, path: Path, reason: str) -> None:
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
        except OSError as error:
            self._log.error("state_file_not_set_aside", error=str(error))
        self._log.error("state_file_corrupt", error=reason, moved_to=str(aside),
                        fallback="restoring every device to its hardware default")
        self._recovered = True

    def _save(self) -> None:
        if self._path is None:
            return
        payload = json.dumps({"version": STATE_VERSION, "devices": self._devices}, indent=1, sort_keys=True)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=self._path.parent)
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                    out.write(payload)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, self._path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            raise StateError(f"cannot write the tuner state file {self._path}: {error}") from error


def _parse(data: Any) -> dict[str, dict[str, int | None]]:
    """The devices of a parsed state file; ValueError when its shape is not the one we write."""
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"not a version {STATE_VERSION} tuner state object")
    devices = data.get("devices")
    if not isinstance(devices, dict):
        raise ValueError("'devices' is not an object")
    parsed: dict[str, dict[str, int | None]] = {}
    for kind, entries in devices.items():
        if not isinstance(entries, dict):
            raise ValueError(f"devices.{kind} is not an object")
        for key, original in entries.items():
            if original is not None and (isinstance(original, bool) or not isinstance(original, int)):
                raise ValueError(f"devices.{kind}.{key} is {original!r}, not an integer or null")
        parsed[str(kind)] = dict(entries)
    return parsed
