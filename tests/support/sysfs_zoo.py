"""A device zoo for the tuner's cpufreq side: real sysfs-shaped trees under a temporary root, laid out as the
kernel lays them out, and a small model of the kernel's show()/store() for answers a plain file cannot give.

Layout (admin-guide/pm/cpufreq.rst): every policy is `<root>/devices/system/cpu/cpufreq/policyN` (N = its
first CPU) holding related_cpus, affected_cpus, cpuinfo_*, scaling_* and driver files; each CPU's
`cpuN/cpufreq` is a relative symlink `../cpufreq/policyN`, so CPUs that share a policy (acpi-cpufreq with
_PSD SW_ALL/SW_ANY coordination, many ARM clusters) resolve to one directory. `cpuN/online` exists for
N > 0 (x86 cannot offline CPU 0, so its file is absent); `cpu/online`, `offline`, `present`, `possible` hold
CPU lists. Files are rendered from the model's state with the kernel's formatting (cpu lists "0 1",
scaling_available_frequencies and table-driver governor lists end with a space before the newline).

    tree = intel_pstate(tmp_path, cpus=4, offline=[3], throttled={1: 2_000_000})
    backend = CpufreqBackend(root=tmp_path)
    with tree.kernel():               # EBUSY, EINVAL, EACCES and freq-QoS arithmetic while active
        ...

Why a hook: tests may run as root, and root ignores file permissions, so no chmod can make a read fail; a FIFO
blocks instead of failing; a directory answers EISDIR. `SysfsTree.kernel()` therefore wraps `io.open` and
`builtins.open` (which `Path.open`, `read_text` and `write_text` go through) for paths that resolve under the
tree's cpufreq directories, and returns file objects that fail where the kernel fails: read() of an inactive
policy (every CPU offline) raises OSError(EBUSY) as cpufreq.c show() does; buffered writes reach "store" at
flush/close, as the write(2) of a TextIOWrapper does, and raise EBUSY / EINVAL there; opening a read-only
attribute for writing raises EACCES (kernfs refuses even root). Other paths, file descriptors and `os.open`
pass through untouched. Without the hook the tree is plain files: reads never fail and writes store text as is.

Kernel semantics inside the hook (cpufreq core since 5.4, freq QoS): scaling_max_freq reads back the
aggregated limit min(user request, thermal/_PPC cap) clamped to cpuinfo and, for table drivers, resolved to
the highest table frequency at or below it; scaling_min_freq is clamped below the effective max (a max
written under the min pulls the min down). `old_kernel=True` models pre-5.4 cpufreq_set_policy(), which
refuses with EINVAL a max below the current min (and a min above the current max).
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

_ETERNAL = "4294967295"  # CPUFREQ_ETERNAL printed with %u: "cannot determine" for the P-state drivers


@dataclass(frozen=True)
class CpuModel:
    """One cpufreq driver on one CPU model, as sysfs shows it. Frequencies in kHz, as sysfs speaks."""

    key: str
    description: str
    driver: str
    governors: tuple[str, ...]
    default_governor: str
    cpuinfo_min_khz: int
    cpuinfo_max_khz: int
    idle_cur_khz: int
    transition_latency: str
    source: str
    base_khz: int | None = None
    available_khz: tuple[int, ...] | None = None
    epp_preferences: tuple[str, ...] | None = None
    default_epp: str | None = None
    bios_limit: bool = False
    driver_files: tuple[tuple[str, str], ...] = ()
    global_files: tuple[tuple[str, str], ...] = ()

    @property
    def setpolicy(self) -> bool:
        """Drivers with their own governors (intel_pstate/amd-pstate active) list governors without a trailing space."""
        return self.available_khz is None


_EPP = ("default", "performance", "balance_performance", "balance_power", "power")

INTEL_PSTATE = CpuModel(
    key="intel_pstate", description="Intel Xeon Platinum 8480+ (Sapphire Rapids), intel_pstate active mode with HWP",
    driver="intel_pstate", governors=("performance", "powersave"), default_governor="powersave",
    cpuinfo_min_khz=800_000, cpuinfo_max_khz=3_800_000, base_khz=2_000_000, idle_cur_khz=800_000,
    transition_latency=_ETERNAL, epp_preferences=_EPP, default_epp="balance_performance",
    driver_files=(("scaling_setspeed", "<unsupported>"),),
    global_files=(("intel_pstate/status", "active"), ("intel_pstate/no_turbo", "0")),
    source=(
        "Intel ARK Xeon Platinum 8480+: base 2.0 GHz, max turbo 3.8 GHz (intel_pstate reports max turbo as "
        "cpuinfo_max_freq and the base as base_frequency); DGX H100 pairs H100s with 2x Xeon Platinum 8480C. "
        "Kernel admin-guide/pm/intel_pstate.rst: active mode, one policy per CPU, governors performance and "
        "powersave, energy_performance_preference values, intel_pstate/status and no_turbo. ASSUMED: "
        "cpuinfo_min_freq 800 MHz (the usual lowest P-state), idle scaling_cur_freq 800 MHz, transition latency "
        "CPUFREQ_ETERNAL (cpupower prints 'cannot determine' for the P-state drivers)."
    ),
)

ACPI_CPUFREQ = CpuModel(
    key="acpi-cpufreq",
    description="Intel Xeon E5-2680 v4 (Broadwell-EP) with intel_pstate off: acpi-cpufreq, _PSD SW_ALL coordination",
    driver="acpi-cpufreq", governors=("conservative", "ondemand", "userspace", "powersave", "performance", "schedutil"),
    default_governor="schedutil", cpuinfo_min_khz=1_200_000, cpuinfo_max_khz=2_401_000, idle_cur_khz=1_200_000,
    transition_latency="10000",
    available_khz=(2_401_000, *range(2_400_000, 1_199_999, -100_000)),
    bios_limit=True, driver_files=(("scaling_setspeed", "<unsupported>"),),
    global_files=(("cpufreq/boost", "1"),),
    source=(
        "Intel ARK Xeon E5-2680 v4: base 2.4 GHz, max turbo 3.3 GHz. Kernel admin-guide/pm/cpufreq.rst: policyN "
        "directories with cpuN/cpufreq symlinks, related_cpus/affected_cpus, scaling_available_frequencies for "
        "table drivers, the global 'boost' switch; acpi-cpufreq lists turbo as base + 1 MHz (2401000) and shows "
        "the firmware _PPC limit in bios_limit; a shared policy needs firmware _PSD SW_ALL/SW_ANY coordination "
        "(a BIOS 'P-state coordination' option on many Xeon servers). ASSUMED: lowest P-state 1.2 GHz, 100 MHz "
        "table steps, schedutil as the distribution's default governor, 10 us transition latency, which CPUs "
        "share a domain (consecutive numbers here; real sibling numbering is platform specific)."
    ),
)

AMD_PSTATE_EPP = CpuModel(
    key="amd-pstate-epp", description="AMD EPYC 9654 (Genoa), amd-pstate active (EPP) mode",
    driver="amd-pstate-epp", governors=("performance", "powersave"), default_governor="powersave",
    cpuinfo_min_khz=400_000, cpuinfo_max_khz=3_700_000, idle_cur_khz=1_500_000,
    transition_latency=_ETERNAL, epp_preferences=_EPP, default_epp="balance_performance",
    driver_files=(("amd_pstate_max_freq", "3700000"), ("amd_pstate_lowest_nonlinear_freq", "1500000"),
                  ("scaling_setspeed", "<unsupported>")),
    global_files=(("amd_pstate/status", "active"),),
    source=(
        "AMD EPYC 9654 product page: base 2.4 GHz, max boost 3.7 GHz. Kernel admin-guide/pm/amd-pstate.rst: "
        "scaling_driver amd-pstate-epp in active mode, governors performance/powersave, amd_pstate_max_freq, "
        "amd_pstate_lowest_nonlinear_freq, EPP values, amd_pstate/status. A public `cpupower frequency-info` "
        "under amd-pstate-epp (linrunner/TLP#764, Zen 4): hardware limits 400 MHz .. max boost, transition "
        "latency 'cannot determine'. ASSUMED: cpuinfo_max_freq exactly 3.7 GHz (kernels derive it from CPPC "
        "highest perf), lowest 400 MHz and lowest non-linear 1.5 GHz on this EPYC, idle cur 1.5 GHz."
    ),
)

CPU_ZOO: tuple[CpuModel, ...] = (INTEL_PSTATE, ACPI_CPUFREQ, AMD_PSTATE_EPP)


def cpu_model(key: str) -> CpuModel:
    for row in CPU_ZOO:
        if row.key == key:
            return row
    raise KeyError(f"no cpufreq model {key!r} in the zoo; known: {', '.join(row.key for row in CPU_ZOO)}")


def facts_table() -> str:
    """The zoo as text, one block per driver, for test logs and reviews."""
    lines = []
    for row in CPU_ZOO:
        table = f", table {row.available_khz[0]}..{row.available_khz[-1]} kHz" if row.available_khz else ""
        lines += [
            f"{row.key}: {row.description}",
            f"  cpuinfo {row.cpuinfo_min_khz}..{row.cpuinfo_max_khz} kHz{table}, governors {' '.join(row.governors)} "
            f"(default {row.default_governor})",
            f"  source: {row.source}",
        ]
    return "\n".join(lines)


@dataclass
class PolicyState:
    """One cpufreq policy: its CPUs and the requests and caps the kernel aggregates."""

    number: int
    cpus: tuple[int, ...]
    min_request_khz: int
    max_request_khz: int
    governor: str
    epp: str | None
    cur_khz: int
    cap_khz: int | None = None
    cap_is_ppc: bool = False


class SysfsWrite(NamedTuple):
    """One write that reached the kernel model: the path as opened (relative to the root), what was written,
    and the errno it failed with (None when stored)."""

    path: str
    value: str
    error: int | None


_WRITABLE = frozenset({"scaling_max_freq", "scaling_min_freq", "scaling_governor", "scaling_setspeed",
                       "energy_performance_preference"})


def _cpulist(cpus: Iterable[int]) -> str:
    """The kernel's cpulist format: "0-2,5"."""
    ordered = sorted(cpus)
    parts: list[str] = []
    start = previous = None
    for cpu in [*ordered, None]:
        if start is not None and cpu == (previous or 0) + 1:
            previous = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = cpu
    return ",".join(parts)


