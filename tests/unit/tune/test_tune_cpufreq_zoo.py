"""The cpufreq side on every tree of the device zoo (tests/support/sysfs_zoo.py), through the kernel model: CPUs
that share a policy are recorded and restored once, originals are the hardware's and not a passing throttle,
offline CPUs are Unsupported, and a floor above the target is lowered first and put back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support.clock import FakeClock
from support.sysfs_zoo import SysfsTree, acpi_cpufreq_shared, amd_pstate_epp, intel_pstate

from climatik.api import CpuFrequency
from climatik.api.nodefrequencies import APPLIED, UNSUPPORTED
from climatik.tune.applier import Applier
from climatik.tune.backends.cpufreq import CpufreqBackend
from climatik.tune.state import StateStore

TREES: dict[str, Callable[[Path], SysfsTree]] = {
    "intel_pstate": lambda root: intel_pstate(root, cpus=4),
    "acpi-cpufreq-shared-2": lambda root: acpi_cpufreq_shared(root, cpus=4, shared=2),
    "acpi-cpufreq-shared-4": lambda root: acpi_cpufreq_shared(root, cpus=4, shared=4),
    "amd-pstate-epp": lambda root: amd_pstate_epp(root, cpus=4),
}


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "tuner-state.json"


def applier_on(tree: SysfsTree, state_path: Path, clock: FakeClock | None = None, **backend: str) -> Applier:
    return Applier(state=StateStore(state_path), clock=clock or FakeClock(),
                   cpu_backend=CpufreqBackend(root=tree.root, **backend))


def maxima(tree: SysfsTree) -> list[int]:
    return [tree.limits(cpu)[1] for cpu in sorted(tree.online)]


@pytest.fixture(params=list(TREES), ids=list(TREES))
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SysfsTree]:
    built = TREES[request.param](tmp_path / "sys")
    with built.kernel():
        yield built


def test_every_tree_is_capped_and_restored_to_its_hardware_maximum(tree: SysfsTree, state_path: Path) -> None:
    applier = applier_on(tree, state_path)
    hardware = tree.model.cpuinfo_max_khz

    report = applier.apply([], [CpuFrequency(cpu, 2000) for cpu in range(4)])
    capped = maxima(tree)
    recorded = json.loads(state_path.read_text())["devices"]["cpu"]
    applier.restore_all()

    assert [entry.status for entry in report.cpus] == [APPLIED] * 4
    assert capped == [2_000_000] * 4
    assert set(recorded) == {str(policy) for policy in tree.policies}, "one record per policy"
    assert set(recorded.values()) <= {hardware, None}
    assert maxima(tree) == [hardware] * 4


def test_cpus_of_one_policy_resolve_to_the_lowest_target(tmp_path: Path, state_path: Path) -> None:
    tree = acpi_cpufreq_shared(tmp_path / "sys", cpus=2, shared=2)
    clock = FakeClock()
    with tree.kernel():
        applier = applier_on(tree, state_path, clock)
        report = applier.apply([], [CpuFrequency(0, 2000), CpuFrequency(1, 1500)])
        writes = len(tree.writes)
        clock.advance(61)
        again = applier.apply([], [CpuFrequency(0, 2000), CpuFrequency(1, 1500)])

    assert maxima(tree) == [1_500_000, 1_500_000]
    assert [(entry.status, entry.target_frequency) for entry in report.cpus] == [(APPLIED, 1500)] * 2
    assert report.cpus[0].message is not None and "share one cpufreq policy" in report.cpus[0].message
    assert len(tree.writes) == writes, "the two entries do not fight at every verification"
    assert [entry.status for entry in again.cpus] == [APPLIED, APPLIED]


def test_a_state_file_that_recorded_each_cpu_of_a_policy_restores_the_policy_uncapped(
    tmp_path: Path, state_path: Path
) -> None:
    # What an earlier tuner wrote: CPU 1's "original" was read after CPU 0's write had capped their policy.
    tree = acpi_cpufreq_shared(tmp_path / "sys", cpus=2, shared=2)
    state_path.parent.mkdir(parents=True)
    state_path.write_text(json.dumps({"version": 1, "devices": {"cpu": {"0": 2_401_000, "1": 2_000_000}}}))
    with tree.kernel():
        (tree.cpufreq_dir(0) / "scaling_max_freq").write_text("2000000\n")
        applier_on(tree, state_path).restore_all()

    assert maxima(tree) == [2_401_000, 2_401_000]
    assert json.loads(state_path.read_text())["devices"]["cpu"] == {}


def test_a_throttled_limit_is_not_taken_for_the_original(tmp_path: Path, state_path: Path) -> None:
    tree = intel_pstate(tmp_path / "sys", cpus=2, throttled={1: 2_000_000})
    with tree.kernel(), capture_logs() as logs:
        applier = applier_on(tree, state_path)
        applier.apply([], [CpuFrequency(1, 1500)])
        tree.throttle(1, None)
        applier.restore_all()

    assert tree.limits(1)[1] == 3_800_000
    found = [log for log in logs if log["event"] == "cpu_limit_below_hardware_max"]
    assert found and found[0]["limit_khz"] == 2_000_000 and found[0]["hardware_max_khz"] == 3_800_000


def test_the_limit_found_is_restored_when_the_site_asks_for_it(tmp_path: Path, state_path: Path) -> None:
    tree = intel_pstate(tmp_path / "sys", cpus=2)
    with tree.kernel():
        (tree.cpufreq_dir(1) / "scaling_max_freq").write_text("3000000\n")  # a site's own tuning
        applier = applier_on(tree, state_path, original="found")
        applier.apply([], [CpuFrequency(1, 1500)])
        applier.restore_all()

    assert tree.limits(1)[1] == 3_000_000


def test_an_offline_cpu_is_unsupported_and_not_retried(tmp_path: Path, state_path: Path) -> None:
    tree = intel_pstate(tmp_path / "sys", cpus=4, offline=[3])
    clock = FakeClock()
    with tree.kernel():
        applier = applier_on(tree, state_path, clock)
        first = applier.apply([], [CpuFrequency(2, 2000), CpuFrequency(3, 2000)])
        clock.advance(61)
        second = applier.apply([], [CpuFrequency(2, 2000), CpuFrequency(3, 2000)])

    for report in (first, second):
        assert [entry.status for entry in report.cpus] == [APPLIED, UNSUPPORTED]
        assert report.cpus[1].message is not None and "offline" in report.cpus[1].message
    assert [cpu.cpu_id for cpu in first.inventory.cpus or []] == [0, 1, 2]
    assert not [write for write in tree.writes if "cpu3" in write.path or "policy3" in write.path]
    assert "3" not in json.loads(state_path.read_text())["devices"]["cpu"]


def test_a_target_under_the_floor_lowers_the_floor_first_and_restores_it(tmp_path: Path, state_path: Path) -> None:
    tree = intel_pstate(tmp_path / "sys", cpus=1, old_kernel=True)  # pre-5.4: max < min is EINVAL
    with tree.kernel():
        (tree.cpufreq_dir(0) / "scaling_min_freq").write_text("2000000\n")
        applier = applier_on(tree, state_path)
        report = applier.apply([], [CpuFrequency(0, 1500)])
        capped = tree.limits(0)
        applier.restore_all()

    assert report.cpus[0].status == APPLIED
    assert capped == (1_500_000, 1_500_000)
    assert tree.limits(0) == (2_000_000, 3_800_000)
    assert not [write for write in tree.writes if write.error is not None]
