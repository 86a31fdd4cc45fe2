"""The tuner's node-local memory of what it changed, so that defaults come back even after a crash.

A device is recorded BEFORE its setting is changed and forgotten only once its default is back, so the file
always lists every device that may be off its default. The file is JSON, replaced atomically (written to a
temporary file, synced, renamed over the old one, and the directory synced so that the new name is durable):

    {"version": 1, "bootId": "5d3c0e5e-...",
     "devices": {"gpu": {"GPU-5fd4...": null}, "cpu": {"3": 3500000}, "gpuPowerLimit": {"GPU-5fd4...": 700000}}}

Each value is the original setting to restore (kHz for CPUs; a CPU key is the first CPU of a cpufreq policy;
milliwatts for a GPU's power limit, which the node guard changes); null means "the hardware default" (for GPUs'
clocks, the node's baseline or the reset of the locked clocks). "gpuClockCap" lists the GPUs whose lock the node
guard's clock cap holds below the algorithm's target (always null). Keys must name devices: CPU keys are CPU
numbers, GPU keys NVML UUIDs ("GPU-" and a UUID). `PowerLimitOriginals` is the guard's view of its kind: a
mapping of UUID to watts that writes through to the file.

The boot id (/proc/sys/kernel/random/boot_id) says which boot the entries belong to. Locked GPU clocks, power
limits set through NVML and cpufreq limits do not survive a reboot, so entries from another boot are dropped:
restoring them would undo what a boot script set since (e.g. `nvidia-smi -lgc` or `-pl`). A file that cannot be
read or parsed, or names no device, is set aside as <path>.corrupt and the store starts empty with `recovered`
set, so that the tuner can fall back to restoring every device it sees.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import structlog

STATE_VERSION = 1
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
POWER_LIMIT_KIND = "gpuPowerLimit"
CLOCK_CAP_KIND = "gpuClockCap"
KINDS = ("gpu", "cpu", POWER_LIMIT_KIND, CLOCK_CAP_KIND)
_GPU_UUID = re.compile(r"GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_KEYS = {"cpu": re.compile(r"0|[1-9][0-9]*"), "gpu": _GPU_UUID, POWER_LIMIT_KIND: _GPU_UUID, CLOCK_CAP_KIND: _GPU_UUID}


class StateError(Exception):
    """The state file could not be written; the change it was meant to guard must not be made."""


class StateStore:
    """Devices changed by the tuner, per kind ("gpu", "cpu"), with their original settings.

    With `path=None` the store lives in memory only (simulated nodes, tests). `boot_id_path` is where this boot's
    id is read (tests point it at a file of their own). Thread-safe: the applier and the node guard share it.
    """

    def __init__(self, path: Path | None, *, boot_id_path: Path = BOOT_ID_PATH) -> None:
        self._path = path
        self._boot_id_path = boot_id_path
        self._boot_id: str | None = None
        self._devices: dict[str, dict[str, int | None]] | None = None
        self._recovered = False
        self._lock = threading.RLock()
        self._log = structlog.get_logger(__name__).bind(path=str(path))

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def recovered(self) -> bool:
        """True when the file on disk was unusable and the store started from nothing."""
        with self._lock:
            self._loaded()
            return self._recovered

    def entries(self, kind: str) -> dict[str, int | None]:
        """A copy of the devices of `kind` recorded as changed, each with its original setting."""
        with self._lock:
            return dict(self._loaded().get(kind, {}))

    def has(self, kind: str, key: str) -> bool:
        """Whether `key` is recorded as changed."""
        with self._lock:
            return key in self._loaded().get(kind, {})

    def record(self, kind: str, key: str, original: int | None) -> None:
        """Remember that `key` is about to change; keeps the first original if it is already recorded."""
        with self._lock:
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
        with self._lock:
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
        self._boot_id = _read_boot_id(self._boot_id_path)
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            self._log.error("state_file_unreadable", error=str(error))
            self._recovered = True
            return {}
        try:
            data = json.loads(raw)
            devices = _parse(data)
        except ValueError as error:
            self._set_aside(self._path, str(error))
            return {}
        written_in = data.get("bootId")
        if written_in is not None and self._boot_id is not None and written_in != self._boot_id:
            # The reboot in between reset every clock and cpufreq limit: nothing of ours is left to restore.
            self._log.warning("state_from_another_boot", boot_id=written_in, now=self._boot_id,
                           dropped={kind: sorted(entries) for kind, entries in devices.items() if entries})
            return {}
        return devices

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
        content: dict[str, Any] = {"version": STATE_VERSION, "devices": self._devices}
        if self._boot_id is not None:
            content["bootId"] = self._boot_id
        payload = json.dumps(content, indent=1, sort_keys=True)
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
            _sync_directory(self._path.parent)
        except OSError as error:
            raise StateError(f"cannot write the tuner state file {self._path}: {error}") from error


class PowerLimitOriginals(MutableMapping[str, float]):
    """The GPUs' power limits from before the node guard first changed them (UUID -> W), kept in the state file:
    an entry is written before the change it guards (setting one already there keeps the first), and dropped
    once the original is back."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def __getitem__(self, uuid: str) -> float:
        milliwatts = self._store.entries(POWER_LIMIT_KIND)[uuid]
        if milliwatts is None:
            raise KeyError(uuid)
        return milliwatts / 1000

    def __setitem__(self, uuid: str, watts: float) -> None:
        self._store.record(POWER_LIMIT_KIND, uuid, round(watts * 1000))

    def __contains__(self, uuid: object) -> bool:
        return isinstance(uuid, str) and self._store.has(POWER_LIMIT_KIND, uuid)

    def __delitem__(self, uuid: str) -> None:
        if not self._store.has(POWER_LIMIT_KIND, uuid):
            raise KeyError(uuid)
        self._store.forget(POWER_LIMIT_KIND, uuid)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.entries(POWER_LIMIT_KIND))

    def __len__(self) -> int:
        return len(self._store.entries(POWER_LIMIT_KIND))


def _parse(data: Any) -> dict[str, dict[str, int | None]]:
    """The devices of a parsed state file; ValueError when its shape is not the one we write."""
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"not a version {STATE_VERSION} tuner state object")
    devices = data.get("devices")
    if not isinstance(devices, dict):
        raise ValueError("'devices' is not an object")
    parsed: dict[str, dict[str, int | None]] = {}
    for kind, entries in devices.items():
        if kind not in KINDS:
            raise ValueError(f"devices.{kind}: not a kind of device the tuner changes ({', '.join(KINDS)})")
        if not isinstance(entries, dict):
            raise ValueError(f"devices.{kind} is not an object")
        for key, original in entries.items():
            if not _KEYS[kind].fullmatch(key):
                raise ValueError(f"devices.{kind}.{key}: not a {'CPU number' if kind == 'cpu' else 'GPU UUID'}")
            if original is not None and (isinstance(original, bool) or not isinstance(original, int)):
                raise ValueError(f"devices.{kind}.{key} is {original!r}, not an integer or null")
        parsed[str(kind)] = dict(entries)
    if "bootId" in data and not isinstance(data["bootId"], str):
        raise ValueError("'bootId' is not a string")
    return parsed


def _read_boot_id(path: Path) -> str | None:
    """This boot's id, or None when it cannot be read (then entries are kept: better restored twice than never)."""
    try:
        return path.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable: the new name lives in the directory, not in the file."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