def _os_error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


class _FailingReader(io.StringIO):
    """An opened attribute whose read(2) fails (show() returning an error)."""

    def __init__(self, code: int, path: str) -> None:
        super().__init__()
        self._error = (code, path)

    def read(self, size: int | None = -1) -> str:
        raise _os_error(*self._error)

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        raise _os_error(*self._error)


class _StoreWriter(io.StringIO):
    """An attribute opened for writing: the buffered text reaches store() at flush/close, as with write(2)."""

    def __init__(self, store: Callable[[str], None], *, binary: bool) -> None:
        super().__init__()
        self._store = store
        self._binary = binary

    def write(self, data: Any) -> int:
        text = data.decode() if isinstance(data, bytes | bytearray) else data
        super().write(text)
        return len(data)

    def flush(self) -> None:
        pending = self.getvalue()
        if pending and not self.closed:
            self.seek(0)
            self.truncate()
            self._store(pending)

    def close(self) -> None:
        if not self.closed:
            try:
                self.flush()
            finally:
                super().close()


@dataclass
class SysfsTree:
    """A built tree and the kernel model behind it. Methods change state and re-render the files."""

    root: Path
    model: CpuModel
    policies: dict[int, PolicyState]
    online: dict[int, bool]
    old_kernel: bool = False
    writes: list[SysfsWrite] = field(default_factory=list)

    @property
    def cpu_root(self) -> Path:
        return self.root / "devices" / "system" / "cpu"

    def cpufreq_dir(self, cpu: int) -> Path:
        """`cpuN/cpufreq`: the symlink the tuner reads through."""
        return self.cpu_root / f"cpu{cpu}" / "cpufreq"

    def policy_of(self, cpu: int) -> PolicyState:
        for policy in self.policies.values():
            if cpu in policy.cpus:
                return policy
        raise KeyError(f"CPU {cpu} has no policy")

    def policy_dir(self, cpu: int) -> Path:
        return self.cpu_root / "cpufreq" / f"policy{self.policy_of(cpu).number}"

    def is_active(self, policy: PolicyState) -> bool:
        return any(self.online[cpu] for cpu in policy.cpus)

    def read(self, cpu: int, name: str) -> str:
        """An attribute's rendered text without the newline, bypassing EBUSY (what the kernel would show)."""
        return _read_file(self.policy_dir(cpu) / name).rstrip("\n")

    def khz(self, cpu: int, name: str) -> int:
        return int(self.read(cpu, name))

    def limits(self, cpu: int) -> tuple[int, int]:
        """The effective (scaling_min_freq, scaling_max_freq) of the CPU's policy."""
        return self._limits(self.policy_of(cpu))

    def inactive_paths(self) -> list[Path]:
        """Attribute files that answer EBUSY under `kernel()` (every CPU of their policy is offline)."""
        paths: list[Path] = []
        for policy in self.policies.values():
            if not self.is_active(policy):
                directory = self.cpu_root / "cpufreq" / f"policy{policy.number}"
                paths += sorted(path for path in directory.iterdir() if path.is_file())
        return paths

    def snapshot(self) -> dict[str, str]:
        """Every regular file's text by path relative to the root (to assert that nothing changed)."""
        return {str(path.relative_to(self.root)): _read_file(path)
                for path in sorted(self.root.rglob("*")) if path.is_file() and not path.is_symlink()}

    # ----------------------------------------------------------------- state changes (re-render)

    def set_online(self, cpu: int, online: bool) -> None:
        if cpu == 0 and not online:
            raise ValueError("x86 cannot take CPU 0 offline (there is no cpu0/online)")
        self.online[cpu] = online
        self._render_all()

    def throttle(self, cpu: int, khz: int | None, *, ppc: bool = False) -> None:
        """Cap the CPU's policy (thermal cooling device, or the firmware _PPC limit when `ppc`); None lifts it."""
        policy = self.policy_of(cpu)
        policy.cap_khz, policy.cap_is_ppc = khz, ppc and khz is not None
        self._render(policy)

    def set_cur(self, cpu: int, khz: int) -> None:
        policy = self.policy_of(cpu)
        policy.cur_khz = khz
        self._render(policy)

    # ----------------------------------------------------------------- the kernel hook

    @contextmanager
    def kernel(self) -> Iterator[SysfsTree]:
        """Route opens of this tree's cpufreq attributes through the kernel model (see the module docstring)."""
        original = io.open

        def hooked(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            target = self._target(file) if isinstance(file, str | bytes | os.PathLike) else None
            if target is None:
                return original(file, mode, *args, **kwargs)
            shown = os.fsdecode(os.fspath(file))
            policy, name = target
            writing = any(flag in mode for flag in "wa+x")
            if not writing:
                if policy is not None and not self.is_active(policy):
                    return _FailingReader(errno.EBUSY, shown)
                return original(file, mode, *args, **kwargs)
            if name not in _WRITABLE and name != "online":
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), shown)
            return _StoreWriter(lambda text: self._store(shown, policy, name, text), binary="b" in mode)

        io.open = hooked
        builtins.open = hooked
        try:
            yield self
        finally:
            io.open = original
            builtins.open = original

    def _target(self, file: str | bytes | os.PathLike[Any]) -> tuple[PolicyState | None, str] | None:
        """(policy, attribute) for a policy file, (None, "online:N") for cpuN/online, None for anything else."""
        real = Path(os.path.realpath(os.fsdecode(os.fspath(file))))
        try:
            parts = real.relative_to(self.cpu_root.resolve()).parts
        except ValueError:
            return None
        if len(parts) == 3 and parts[0] == "cpufreq" and parts[1].startswith("policy"):
            number = int(parts[1].removeprefix("policy"))
            return (self.policies[number], parts[2]) if number in self.policies else None
        if len(parts) == 2 and parts[1] == "online" and re.fullmatch(r"cpu\d+", parts[0]):
            return None, "online"
        return None

    def _store(self, shown: str, policy: PolicyState | None, name: str, text: str) -> None:
        relative = os.path.relpath(os.path.abspath(shown), self.root)
        try:
            if name == "online":
                self._store_online(shown, text)
            else:
                assert policy is not None
                self._store_policy(policy, name, text)
        except OSError as error:
            self.writes.append(SysfsWrite(relative, text, error.errno))
            raise _os_error(error.errno or errno.EIO, shown) from None
        self.writes.append(SysfsWrite(relative, text, None))

    def _store_online(self, shown: str, text: str) -> None:
        cpu = int(Path(os.path.realpath(shown)).parent.name.removeprefix("cpu"))
        value = text.strip()
        if value not in ("0", "1"):
            raise _os_error(errno.EINVAL, shown)
        self.set_online(cpu, value == "1")

    def _store_policy(self, policy: PolicyState, name: str, text: str) -> None:
        if not self.is_active(policy):
            raise _os_error(errno.EBUSY, name)
        value = text.strip()
        if name in ("scaling_max_freq", "scaling_min_freq", "scaling_setspeed"):
            match = re.match(r"\s*(\d+)", text)  # sscanf("%u")
            if match is None:
                raise _os_error(errno.EINVAL, name)
            khz = int(match[1])
            low, high = self._limits(policy)
            if name == "scaling_setspeed":
                if policy.governor != "userspace":
                    raise _os_error(errno.EINVAL, name)
                policy.cur_khz = khz
            elif name == "scaling_max_freq":
                if self.old_kernel and khz < low:
                    raise _os_error(errno.EINVAL, name)
                policy.max_request_khz = khz
            else:
                if self.old_kernel and khz > high:
                    raise _os_error(errno.EINVAL, name)
                policy.min_request_khz = khz
        elif name == "scaling_governor":
            if value not in self.model.governors:
                raise _os_error(errno.EINVAL, name)
            policy.governor = value
        elif name == "energy_performance_preference":
            if value not in (self.model.epp_preferences or ()):
                raise _os_error(errno.EINVAL, name)
            policy.epp = value
        self._render(policy)

    # ----------------------------------------------------------------- rendering

    def _resolve(self, khz: int, *, down: bool, ceiling: int | None = None) -> int:
        table = self.model.available_khz
        if table is None:
            return khz
        if down:
            below = [entry for entry in table if entry <= khz]
            return max(below) if below else min(table)
        above = [entry for entry in table if khz <= entry <= (ceiling if ceiling is not None else khz)]
        return min(above) if above else (ceiling if ceiling is not None else min(table))

    def _limits(self, policy: PolicyState) -> tuple[int, int]:
        row = self.model
        high = policy.max_request_khz if policy.cap_khz is None else min(policy.max_request_khz, policy.cap_khz)
        high = self._resolve(min(max(high, row.cpuinfo_min_khz), row.cpuinfo_max_khz), down=True)
        low = min(max(policy.min_request_khz, row.cpuinfo_min_khz), high)
        return self._resolve(low, down=False, ceiling=high), high

    def _policy_files(self, policy: PolicyState) -> dict[str, str]:
        row = self.model
        low, high = self._limits(policy)
        online = [cpu for cpu in policy.cpus if self.online[cpu]]
        trailing = "" if row.setpolicy else " "
        files = {
            "affected_cpus": " ".join(map(str, online or policy.cpus)),
            "related_cpus": " ".join(map(str, policy.cpus)),
            "cpuinfo_min_freq": str(row.cpuinfo_min_khz),
            "cpuinfo_max_freq": str(row.cpuinfo_max_khz),
            "cpuinfo_transition_latency": row.transition_latency,
            "scaling_min_freq": str(low),
            "scaling_max_freq": str(high),
            "scaling_cur_freq": str(min(max(policy.cur_khz, low), high)),
            "scaling_driver": row.driver,
            "scaling_governor": policy.governor,
            "scaling_available_governors": " ".join(row.governors) + trailing,
            **dict(row.driver_files),
        }
        if policy.governor == "userspace":
            files["scaling_setspeed"] = str(min(max(policy.cur_khz, low), high))
        if row.available_khz is not None:
            files["scaling_available_frequencies"] = " ".join(map(str, row.available_khz)) + " "
        if row.base_khz is not None:
            files["base_frequency"] = str(row.base_khz)
        if row.bios_limit:
            files["bios_limit"] = str(policy.cap_khz if policy.cap_is_ppc and policy.cap_khz else row.cpuinfo_max_khz)
        if row.epp_preferences is not None:
            files["energy_performance_available_preferences"] = " ".join(row.epp_preferences) + " "
            files["energy_performance_preference"] = policy.epp or ""
        return files

    def _render(self, policy: PolicyState) -> None:
        directory = self.cpu_root / "cpufreq" / f"policy{policy.number}"
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in self._policy_files(policy).items():
            _write_file(directory / name, text + "\n", writable=name in _WRITABLE)

    def _render_all(self) -> None:
        cpus = sorted(self.online)
        for name, members in (("online", [cpu for cpu in cpus if self.online[cpu]]),
                              ("offline", [cpu for cpu in cpus if not self.online[cpu]]),
                              ("present", cpus), ("possible", cpus)):
            _write_file(self.cpu_root / name, _cpulist(members) + "\n", writable=False)
        for cpu in cpus[1:]:
            _write_file(self.cpu_root / f"cpu{cpu}" / "online", ("1" if self.online[cpu] else "0") + "\n",
                        writable=True)
        for policy in self.policies.values():
            self._render(policy)


