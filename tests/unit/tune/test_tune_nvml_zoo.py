"""The NVML backend and the applier on every GPU of the device zoo (tests/support/nvml_zoo.py): steps from the
supported memory clocks, NVML's errors read right, MIG GPUs left alone, an administrator's baseline kept, the
bound verified and re-asserted, and NVML's session recovered and released so that drivers can be maintained."""

from __future__ import annotations

from collections.abc import Callable

import pynvml
import pytest
from structlog.testing import capture_logs
from support.clock import FakeClock
from support.nvml_zoo import ZOO, FakeNvml, GpuModel, device

from climatik.api import GpuFrequency
from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED
from climatik.tune.applier import Applier, ApplyReport, desired_status
from climatik.tune.backends.nvml import NvmlGpuBackend
from climatik.tune.state import StateStore

CAPPABLE = [row for row in ZOO if not row.mig_enabled]


def key(row: GpuModel) -> str:
    return str(row.key)


def middle_step(row: GpuModel) -> int:
    """A supported step near three quarters of the top clock: far above every GDDR idle list (<= 645 MHz)."""
    return int(next(step for step in row.top_steps if step <= row.max_sm_mhz * 3 // 4))


def applier_on(nvml: FakeNvml, clock: FakeClock, *, expected: Callable[[], int | None] | None = None) -> Applier:
    """An applier over the fake's GPUs; `expected` answers the node's nvidia.com/gpu.count label."""
    return Applier(state=StateStore(None), clock=clock, gpu_backend=NvmlGpuBackend(nvml=nvml),
                   gpu_expected_count=expected)


def condition(report: ApplyReport, type: str) -> dict[str, str]:
    status = desired_status(None, report, generation=1, now=FakeClock().wall())
    assert status is not None
    return next(c for c in status["conditions"] if c["type"] == type)  # type: ignore[no-any-return]


# ------------------------------------------------------------------- steps come from the supported memory clocks


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
@pytest.mark.parametrize("row", CAPPABLE, ids=key)
def test_inventory_lists_the_steps_of_the_top_memory_clock(row: GpuModel, busy: bool) -> None:
    nvml = FakeNvml.node(row.key)
    if busy:
        nvml.load(0)

    (gpu,) = NvmlGpuBackend(nvml=nvml).inventory()

    assert gpu.supported_frequencies == sorted(row.top_steps)
    assert (gpu.min_frequency, gpu.max_frequency) == (min(row.top_steps), row.max_sm_mhz)


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
@pytest.mark.parametrize("row", CAPPABLE, ids=key)
def test_a_target_is_locked_as_asked_whatever_the_memory_clock_reads(row: GpuModel, busy: bool) -> None:
    nvml = FakeNvml.node(row.key)
    if busy:
        nvml.load(0)
    target = middle_step(row)

    result = NvmlGpuBackend(nvml=nvml).apply(nvml.uuids()[0], target)

    assert (result.status, result.applied_mhz, result.message) == (APPLIED, target, None)
    assert nvml.locked(0) == (min(row.top_steps), target)


# ----------------------------------------------------------------------------------------- NVML's error codes


def test_not_found_from_nvml_is_a_failure_with_its_message_not_unsupported() -> None:
    nvml = FakeNvml.node("h100-sxm")
    nvml.fail("nvmlDeviceSetGpuLockedClocks", pynvml.NVML_ERROR_NOT_FOUND)

    result = NvmlGpuBackend(nvml=nvml).apply(nvml.uuids()[0], 1500)

    assert result.status == FAILED
    assert result.message is not None and "Not Found" in result.message


def test_not_supported_from_nvml_is_unsupported() -> None:
    nvml = FakeNvml.node("t4")
    nvml.fail("nvmlDeviceSetGpuLockedClocks", pynvml.NVML_ERROR_NOT_SUPPORTED)

    result = NvmlGpuBackend(nvml=nvml).apply(nvml.uuids()[0], 1200)

    assert result.status == UNSUPPORTED
    assert result.message is not None and "Not Supported" in result.message


# ------------------------------------------------------------------------------------ every member of the zoo


@pytest.mark.parametrize("row", ZOO, ids=key)
def test_every_zoo_gpu_is_capped_and_released_or_left_alone_under_mig(row: GpuModel) -> None:
    clock = FakeClock()
    nvml = FakeNvml.node(row.key, count=2)
    nvml.load(0)
    nvml.load(1)
    applier = applier_on(nvml, clock)
    target = middle_step(row)

    report = applier.apply([GpuFrequency(uuid, target) for uuid in nvml.uuids()])
    applier.restore_all()

    if row.mig_enabled:
        assert [entry.status for entry in report.gpus] == [UNSUPPORTED, UNSUPPORTED]
        assert all("MIG" in (entry.message or "") for entry in report.gpus)
        assert nvml.writes() == []
        assert (condition(report, "GpusCappable")["status"], condition(report, "GpusCappable")["reason"]) == (
            "False", "MigEnabled")
    else:
        assert [(entry.status, entry.target_frequency) for entry in report.gpus] == [(APPLIED, target)] * 2
        assert [entry.current_frequency for entry in report.gpus] == [target, target]
        assert [nvml.locked(i) for i in range(2)] == [None, None]
        assert condition(report, "GpusCappable")["status"] == "True"


# ------------------------------------------------------------------------------------------------------- MIG


def test_a_mig_enabled_gpu_is_never_locked_even_where_nvml_would_accept() -> None:
    clock = FakeClock()
    nvml = FakeNvml([device("a100-sxm4-80gb-mig", 0, mig_locks_supported=True), device("a100-sxm4-80gb", 1)])
    mig, whole = nvml.uuids()
    applier = applier_on(nvml, clock)

    report = applier.apply([GpuFrequency(mig, 1200), GpuFrequency(whole, 1200)])

    assert (report.gpus[0].status, report.gpus[1].status) == (UNSUPPORTED, APPLIED)
    assert report.gpus[0].message is not None and "MIG mode is enabled" in report.gpus[0].message
    assert (nvml.locked(0), nvml.locked(1)) == (None, (210, 1200))
    cappable = condition(report, "GpusCappable")
    assert (cappable["status"], cappable["reason"]) == ("False", "MigEnabled")
    assert mig in cappable["message"] and whole not in cappable["message"]
    listed = report.inventory.gpu(mig)
    assert listed is not None and listed.model == "NVIDIA A100-SXM4-80GB"
    assert (listed.min_frequency, listed.max_frequency, listed.supported_frequencies) == (None, None, None)


# ------------------------------------------------------------------------------------------- GPU visibility


def test_a_node_whose_runtime_hides_the_gpus_says_nvml_sees_none() -> None:
    clock = FakeClock()
    applier = applier_on(FakeNvml([]), clock, expected=lambda: 4)

    report = applier.apply([GpuFrequency("GPU-5fd4c8a1-0000-4000-8000-00000000000a", 1500)])

    (entry,) = report.gpus
    assert entry.status == FAILED
    assert entry.message is not None
    assert "NVML sees no GPUs" in entry.message and "NVIDIA_VISIBLE_DEVICES" in entry.message
    assert "nvidia.com/gpu.count label says 4" in entry.message
    assert not entry.message.startswith("no GPU")
    assert (condition(report, "GpusCappable")["status"], condition(report, "GpusCappable")["reason"]) == (
        "False", "NoGpusVisible")


def test_fewer_gpus_than_the_node_label_counts_are_reported_as_hidden() -> None:
    clock = FakeClock()
    nvml = FakeNvml.node("h100-sxm", count=2)
    applier = applier_on(nvml, clock, expected=lambda: 8)
    elsewhere = "GPU-5fd4c8a1-0000-4000-8000-0000000000ff"

    report = applier.apply([GpuFrequency(nvml.uuids()[0], 1500), GpuFrequency(elsewhere, 1500)])

    assert report.gpus[0].status == APPLIED
    assert report.gpus[1].status == UNSUPPORTED
    assert report.gpus[1].message is not None and "NVML sees 2 GPUs" in report.gpus[1].message
    assert "nvidia.com/gpu.count label says 8" in report.gpus[1].message
    assert condition(report, "GpusCappable")["reason"] == "GpusHidden"


def test_without_a_label_an_unknown_gpu_is_simply_not_on_this_node() -> None:
    nvml = FakeNvml.node("l4")
    elsewhere = "GPU-5fd4c8a1-0000-4000-8000-0000000000ff"

    report = applier_on(nvml, FakeClock(), expected=lambda: None).apply([GpuFrequency(elsewhere, 1500)])

    assert report.gpus[0].message == f"no GPU {elsewhere} on this node"


# ------------------------------------------------------------------------------------ the administrator's baseline


def test_release_returns_to_the_nodes_baseline_instead_of_unlocking() -> None:
    nvml = FakeNvml.node("h100-sxm")
    backend = NvmlGpuBackend(nvml=nvml, baseline=(210, 1500))
    uuid = nvml.uuids()[0]

    backend.apply(uuid, 1200)
    result = backend.reset(uuid)

    assert result.status == APPLIED
    assert nvml.locked(0) == (210, 1500)
    assert "ResetGpuLockedClocks" not in " ".join(call.function for call in nvml.writes())
    assert result.message is not None and "baseline" in result.message


def test_a_target_above_the_baseline_is_held_at_the_baseline() -> None:
    nvml = FakeNvml.node("h100-sxm")

    result = NvmlGpuBackend(nvml=nvml, baseline=(210, 1500)).apply(nvml.uuids()[0], 1800)

    assert (result.status, result.applied_mhz) == (APPLIED, 1500)
    assert nvml.locked(0) == (210, 1500)
    assert result.message is not None and "baseline" in result.message


# ----------------------------------------------------------------------------------------------- verifying


def test_a_reading_a_few_mhz_over_the_bound_is_not_a_lost_lock() -> None:
    clock = FakeClock()
    nvml = FakeNvml.node("h100-sxm")
    nvml.load(0)
    uuid = nvml.uuids()[0]
    applier = Applier(state=StateStore(None), clock=clock, gpu_backend=NvmlGpuBackend(nvml=nvml))
    applier.apply([GpuFrequency(uuid, 1500)])
    nvml.set_state(0, sm_mhz=1505)  # nvml.h: current clocks can differ from the bound by a few MHz
    writes = len(nvml.writes())

    clock.advance(61)
    with capture_logs() as logs:
        report = applier.apply([GpuFrequency(uuid, 1500)])

    assert len(nvml.writes()) == writes
    assert "setting_lost" not in [log["event"] for log in logs]
    assert report.gpus[0].current_frequency == 1505


def test_a_lock_lost_while_idle_is_put_back_within_the_reassert_interval() -> None:
    clock = FakeClock()
    nvml = FakeNvml.node("h100-sxm")
    uuid = nvml.uuids()[0]
    applier = Applier(state=StateStore(None), clock=clock, gpu_backend=NvmlGpuBackend(nvml=nvml))
    applier.apply([GpuFrequency(uuid, 1500)])
    nvml.state(0).locked = None  # e.g. a GPU reset; the idle clock (345 MHz) stays under the bound

    for _ in range(10):
        clock.advance(61)
        applier.apply([GpuFrequency(uuid, 1500)])

    assert nvml.locked(0) == (210, 1500)


def test_the_default_clock_comes_without_the_deprecated_call() -> None:
    row = ZOO[2]  # A100: default application clock 1155, max 1410
    nvml = FakeNvml([device(row.key)], missing_functions={"nvmlDeviceGetDefaultApplicationsClock"})

    (gpu,) = NvmlGpuBackend(nvml=nvml).inventory()

    assert gpu.default_frequency == row.default_app_sm_mhz
    assert "nvmlDeviceGetDefaultApplicationsClock" not in {call.function for call in nvml.calls}


def test_a_driver_without_the_default_application_clock_reports_the_max_clock() -> None:
    nvml = FakeNvml.node("a100-sxm4-80gb")
    nvml.fail("nvmlDeviceGetClock", pynvml.NVML_ERROR_NOT_SUPPORTED)

    (gpu,) = NvmlGpuBackend(nvml=nvml).inventory()

    assert gpu.default_frequency == 1410


# ------------------------------------------------------------------------------ NVML's session and its health


def test_a_driver_reload_is_recovered_by_starting_nvml_again() -> None:
    clock = FakeClock()
    nvml = FakeNvml([device("h100-sxm", persistence=pynvml.NVML_FEATURE_DISABLED)])
    uuid = nvml.uuids()[0]
    backend = NvmlGpuBackend(nvml=nvml, clock=clock)
    backend.apply(uuid, 1500)
    nvml.driver_reload()

    results = [backend.apply(uuid, 1500)]
    for _ in range(3):
        clock.advance(60)
        results.append(backend.apply(uuid, 1500))

    assert results[-1].status == APPLIED
    assert nvml.locked(0) == (210, 1500)
    assert nvml.init_count >= 2


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
                                  pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH])
