"""cpufreq backend: bounds each logical CPU's frequency through `scaling_max_freq` in sysfs.

Files live under <root>/devices/system/cpu/cpuN/cpufreq/ and hold kHz; the API speaks MHz. The root is
configurable so that tests (and containers that mount the host's /sys elsewhere) can point it anywhere.
The value found before the first change is remembered so that `reset` can put it back.
"""

from __future__ import annotations

import errno
import math
import re
from pathlib import Path

import structlog

from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED, CpuInventory
from climatik.tune.backends.base import BackendUnavailableError, DeviceResult, fit_to_range, join_notes

_CPU_DIR = re.compile(r"cpu(\d+)")


class CpufreqBackend:
    """Logical CPUs driven through cpufreq sysfs files."""

    name = "cpufreq"

    def __init__(self, *, root: Path = Path("/sys")) -> None:
        self._cpus = root / "devices" / "system" / "cpu"
        self._originals: dict[int, int] = {}
        self._log = structlog.get_logger(__name__).bind(backend=self.name)

    def inventory(self) -> list[CpuInventory]:
        if not self._cpus.is_dir():
            raise BackendUnavailableError(f"no CPU directory at {self._cpus}")
        cpus = []
        for entry in self._cpus.iterdir():
            match = _CPU_DIR.fullmatch(entry.name)
            if match is None or not (entry / "cpufreq").is_dir():
                continue
            cpu_id = int(match[1])
            low, high = self._optional_khz(cpu_id, "cpuinfo_min_freq"), self._optional_khz(cpu_id, "cpuinfo_max_freq")
            cpus.append(CpuInventory(
                cpu_id=cpu_id,
                min_frequency=None if low is None else math.ceil(low / 1000),
                max_frequency=None if high is None else high // 1000,
                driver=self._optional_text(cpu_id, "scaling_driver"),
                governor=self._optional_text(cpu_id, "scaling_governor"),
            ))
        return sorted(cpus, key=lambda cpu: cpu.cpu_id)

    def apply(self, cpu_id: int, max_mhz: int) -> DeviceResult:
        missing = self._missing(cpu_id, max_mhz)
        if missing is not None:
            return missing
        try:
            low = self._read_khz(cpu_id, "cpuinfo_min_freq")
            high = self._read_khz(cpu_id, "cpuinfo_max_freq")
            before = self._read_khz(cpu_id, "scaling_max_freq")
        except (OSError, ValueError) as error:
            return self._failure(cpu_id, max_mhz, "read", error)
        fit = fit_to_range(max_mhz, math.ceil(low / 1000), high // 1000)
        self._originals.setdefault(cpu_id, before)
        return self._write_and_check(cpu_id, fit.mhz * 1000, requested_mhz=max_mhz, note=fit.note)

    def reset(self, cpu_id: int, original_khz: int | None = None) -> DeviceResult:
        missing = self._missing(cpu_id, None)
        if missing is not None:
            return missing
        khz = original_khz if original_khz is not None else self._originals.get(cpu_id)
        if khz is None:
            try:
                khz = self._read_khz(cpu_id, "cpuinfo_max_freq")
            except (OSError, ValueError) as error:
                return self._failure(cpu_id, None, "read", error)
        result = self._write_and_check(cpu_id, khz, requested_mhz=None, note=f"scaling_max_freq restored to {khz} kHz")
        if result.ok:
            self._originals.pop(cpu_id, None)
        return result

    def limit_khz(self, cpu_id: int) -> int | None:
        return self._optional_khz(cpu_id, "scaling_max_freq")

    def hardware_max_khz(self, cpu_id: int) -> int | None:
        return self._optional_khz(cpu_id, "cpuinfo_max_freq")

    def current_clock(self, cpu_id: int) -> int | None:
        khz = self._optional_khz(cpu_id, "scaling_cur_freq")
        return None if khz is None else khz // 1000

    def close(self) -> None:
        """Nothing is held open between calls."""

    def _write_and_check(self, cpu_id: int, khz: int, *, requested_mhz: int | None, note: str | None) -> DeviceResult:
        path = self._path(cpu_id, "scaling_max_freq")
        try:
            with path.open("w", encoding="ascii") as sysfs:
                sysfs.write(f"{khz}\n")
            now_khz = self._read_khz(cpu_id, "scaling_max_freq")
        except (OSError, ValueError) as error:
            return self._failure(cpu_id, requested_mhz, "write", error)
        if now_khz > khz:
            return DeviceResult(FAILED, requested_mhz=requested_mhz, applied_mhz=now_khz // 1000,
                                current_mhz=self.current_clock(cpu_id),
                                message=f"wrote {khz} kHz to {path} but it reads {now_khz} kHz")
        # The kernel may hold the bound lower still (thermal or QoS limits); that is a stricter bound, not a failure.
        lower = f"the kernel holds it at {now_khz} kHz" if now_khz < khz else None
        return DeviceResult(APPLIED, requested_mhz=requested_mhz, applied_mhz=now_khz // 1000,
                            current_mhz=self.current_clock(cpu_id), message=join_notes(note, lower))

    def _missing(self, cpu_id: int, requested_mhz: int | None) -> DeviceResult | None:
        directory = self._cpus / f"cpu{cpu_id}" / "cpufreq"
        if cpu_id < 0 or not directory.is_dir():
            return DeviceResult(UNSUPPORTED, requested_mhz=requested_mhz,
                                message=f"CPU {cpu_id} has no cpufreq directory at {directory}")
        return None

    def _failure(self, cpu_id: int, requested_mhz: int | None, action: str, error: Exception) -> DeviceResult:
        if isinstance(error, OSError):
            reason = f"cannot {action} {error.filename}: {error.strerror or error}"
            status = UNSUPPORTED if error.errno == errno.ENOENT else FAILED
        else:
            reason = f"cannot {action} a frequency of CPU {cpu_id}: {error}"
            status = FAILED
        self._log.warning("cpufreq_access_failed", cpu=cpu_id, error=reason)
        return DeviceResult(status, requested_mhz=requested_mhz, message=reason)

    def _path(self, cpu_id: int, name: str) -> Path:
        return self._cpus / f"cpu{cpu_id}" / "cpufreq" / name

    def _read_khz(self, cpu_id: int, name: str) -> int:
        path = self._path(cpu_id, name)
        text = path.read_text(encoding="ascii").strip()
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{path} holds {text!r}, not a number of kHz") from None

    def _optional_khz(self, cpu_id: int, name: str) -> int | None:
        try:
            return self._read_khz(cpu_id, name)
        except (OSError, ValueError):
            return None

    def _optional_text(self, cpu_id: int, name: str) -> str | None:
        try:
            return self._path(cpu_id, name).read_text(encoding="ascii").strip() or None
        except (OSError, UnicodeDecodeError):
            return None