def _read_file(path: Path) -> str:
    """Read through os.open so that the zoo's own reads never meet the kernel hook."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(descriptor, 65536):
            chunks.append(chunk)
    finally:
        os.close(descriptor)
    return b"".join(chunks).decode()


def _write_file(path: Path, text: str, *, writable: bool) -> None:
    """Write through os.open so that rendering never meets the kernel hook; modes as sysfs shows them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.chmod(0o644)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)
    path.chmod(0o644 if writable else 0o444)


def build(root: Path, model_key: str = "intel_pstate", *, cpus: int = 4, shared: int = 1,
          offline: Iterable[int] = (), throttled: Mapping[int, int] | None = None, ppc_limited: bool = False,
          old_kernel: bool = False, governor: str | None = None, cur_khz: int | None = None) -> SysfsTree:
    """A tree for `cpus` CPUs of one model under `root`. `shared` CPUs in a row share one policy; `offline` CPUs
    start offline; `throttled` caps CPUs' policies (kHz) before the tuner first looks (a thermal cap, or the
    firmware _PPC limit with `ppc_limited`); `old_kernel` refuses max < min with EINVAL (pre-5.4)."""
    row = cpu_model(model_key)
    if shared < 1 or cpus % shared:
        raise ValueError(f"{cpus} CPUs cannot be split into policies of {shared}")
    tree = SysfsTree(root=root, model=row, policies={}, online=dict.fromkeys(range(cpus), True), old_kernel=old_kernel)
    for first in range(0, cpus, shared):
        tree.policies[first] = PolicyState(
            number=first, cpus=tuple(range(first, first + shared)), min_request_khz=row.cpuinfo_min_khz,
            max_request_khz=row.cpuinfo_max_khz, governor=governor or row.default_governor, epp=row.default_epp,
            cur_khz=cur_khz or row.idle_cur_khz)
    for cpu in offline:
        if cpu == 0:
            raise ValueError("x86 cannot take CPU 0 offline")
        tree.online[cpu] = False
    for cpu, khz in (throttled or {}).items():
        policy = tree.policy_of(cpu)
        policy.cap_khz, policy.cap_is_ppc = khz, ppc_limited
    tree._render_all()
    for cpu in range(cpus):
        link = tree.cpufreq_dir(cpu)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..") / "cpufreq" / f"policy{tree.policy_of(cpu).number}")
    for name, text in row.global_files:
        _write_file(tree.cpu_root / name, text + "\n", writable=True)
    return tree


