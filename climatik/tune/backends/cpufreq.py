"""cpufreq backend: bounds CPU frequencies through `scaling_max_freq` in sysfs, one cpufreq policy at a time.

Files live under <root>/devices/system/cpu/cpuN/cpufreq/ and hold kHz; the API speaks MHz. The root is
configurable so that tests (and containers that mount the host's /sys elsewhere) can point it anywhere.

The kernel limits frequencies per policy: `cpuN/cpufreq` of CPUs that share one (acpi-cpufreq with _PSD
coordination, many ARM clusters) is a link to the same `cpufreq/policyM`, and a write through any of them
changes all of them. `policies()` groups CPUs by that directory; the tuner records, sets and restores each
policy once, under its lowest CPU number (its leader).

What to restore is chosen by `original`: "hardware" (the default) restores `cpuinfo_max_freq`, because
`scaling_max_freq` reads back the limit in force, which may be a passing thermal or firmware (_PPC) cap, and
written back as the user's request would keep the CPU capped after the cap lifted; "found" restores the
`scaling_max_freq` read before the first change, for sites that set their own limit. Either way a limit found
below `cpuinfo_max_freq` is logged.

An offline CPU whose policy has no online CPU answers EBUSY to every read and write: that is Unsupported
("offline"), not a failure to retry. Kernels before 5.4 refuse (EINVAL) a maximum below `scaling_min_freq`, so
a floor above the target is lowered first and put back on restore; a lowered floor is kept in memory only,
since after a crash leaving it low only lets the CPU slow down, which caps nothing.
"""

from __future__ import annotations

import errno
import math
import os
import re
from pathlib import Path

import structlog

from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED, CpuInventory
from climatik.tune.backends.base import BackendUnavailableError, CpuPolicy, DeviceResult, fit_to_range, join_notes

_CPU_DIR = re.compile(r"cpu(\d+)")
ORIGINALS = ("hardware", "found")


