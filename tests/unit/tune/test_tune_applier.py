"""The applier: targets reach the hardware, removed entries and crashed runs are restored, dry runs touch nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support.clock import FakeClock
from tune_doubles import GPU_A, GPU_B, FakeGpuBackend, make_cpu, read_khz

from climatik.api import CpuFrequency, GpuFrequency
from climatik.api.nodefrequencies import APPLIED, FAILED, PENDING, UNSUPPORTED
from climatik.tune.applier import Applier
from climatik.tune.backends.cpufreq import CpufreqBackend
from climatik.tune.state import StateStore

GPU_GONE = "GPU-5fd4c8a1-0000-4000-8000-0000000000ff"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gpus() -> FakeGpuBackend:
    return FakeGpuBackend([GPU_A, GPU_B])


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    for cpu_id in range(4):
        make_cpu(root, cpu_id, scaling_max_khz=3_000_000)
    return root


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "tuner-state.json"


def new_applier(state_path: Path, clock: FakeClock, gpus: FakeGpuBackend, sysfs: Path) -> Applier:
    # The CPUs start under their hardware maximum (3.5 GHz), as a site's own limit: restored as found.
    return Applier(state=StateStore(state_path), clock=clock, gpu_backend=gpus,
                   cpu_backend=CpufreqBackend(root=sysfs, original="found"), verify_interval_s=60.0)


@pytest.fixture
def applier(state_path: Path, clock: FakeClock, gpus: FakeGpuBackend, sysfs: Path) -> Applier:
    return new_applier(state_path, clock, gpus, sysfs)


def cpufreq(sysfs: Path, cpu_id: int) -> Path:
    return sysfs / "devices" / "system" / "cpu" / f"cpu{cpu_id}" / "cpufreq"


def test_targets_are_applied_and_reported(applier: Applier, gpus: FakeGpuBackend, sysfs: Path) -> None:
    report = applier.apply([GpuFrequency(GPU_A, 1500), GpuFrequency(GPU_B, 1507)], [CpuFrequency(2, 2400)])

    assert gpus.locked == {GPU_A: 1500, GPU_B: 1500}
    assert read_khz(cpufreq(sysfs, 2)) == 2_400_000
    assert [(s.gpu_id, s.status, s.target_frequency, s.current_frequency) for s in report.gpus] == [
        (GPU_A, APPLIED, 1500, 1500), (GPU_B, APPLIED, 1500, 1500)]
    assert report.gpus[1].message is not None and "snapped down to 1500 MHz" in report.gpus[1].message
    assert [(s.cpu_id, s.status, s.target_frequency) for s in report.cpus] == [(2, APPLIED, 2400)]
    assert (report.gpu_count, report.applied_count, report.pending_count) == (2, 3, 0)
    assert report.inventory.backend == "fake"
    assert [cpu.cpu_id for cpu in report.inventory.cpus or []] == [0, 1, 2, 3]


def test_an_unknown_gpu_is_unsupported_and_the_rest_still_applies(applier: Applier, gpus: FakeGpuBackend) -> None:
    report = applier.apply([GpuFrequency(GPU_GONE, 1500), GpuFrequency(GPU_A, 1200)])

    assert report.gpus[0].status == UNSUPPORTED
    assert report.gpus[0].message == f"no GPU {GPU_GONE} on this node"
    assert report.gpus[1].status == APPLIED
    assert gpus.locked[GPU_A] == 1200
    assert report.unsupported_count == 1


def test_removed_entries_are_restored(applier: Applier, gpus: FakeGpuBackend, sysfs: Path,
                                      state_path: Path) -> None:
    applier.apply([GpuFrequency(GPU_A, 1500), GpuFrequency(GPU_B, 1200)], [CpuFrequency(1, 2000)])

    report = applier.apply([GpuFrequency(GPU_A, 1500)])

    assert gpus.locked == {GPU_A: 1500, GPU_B: None}
    assert read_khz(cpufreq(sysfs, 1)) == 3_000_000
    assert sorted((r.kind, r.key, r.result.status) for r in report.restored) == [
        ("cpu", "1", APPLIED), ("gpu", GPU_B, APPLIED)]
    assert StateStore(state_path).entries("gpu") == {GPU_A: None}
    assert StateStore(state_path).entries("cpu") == {}


def test_restore_all_puts_everything_back(applier: Applier, gpus: FakeGpuBackend, sysfs: Path,
                                          state_path: Path) -> None:
    applier.apply([GpuFrequency(GPU_A, 1500)], [CpuFrequency(0, 1000), CpuFrequency(3, 1800)])

    restored = applier.restore_all()

    assert len(restored) == 3
    assert gpus.locked == {GPU_A: None, GPU_B: None}
    assert [read_khz(cpufreq(sysfs, cpu_id)) for cpu_id in range(4)] == [3_000_000] * 4
    assert StateStore(state_path).entries("gpu") == {} and StateStore(state_path).entries("cpu") == {}


def test_a_new_run_restores_what_a_crashed_run_changed(state_path: Path, clock: FakeClock, gpus: FakeGpuBackend,
                                                        sysfs: Path) -> None:
    crashed = new_applier(state_path, clock, gpus, sysfs)
    crashed.apply([GpuFrequency(GPU_A, 1500), GpuFrequency(GPU_B, 900)], [CpuFrequency(2, 1200)])
    crashed.apply([GpuFrequency(GPU_A, 1400), GpuFrequency(GPU_B, 900)], [CpuFrequency(2, 1000)])
    del crashed  # no restore: the process died

    restarted = new_applier(state_path, clock, gpus, sysfs)
    report = restarted.apply([GpuFrequency(GPU_A, 1305)])

    assert gpus.locked == {GPU_A: 1305, GPU_B: None}
    assert read_khz(cpufreq(sysfs, 2)) == 3_000_000  # the true original, not the crashed run's 1200 MHz
    assert {r.key for r in report.restored} == {GPU_B, "2"}


def test_deleting_the_object_after_a_restart_restores_the_crashed_runs_changes(
    state_path: Path, clock: FakeClock, gpus: FakeGpuBackend, sysfs: Path
) -> None:
    new_applier(state_path, clock, gpus, sysfs).apply([GpuFrequency(GPU_A, 900)], [CpuFrequency(0, 1000)])

    restored = new_applier(state_path, clock, gpus, sysfs).restore_all()

    assert {(r.kind, r.key) for r in restored} == {("gpu", GPU_A), ("cpu", "0")}
    assert gpus.locked == {GPU_A: None, GPU_B: None}
    assert read_khz(cpufreq(sysfs, 0)) == 3_000_000
    assert json.loads(state_path.read_text())["devices"] == {"cpu": {}, "gpu": {}}


def test_a_corrupt_state_file_falls_back_to_hardware_defaults(state_path: Path, clock: FakeClock,
                                                              gpus: FakeGpuBackend, sysfs: Path) -> None:
    # Left behind by a run whose state file was lost: its settings are all anyone can read now.
    gpus.locked[GPU_B] = 600
    for cpu_id in (1, 3):
        (cpufreq(sysfs, cpu_id) / "scaling_max_freq").write_text("1200000\n")
    state_path.write_text("{truncated")

    with capture_logs() as logs:
        applier = new_applier(state_path, clock, gpus, sysfs)
        report = applier.apply([GpuFrequency(GPU_A, 1500)], [CpuFrequency(3, 2000)])

    assert "state_file_corrupt" in [log["event"] for log in logs]
    assert gpus.locked == {GPU_A: 1500, GPU_B: None}
    assert [read_khz(cpufreq(sysfs, cpu_id)) for cpu_id in range(4)] == [3_500_000, 3_500_000, 3_500_000,
                                                                          2_000_000]
    assert report.applied_count == 2

    applier.apply([])

    # CPU 3's true original is unknown, so it goes back to the hardware maximum, not to the leftover.
    assert read_khz(cpufreq(sysfs, 3)) == 3_500_000
    assert gpus.locked == {GPU_A: None, GPU_B: None}


def test_dry_run_reports_what_it_would_do_and_touches_nothing(applier: Applier, gpus: FakeGpuBackend,
                                                              sysfs: Path, state_path: Path) -> None:
    report = applier.apply([GpuFrequency(GPU_A, 1507), GpuFrequency(GPU_GONE, 1000)], [CpuFrequency(0, 9000)],
                           dry_run=True)

    assert gpus.changes() == []
    assert not state_path.exists()
    assert read_khz(cpufreq(sysfs, 0)) == 3_000_000
    assert report.dry_run
    assert [(s.status, s.target_frequency) for s in report.gpus] == [(PENDING, 1500), (UNSUPPORTED, 1000)]
    assert report.gpus[0].message is not None and report.gpus[0].message.startswith("dry-run: would set 1500 MHz")
    assert (report.cpus[0].status, report.cpus[0].target_frequency) == (PENDING, 3500)


def test_dry_run_does_not_restore_removed_entries(applier: Applier, gpus: FakeGpuBackend) -> None:
    applier.apply([GpuFrequency(GPU_A, 1500)])

    report = applier.apply([], dry_run=True)

    assert gpus.locked[GPU_A] == 1500
    assert report.restored == []


def test_the_same_spec_again_makes_no_hardware_calls(applier: Applier, gpus: FakeGpuBackend,
                                                     clock: FakeClock) -> None:
    spec = [GpuFrequency(GPU_A, 1500), GpuFrequency(GPU_B, 1200)]
    first = applier.apply(spec)
    gpus.calls.clear()

    clock.advance(30)
    again = applier.apply(spec)

    assert gpus.calls == []
    assert again.gpus == first.gpus


def test_a_bound_is_verified_periodically_without_being_set_again(applier: Applier, gpus: FakeGpuBackend,
                                                                   clock: FakeClock) -> None:
    spec = [GpuFrequency(GPU_A, 1500)]
    applier.apply(spec)
    gpus.calls.clear()

    clock.advance(61)
    report = applier.apply(spec)

    assert gpus.changes() == []
    assert ("current_clock", GPU_A) in gpus.calls
    assert report.gpus[0].status == APPLIED


def test_a_lost_bound_is_set_again_at_the_next_verification(applier: Applier, gpus: FakeGpuBackend,
                                                            clock: FakeClock) -> None:
    spec = [GpuFrequency(GPU_A, 1500)]
    applier.apply(spec)
    gpus.locked[GPU_A] = None  # e.g. a driver reload cleared it

    clock.advance(61)
    report = applier.apply(spec)

    assert gpus.locked[GPU_A] == 1500
    assert report.gpus[0].current_frequency == 1500


def test_a_changed_target_is_applied_at_once(applier: Applier, gpus: FakeGpuBackend) -> None:
    applier.apply([GpuFrequency(GPU_A, 1500)])

    report = applier.apply([GpuFrequency(GPU_A, 1000)])

    assert gpus.locked[GPU_A] == 990
    assert report.gpus[0].target_frequency == 990


def test_nothing_changes_when_the_state_file_cannot_record_it(tmp_path: Path, clock: FakeClock,
                                                              gpus: FakeGpuBackend, sysfs: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    applier = new_applier(blocker / "tuner-state.json", clock, gpus, sysfs)

    report = applier.apply([GpuFrequency(GPU_A, 1500)], [CpuFrequency(0, 2000)])

    assert gpus.changes() == []
    assert read_khz(cpufreq(sysfs, 0)) == 3_000_000
    assert (report.gpus[0].status, report.cpus[0].status) == (FAILED, FAILED)
    assert report.gpus[0].message is not None and report.gpus[0].message.startswith("left unchanged")


def test_entries_sharing_a_device_get_the_lowest_target(applier: Applier, gpus: FakeGpuBackend) -> None:
    report = applier.apply([GpuFrequency(GPU_A, 1500, policy="ns/serving"),
                            GpuFrequency(GPU_A, 1200, policy="ns/training")])

    assert gpus.locked[GPU_A] == 1200
    assert [entry.target_frequency for entry in report.gpus] == [1200, 1200]
    assert report.gpus[0].message == "2 entries name this device; the lowest target applies"


def test_an_unreachable_gpu_backend_fails_entries_with_its_reason(applier: Applier, gpus: FakeGpuBackend) -> None:
    gpus.unavailable = "NVML cannot start: Driver Not Loaded"

    report = applier.apply([GpuFrequency(GPU_A, 1500)], [CpuFrequency(0, 2000)])
    gpus.unavailable = None
    recovered = applier.apply([GpuFrequency(GPU_A, 1500)], [CpuFrequency(0, 2000)])

    assert (report.gpus[0].status, report.gpus[0].message) == (FAILED, "NVML cannot start: Driver Not Loaded")
    assert report.cpus[0].status == APPLIED
    assert recovered.gpus[0].status == APPLIED


def test_a_node_without_a_cpu_backend_reports_cpu_entries_unsupported(state_path: Path, clock: FakeClock,
                                                                      gpus: FakeGpuBackend) -> None:
    applier = Applier(state=StateStore(state_path), clock=clock, gpu_backend=gpus)

    report = applier.apply([], [CpuFrequency(0, 2000)])

    assert report.cpus[0].status == UNSUPPORTED
    assert report.inventory.cpus is None


def test_inventory_is_read_again_only_when_old(applier: Applier, gpus: FakeGpuBackend, clock: FakeClock) -> None:
    applier.inventory()
    applier.apply([GpuFrequency(GPU_A, 1500)])
    clock.advance(299)
    applier.inventory()
    assert [call for call in gpus.calls if call[0] == "inventory"] == [("inventory", None)]

    clock.advance(1)
    applier.inventory()
    applier.inventory(refresh=True)
    assert len([call for call in gpus.calls if call[0] == "inventory"]) == 3