def intel_pstate(root: Path, cpus: int = 4, **kwargs: Any) -> SysfsTree:
    """intel_pstate in active mode: one policy per CPU, governor powersave, no frequency table."""
    return build(root, "intel_pstate", cpus=cpus, **kwargs)


def acpi_cpufreq_shared(root: Path, cpus: int = 4, shared: int = 2, **kwargs: Any) -> SysfsTree:
    """acpi-cpufreq with `shared` CPUs per policy (cpu0/cpufreq and cpu1/cpufreq -> ../cpufreq/policy0)."""
    return build(root, "acpi-cpufreq", cpus=cpus, shared=shared, **kwargs)


def amd_pstate_epp(root: Path, cpus: int = 4, **kwargs: Any) -> SysfsTree:
    """amd-pstate in active (EPP) mode: one policy per CPU, governor powersave."""
    return build(root, "amd-pstate-epp", cpus=cpus, **kwargs)


__all__ = [
    "ACPI_CPUFREQ", "AMD_PSTATE_EPP", "CPU_ZOO", "INTEL_PSTATE", "CpuModel", "PolicyState", "SysfsTree",
    "SysfsWrite", "acpi_cpufreq_shared", "amd_pstate_epp", "build", "cpu_model", "facts_table", "intel_pstate",
]