class CpufreqBackend:
    """Logical CPUs driven through cpufreq sysfs files."""

    name = "cpufreq"

    def __init__(self, *, root: Path = Path("/sys"), original: str = "hardware") -> None:
        if original not in ORIGINALS:
            raise ValueError(f"original must be one of {', '.join(ORIGINALS)}, got {original!r}")
        self._cpus = root / "devices" / "system" / "cpu"
        self._original = original
        self._found: dict[int, int] = {}
        self._floors: dict[int, int] = {}
        self._log = structlog.get_logger(__name__).bind(backend=self.name)

    def policies(self) -> list[CpuPolicy]:
        if not self._cpus.is_dir():
            raise BackendUnavailableError(f"no CPU directory at {self._cpus}")
        members: dict[str, list[int]] = {}
        online: dict[int, bool] = {}
        for entry in self._cpus.iterdir():
            match = _CPU_DIR.fullmatch(entry.name)
            if match is None or not (entry / "cpufreq").is_dir():
                continue
            cpu = int(match[1])
            members.setdefault(os.path.realpath(entry / "cpufreq"), []).append(cpu)
            online[cpu] = self._text(entry / "online") != "0"  # no file: CPU 0 on x86, which cannot go offline
        return sorted((self._policy(path, sorted(cpus), online) for path, cpus in members.items()),
                      key=lambda policy: policy.leader)

    def inventory(self) -> list[CpuInventory]:
        cpus = []
        for policy in self.policies():
            low, high = policy.hardware_min_khz, policy.hardware_max_khz
            cpus += [CpuInventory(cpu_id=cpu, min_frequency=None if low is None else math.ceil(low / 1000),
                                  max_frequency=None if high is None else high // 1000, driver=policy.driver,
                                  governor=policy.governor) for cpu in policy.online]
        return sorted(cpus, key=lambda cpu: cpu.cpu_id)

    def apply(self, cpu_id: int, max_mhz: int) -> DeviceResult:
        missing = self._missing(cpu_id, max_mhz)
        if missing is not None:
            return missing
        try:
            low = self._read_khz(cpu_id, "cpuinfo_min_freq")
            high = self._read_khz(cpu_id, "cpuinfo_max_freq")
            before = self._read_khz(cpu_id, "scaling_max_freq")
            floor = self._read_khz(cpu_id, "scaling_min_freq")
        except (OSError, ValueError) as error:
            return self._failure(cpu_id, max_mhz, "read", error)
        fit = fit_to_range(max_mhz, math.ceil(low / 1000), high // 1000)
        self._found.setdefault(cpu_id, before)
        khz = fit.mhz * 1000
        if floor > khz:
            failed = self._write(cpu_id, "scaling_min_freq", khz, requested_mhz=max_mhz)
            if failed is not None:
                return failed
            self._floors.setdefault(cpu_id, floor)
        return self._write_and_check(cpu_id, khz, requested_mhz=max_mhz, note=fit.note)

    def reset(self, cpu_id: int, original_khz: int | None = None) -> DeviceResult:
        missing = self._missing(cpu_id, None)
        if missing is not None:
            return missing
        khz = original_khz if original_khz is not None else (
            self._found.get(cpu_id) if self._original == "found" else None)
        if khz is None:
            try:
                khz = self._read_khz(cpu_id, "cpuinfo_max_freq")
            except (OSError, ValueError) as error:
                return self._failure(cpu_id, None, "read", error)
        result = self._write_and_check(cpu_id, khz, requested_mhz=None, note=f"scaling_max_freq restored to {khz} kHz")
        if not result.ok:
            return result
        self._found.pop(cpu_id, None)
        floor = self._floors.pop(cpu_id, None)
        if floor is not None:
            failed = self._write(cpu_id, "scaling_min_freq", min(floor, khz), requested_mhz=None)
            if failed is not None:
                return failed
            result = DeviceResult(APPLIED, current_mhz=result.current_mhz,
                                  message=join_notes(result.message, f"scaling_min_freq restored to {floor} kHz"))
        return result

    def limit_khz(self, cpu_id: int) -> int | None:
        return self._optional_khz(cpu_id, "scaling_max_freq")

    def original_khz(self, cpu_id: int) -> int | None:
        limit, hardware = self.limit_khz(cpu_id), self.hardware_max_khz(cpu_id)
        if limit is not None and hardware is not None and limit < hardware:
            self._log.warning("cpu_limit_below_hardware_max", cpu=cpu_id, limit_khz=limit, hardware_max_khz=hardware,
                              bios_limit_khz=self._optional_khz(cpu_id, "bios_limit"),
                              restoring=limit if self._original == "found" else hardware)
        return limit if self._original == "found" else hardware

    def hardware_max_khz(self, cpu_id: int) -> int | None:
        return self._optional_khz(cpu_id, "cpuinfo_max_freq")

    def current_clock(self, cpu_id: int) -> int | None:
        khz = self._optional_khz(cpu_id, "scaling_cur_freq")
        return None if khz is None else khz // 1000

    def close(self) -> None:
        """Nothing is held open between calls."""

    def _policy(self, path: str, cpus: list[int], online: dict[int, bool]) -> CpuPolicy:
        directory = Path(path)
        related = self._text(directory / "related_cpus")
        if related:
            # Members whose link is missing still share the limit; the kernel lists them all.
            cpus = sorted(set(cpus) | {int(cpu) for cpu in related.split() if cpu.isdigit()})
        return CpuPolicy(
            leader=cpus[0], cpus=tuple(cpus), online=tuple(cpu for cpu in cpus if online.get(cpu, False)), path=path,
            driver=self._text(directory / "scaling_driver"), governor=self._text(directory / "scaling_governor"),
            hardware_min_khz=self._number(directory / "cpuinfo_min_freq"),
            hardware_max_khz=self._number(directory / "cpuinfo_max_freq"),
            min_khz=self._number(directory / "scaling_min_freq"), max_khz=self._number(directory / "scaling_max_freq"),
            current_khz=self._number(directory / "scaling_cur_freq"),
            bios_limit_khz=self._number(directory / "bios_limit"),
        )

    def _write(self, cpu_id: int, name: str, khz: int, *, requested_mhz: int | None) -> DeviceResult | None:
        try:
            with self._path(cpu_id, name).open("w", encoding="ascii") as sysfs:
                sysfs.write(f"{khz}\n")
        except OSError as error:
            return self._failure(cpu_id, requested_mhz, "write", error)
        return None

    def _write_and_check(self, cpu_id: int, khz: int, *, requested_mhz: int | None, note: str | None) -> DeviceResult:
        path = self._path(cpu_id, "scaling_max_freq")
        failed = self._write(cpu_id, "scaling_max_freq", khz, requested_mhz=requested_mhz)
        if failed is not None:
            return failed
        try:
            now_khz = self._read_khz(cpu_id, "scaling_max_freq")
        except (OSError, ValueError) as error:
            return self._failure(cpu_id, requested_mhz, "read", error)
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
        if isinstance(error, OSError) and error.errno == errno.EBUSY:
            # cpufreq.c show()/store() of a policy whose CPUs are all offline.
            return DeviceResult(UNSUPPORTED, requested_mhz=requested_mhz,
                                message=f"CPU {cpu_id} is offline: its cpufreq policy answers EBUSY")
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

    @staticmethod
    def _text(path: Path) -> str | None:
        try:
            return path.read_text(encoding="ascii").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def _number(self, path: Path) -> int | None:
        text = self._text(path)
        return int(text) if text is not None and text.isdigit() else None
