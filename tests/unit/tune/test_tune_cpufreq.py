"""The cpufreq backend against a sysfs-shaped tree: MHz in the API, kHz on disk, originals put back."""

from __future__ import annotations

from pathlib import Path

import pytest
from tune_doubles import make_cpu, read_khz

from climatik.api import CpuInventory
from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED
from climatik.tune.backends.base import BackendUnavailableError
from climatik.tune.backends.cpufreq import CpufreqBackend


@pytest.fixture
def backend(tmp_path: Path) -> CpufreqBackend:
    return CpufreqBackend(root=tmp_path)


def test_inventory_lists_cpus_with_cpufreq_in_mhz(tmp_path: Path, backend: CpufreqBackend) -> None:
    make_cpu(tmp_path, 10, governor="performance")
    make_cpu(tmp_path, 2, min_khz=400_000, max_khz=2_600_500, driver="acpi-cpufreq")
    cpus_dir = tmp_path / "devices" / "system" / "cpu"
    (cpus_dir / "cpu3").mkdir()  # offline or without cpufreq
    (cpus_dir / "cpufreq").mkdir()
    (cpus_dir / "cpuidle").mkdir()

    assert backend.inventory() == [
        CpuInventory(cpu_id=2, min_frequency=400, max_frequency=2600, driver="acpi-cpufreq", governor="powersave"),
        CpuInventory(cpu_id=10, min_frequency=800, max_frequency=3500, driver="intel_pstate",
                     governor="performance"),
    ]


def test_a_missing_cpu_directory_makes_the_backend_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="no CPU directory"):
        CpufreqBackend(root=tmp_path / "nowhere").inventory()


def test_apply_writes_the_bound_in_khz(tmp_path: Path, backend: CpufreqBackend) -> None:
    cpu0 = make_cpu(tmp_path, 0)

    result = backend.apply(0, 2400)

    assert read_khz(cpu0) == 2_400_000
    assert result.status == APPLIED
    assert (result.requested_mhz, result.applied_mhz, result.current_mhz) == (2400, 2400, 2100)
    assert backend.limit_khz(0) == 2_400_000


@pytest.mark.parametrize(("requested", "written", "says"),
                         [(5000, 3_500_000, "above the maximum"), (100, 800_000, "below the minimum")])
def test_targets_outside_cpuinfo_limits_are_clamped(
    tmp_path: Path, backend: CpufreqBackend, requested: int, written: int, says: str
) -> None:
    cpu1 = make_cpu(tmp_path, 1)

    result = backend.apply(1, requested)

    assert read_khz(cpu1) == written
    assert result.status == APPLIED
    assert result.message is not None and says in result.message


def test_reset_restores_the_value_found_before_the_first_change_when_asked_to(tmp_path: Path) -> None:
    backend = CpufreqBackend(root=tmp_path, original="found")
    cpu0 = make_cpu(tmp_path, 0, scaling_max_khz=3_000_000)
    backend.apply(0, 2000)
    backend.apply(0, 1500)

    result = backend.reset(0)

    assert read_khz(cpu0) == 3_000_000
    assert result.status == APPLIED


def test_reset_prefers_the_original_it_is_given(tmp_path: Path, backend: CpufreqBackend) -> None:
    cpu0 = make_cpu(tmp_path, 0, scaling_max_khz=1_000_000)

    backend.reset(0, 3_200_000)

    assert read_khz(cpu0) == 3_200_000


def test_reset_without_a_known_original_restores_the_hardware_maximum(tmp_path: Path,
                                                                       backend: CpufreqBackend) -> None:
    cpu0 = make_cpu(tmp_path, 0, scaling_max_khz=1_000_000)
    backend.apply(0, 900)  # by default the limit found (1 GHz, perhaps a passing throttle) is not the original

    backend.reset(0)

    assert read_khz(cpu0) == 3_500_000


def test_a_missing_cpu_is_unsupported_with_its_path(tmp_path: Path, backend: CpufreqBackend) -> None:
    make_cpu(tmp_path, 0)
    (tmp_path / "devices" / "system" / "cpu" / "cpu1").mkdir()

    for cpu_id in (1, 7):
        result = backend.apply(cpu_id, 2000)
        assert result.status == UNSUPPORTED
        assert result.message is not None
        assert str(tmp_path / "devices" / "system" / "cpu" / f"cpu{cpu_id}" / "cpufreq") in result.message


def test_an_unusable_scaling_max_freq_fails_with_path_and_reason(tmp_path: Path, backend: CpufreqBackend) -> None:
    cpu0 = make_cpu(tmp_path, 0)
    # Tests run as root, which ignores file modes; a directory in the file's place fails for root too.
    (cpu0 / "scaling_max_freq").unlink()
    (cpu0 / "scaling_max_freq").mkdir()

    result = backend.apply(0, 2000)

    assert result.status == FAILED
    assert result.message is not None
    assert str(cpu0 / "scaling_max_freq") in result.message and "Is a directory" in result.message


def test_a_failed_restore_is_reported_and_not_forgotten(tmp_path: Path) -> None:
    backend = CpufreqBackend(root=tmp_path, original="found")
    cpu0 = make_cpu(tmp_path, 0, scaling_max_khz=3_000_000)
    backend.apply(0, 2000)
    (cpu0 / "scaling_max_freq").unlink()
    (cpu0 / "scaling_max_freq").mkdir()

    failed = backend.reset(0)
    (cpu0 / "scaling_max_freq").rmdir()
    (cpu0 / "scaling_max_freq").write_text("2000000\n")
    retried = backend.reset(0)

    assert failed.status == FAILED
    assert failed.message is not None and "cannot write" in failed.message
    assert retried.status == APPLIED
    assert read_khz(cpu0) == 3_000_000