def test_nvml_that_cannot_start_makes_the_tuner_unready_then_not_live(code: int) -> None:
    clock = FakeClock()
    nvml = FakeNvml.node("l4")
    nvml.fail_init(code)
    backend = NvmlGpuBackend(nvml=nvml, clock=clock, restart_after_s=300.0)
    applier = Applier(state=StateStore(None), clock=clock, gpu_backend=backend)

    report = applier.apply([GpuFrequency(nvml.uuids()[0], 1200)])
    early = backend.health()
    clock.advance(301)
    applier.apply([GpuFrequency(nvml.uuids()[0], 1200)])
    late = backend.health()

    assert report.gpus[0].status == FAILED
    assert (early.ready, early.live) == (False, True)
    assert (late.ready, late.live) == (False, False)
    assert str(pynvml.NVMLError(code)) in late.message


def test_nvml_that_starts_later_is_picked_up_after_the_back_off() -> None:
    clock = FakeClock()
    nvml = FakeNvml.node("l4")
    nvml.fail_init(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    backend = NvmlGpuBackend(nvml=nvml, clock=clock)
    applier = Applier(state=StateStore(None), clock=clock, gpu_backend=backend)
    spec = [GpuFrequency(nvml.uuids()[0], 1200)]
    applier.apply(spec)
    tries = nvml.init_count + sum(1 for call in nvml.calls if call.function == "nvmlInit")
    applier.apply(spec)
    applier.apply(spec)
    assert sum(1 for call in nvml.calls if call.function == "nvmlInit") <= tries, "no retry inside the back-off"

    nvml.fail_init(None)
    clock.advance(600)
    report = applier.apply(spec)

    assert report.gpus[0].status == APPLIED
    assert backend.health().ready


@pytest.mark.parametrize("persistence", [pynvml.NVML_FEATURE_ENABLED, pynvml.NVML_FEATURE_DISABLED],
                         ids=["persistence-on", "persistence-off"])
def test_nvml_is_released_between_reconciles_only_where_persistence_keeps_the_clocks(persistence: int) -> None:
    clock = FakeClock()
    nvml = FakeNvml([device("h100-sxm", 0, persistence=persistence), device("h100-sxm", 1, persistence=persistence)])
    applier = applier_on(nvml, clock)

    applier.apply([GpuFrequency(nvml.uuids()[0], 1500)])

    assert nvml.session_open is (persistence == pynvml.NVML_FEATURE_DISABLED)
    assert nvml.locked(0) == (210, 1500)
    clock.advance(61)
    applier.apply([GpuFrequency(nvml.uuids()[0], 1500)])
    assert nvml.session_open is (persistence == pynvml.NVML_FEATURE_DISABLED)


def test_a_version_mismatch_after_a_driver_upgrade_closes_the_session_at_once() -> None:
    clock = FakeClock()
    nvml = FakeNvml([device("h100-sxm", persistence=pynvml.NVML_FEATURE_DISABLED)])
    backend = NvmlGpuBackend(nvml=nvml, clock=clock)
    backend.apply(nvml.uuids()[0], 1500)
    nvml.driver_reload(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)
    nvml.fail_init(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)

    result = backend.apply(nvml.uuids()[0], 1500)

    assert result.status == FAILED
    assert not nvml.session_open, "an open session would keep the old driver module loaded"
    assert not backend.health().ready


def test_nvml_that_cannot_start_reads_the_same_on_every_try_so_status_is_written_once() -> None:
    clock = FakeClock()
    nvml = FakeNvml.node("l4")
    nvml.fail_init(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    applier = Applier(state=StateStore(None), clock=clock, gpu_backend=NvmlGpuBackend(nvml=nvml, clock=clock))
    spec = [GpuFrequency(nvml.uuids()[0], 1200)]

    first = desired_status(None, applier.apply(spec), generation=1, now=clock.wall())
    writes = []
    for _ in range(5):
        clock.advance(7)  # inside and outside the back-off
        writes.append(desired_status(first, applier.apply(spec), generation=1, now=clock.wall()))

    assert first is not None
    assert writes == [None] * 5, "nothing new to say: no status write, no watch event, no reconcile loop"


def test_one_lost_gpu_keeps_the_session_that_holds_the_others_locks() -> None:
    nvml = FakeNvml([device("h100-sxm", index, persistence=pynvml.NVML_FEATURE_DISABLED) for index in range(2)])
    backend = NvmlGpuBackend(nvml=nvml, clock=FakeClock())
    first, second = nvml.uuids()
    backend.apply(first, 1500)
    nvml.lose(1)

    lost = backend.apply(second, 1500)

    assert lost.status == FAILED and lost.message is not None and "GPU is lost" in lost.message
    assert (nvml.init_count, nvml.shutdown_count) == (1, 0), "without persistence mode a restart could drop locks"
    assert nvml.locked(0) == (210, 1500)
