"""The device zoo's fakes behave as the facts they were built from: NVML answers like nvidia-ml-py on the
listed GPUs, and the sysfs trees are laid out and refuse writes the way the kernel does."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pynvml
import pytest
from support import nvml_zoo, sysfs_zoo
from support.nvml_zoo import FakeHandle, FakeNvml, device
from support.sysfs_zoo import acpi_cpufreq_shared, amd_pstate_epp, build, intel_pstate

# ----------------------------------------------------------------------------------------------- NVML: facts


@pytest.mark.parametrize("row", nvml_zoo.ZOO, ids=lambda row: row.key)
def test_every_gpu_row_is_consistent_and_cites_a_source(row: nvml_zoo.GpuModel) -> None:
    assert row.source and row.key in nvml_zoo.facts_table()
    assert list(row.memory_clocks) == sorted(row.memory_clocks, reverse=True)
    assert {mem for mem, _ in row.graphics_clocks} == set(row.memory_clocks)
    for _, steps in row.graphics_clocks:
        assert list(steps) == sorted(steps, reverse=True)
    assert row.top_steps[0] == row.max_sm_mhz
    assert row.default_app_sm_mhz in row.top_steps and row.default_app_mem_mhz in row.memory_clocks
    assert row.power_min_w <= row.power_default_w <= row.power_max_w
    assert row.idle_power_w < row.power_min_w


def test_fake_reuses_the_real_constants_and_error_classes() -> None:
    nvml = FakeNvml()

    assert nvml.NVMLError is pynvml.NVMLError
    assert nvml.NVML_CLOCK_MEM == pynvml.NVML_CLOCK_MEM
    assert nvml.NVMLError_NotFound is pynvml.NVMLError_NotFound
    assert nvml.NVML_FI_DEV_POWER_INSTANT == pynvml.NVML_FI_DEV_POWER_INSTANT
    with pytest.raises(AttributeError, match=r"does not model pynvml\.nvmlDeviceGetFanSpeed"):
        _ = nvml.nvmlDeviceGetFanSpeed


# ------------------------------------------------------------------------------ NVML: clocks by memory clock


def _started(nvml: FakeNvml, index: int = 0) -> FakeHandle:
    nvml.nvmlInit()
    return nvml.nvmlDeviceGetHandleByIndex(index)


def test_l4_idle_memory_clock_lists_steps_only_up_to_645() -> None:
    nvml = FakeNvml.node("l4")
    handle = _started(nvml)

    idle_mem = nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)
    steps = nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, idle_mem)

    assert idle_mem == 405
    assert (max(steps), min(steps)) == (645, 210)
    assert nvml.nvmlDeviceGetSupportedMemoryClocks(handle) == [6251, 405]
    assert nvml.nvmlDeviceGetPerformanceState(handle) == 8


def test_l4_under_load_reads_6250_which_nvml_does_not_list() -> None:
    nvml = FakeNvml.node("l4")
    handle = _started(nvml)
    nvml.load(0)

    busy_mem = nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)
    with pytest.raises(pynvml.NVMLError_NotFound) as raised:
        nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, busy_mem)
    steps = nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, 6251)

    assert busy_mem == 6250
    assert raised.value.value == pynvml.NVML_ERROR_NOT_FOUND and str(raised.value) == "Not Found"
    assert steps == list(range(2040, 209, -15))
    assert nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM) == 2040


def test_the_memory_quirk_is_per_device() -> None:
    nvml = FakeNvml([device("l4", 0, busy_mem_mhz=6251)])
    handle = _started(nvml)
    nvml.load(0)

    assert len(nvml.nvmlDeviceGetSupportedGraphicsClocks(
        handle, nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM))) == 123


def test_h200_memory_clock_reads_two_under_its_only_supported_value() -> None:
    nvml = FakeNvml.node("h200")
    handle = _started(nvml)

    assert nvml.nvmlDeviceGetSupportedMemoryClocks(handle) == [3201]
    assert nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM) == 3199
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, 3199)


def test_locked_range_bounds_the_sm_clock_and_reset_releases_it() -> None:
    nvml = FakeNvml.node("h100-sxm", count=2)
    handle = _started(nvml, 1)
    nvml.load(1)

    nvml.nvmlDeviceSetGpuLockedClocks(handle, 210, 1500)
    locked = nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
    nvml.nvmlDeviceResetGpuLockedClocks(handle)

    assert locked == 1500
    assert nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM) == 1980
    assert [call.function for call in nvml.writes()] == ["nvmlDeviceSetGpuLockedClocks",
                                                         "nvmlDeviceResetGpuLockedClocks"]
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceSetGpuLockedClocks(handle, 1500, 210)


def test_idle_gpu_sits_at_its_idle_clock_inside_a_lock() -> None:
    nvml = FakeNvml.node("h100-sxm")
    handle = _started(nvml)

    idle = nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
    nvml.nvmlDeviceSetGpuLockedClocks(handle, 1200, 1500)

    assert idle == 345
    assert nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM) == 1200


def test_default_application_clock_and_clock_ids() -> None:
    nvml = FakeNvml.node("a100-sxm4-80gb")
    handle = _started(nvml)

    assert nvml.nvmlDeviceGetDefaultApplicationsClock(handle, pynvml.NVML_CLOCK_GRAPHICS) == 1155
    assert nvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM) == 1410
    assert nvml.nvmlDeviceGetClock(handle, pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_ID_APP_CLOCK_DEFAULT) == 1155
    assert nvml.nvmlDeviceGetClock(handle, pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_ID_CURRENT) == 210


def test_a_function_missing_from_the_library_raises_function_not_found() -> None:
    nvml = FakeNvml([device("h100-sxm")], missing_functions={"nvmlDeviceGetDefaultApplicationsClock"})
    handle = _started(nvml)

    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        nvml.nvmlDeviceGetDefaultApplicationsClock(handle, pynvml.NVML_CLOCK_GRAPHICS)


# -------------------------------------------------------------------------------------------- NVML: power


def test_h100_power_limits_in_milliwatts() -> None:
    nvml = FakeNvml.node("h100-sxm")
    handle = _started(nvml)

    assert nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle) == [200_000, 700_000]
    assert nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle) == 700_000
    assert nvml.nvmlDeviceGetPowerUsage(handle) == 75_000
    nvml.nvmlDeviceSetPowerManagementLimit(handle, 350_000)
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(handle) == 350_000
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceSetPowerManagementLimit(handle, 150_000)


def test_power_under_load_is_capped_by_the_limit_and_says_so() -> None:
    nvml = FakeNvml.node("h100-sxm")
    handle = _started(nvml)
    nvml.load(0)
    nvml.nvmlDeviceSetPowerManagementLimit(handle, 300_000)

    assert nvml.nvmlDeviceGetPowerUsage(handle) == 300_000
    assert nvml.nvmlDeviceGetCurrentClocksEventReasons(handle) == pynvml.nvmlClocksEventReasonSwPowerCap
    nvml.set_state(0, power_w=250.5)
    assert nvml.nvmlDeviceGetPowerUsage(handle) == 250_500


def test_instant_power_field_where_the_model_has_it() -> None:
    nvml = FakeNvml([device("h100-sxm", 0), device("t4", 1)])
    nvml.nvmlInit()
    h100, t4 = (nvml.nvmlDeviceGetHandleByIndex(index) for index in (0, 1))
    nvml.set_state(0, instant_power_w=690.0)

    h100_value = nvml.nvmlDeviceGetFieldValues(h100, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
    t4_value = nvml.nvmlDeviceGetFieldValues(t4, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]

    assert (h100_value.nvmlReturn, h100_value.value.uiVal) == (pynvml.NVML_SUCCESS, 690_000)
    assert h100_value.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    assert t4_value.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED


# ---------------------------------------------------------------------------------------------- NVML: MIG


def test_mig_enabled_gpu_lists_its_instances_and_refuses_clock_locks() -> None:
    nvml = FakeNvml.node("a100-sxm4-80gb-mig")
    handle = _started(nvml)

    mode = nvml.nvmlDeviceGetMigMode(handle)
    count = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    migs = [nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index) for index in range(3)]

    assert mode == [1, 1]
    assert count == 7
    assert [nvml.nvmlDeviceGetGpuInstanceId(mig) for mig in migs] == [2, 3, 9]
    assert nvml.nvmlDeviceGetName(migs[0]) == "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
    assert str(nvml.nvmlDeviceGetUUID(migs[0])).startswith("MIG-")
    assert nvml.nvmlDeviceIsMigDeviceHandle(migs[0]).value == 1
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 3)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceSetGpuLockedClocks(handle, 210, 1200)


def test_gpus_without_mig_say_not_supported_or_disabled() -> None:
    nvml = FakeNvml([device("l4", 0), device("h100-sxm", 1)])
    nvml.nvmlInit()

    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(0))
    assert nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(1)) == [0, 0]
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(nvml.nvmlDeviceGetHandleByIndex(1)) == 0


# ------------------------------------------------------------------------------------------ NVML: identity


def test_strings_follow_the_installed_bindings_or_the_old_bytes() -> None:
    current = FakeNvml.node("h100-sxm")
    old = FakeNvml.node("h100-sxm", strings="bytes")
    new_handle, old_handle = _started(current), _started(old)

    assert current.nvmlDeviceGetName(new_handle) == "NVIDIA H100 80GB HBM3"
    assert old.nvmlDeviceGetName(old_handle) == b"NVIDIA H100 80GB HBM3"
    assert current.nvmlSystemGetDriverVersion() == "555.42.06"
    assert current.nvmlSystemGetNVMLVersion() == "12.555.42.06"
    uuid = current.uuids()[0]
    assert current.nvmlDeviceGetIndex(current.nvmlDeviceGetHandleByUUID(uuid)) == 0
    with pytest.raises(TypeError):
        old.nvmlDeviceGetHandleByUUID(uuid)
    assert old.nvmlDeviceGetIndex(old.nvmlDeviceGetHandleByUUID(uuid.encode())) == 0


def test_handles_are_fresh_objects_like_ctypes_pointers() -> None:
    nvml = FakeNvml.node("h100-sxm")
    nvml.nvmlInit()

    first, second = nvml.nvmlDeviceGetHandleByIndex(0), nvml.nvmlDeviceGetHandleByIndex(0)

    assert first is not second and first != second
    assert nvml.nvmlDeviceGetUUID(first) == nvml.nvmlDeviceGetUUID(second)


def test_read_only_probe_changes_nothing_and_is_logged() -> None:
    nvml = FakeNvml.node("l4", count=2)
    nvml.nvmlInit()
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        nvml.nvmlDeviceGetUUID(handle)
        nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
        nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, 6251)
    nvml.nvmlShutdown()

    assert nvml.writes() == []
    functions = [call.function for call in nvml.calls]
    assert functions[:3] == ["nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex"]
    assert nvml.calls[-2].args[1] == 6251
    assert (nvml.init_count, nvml.shutdown_count, nvml.session_open) == (1, 1, False)


# ------------------------------------------------------------------------------------------- NVML: faults


@pytest.mark.parametrize(("code", "cls", "text"), [
    (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVMLError_LibraryNotFound, "NVML Shared Library Not Found"),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVMLError_DriverNotLoaded, "Driver Not Loaded"),
    (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, pynvml.NVMLError_LibRmVersionMismatch,
     "RM has detected an NVML/RM version mismatch."),
])
def test_init_failures_read_as_in_production(code: int, cls: type[pynvml.NVMLError], text: str) -> None:
    nvml = FakeNvml.node("h100-sxm")
    nvml.fail_init(code)

    with pytest.raises(cls) as raised:
        nvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    nvml.fail_init(None)
    nvml.nvmlInit()

    assert str(raised.value) == text and raised.value.value == code
    assert nvml.nvmlDeviceGetCount() == 1


def test_writes_without_cap_sys_admin_fail_but_reads_work() -> None:
    nvml = FakeNvml.node("h100-sxm")
    handle = _started(nvml)
    nvml.deny_writes()

    with pytest.raises(pynvml.NVMLError_NoPermission) as raised:
        nvml.nvmlDeviceSetGpuLockedClocks(handle, 210, 1500)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        nvml.nvmlDeviceSetPowerManagementLimit(handle, 500_000)

    assert str(raised.value) == "Insufficient Permissions"
    assert nvml.locked(0) is None and nvml.power_limit_w(0) == 700
    assert nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM) == 345


def test_a_lost_gpu_hides_nothing_else() -> None:
    nvml = FakeNvml.node("h100-sxm", count=2)
    nvml.nvmlInit()
    held = nvml.nvmlDeviceGetHandleByIndex(1)
    nvml.lose(1)

    with pytest.raises(pynvml.NVMLError_GpuIsLost) as raised:
        nvml.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetClockInfo(held, pynvml.NVML_CLOCK_SM)

    assert str(raised.value) == "GPU is lost"
    assert nvml.nvmlDeviceGetCount() == 2
    assert nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(0)) == nvml.uuids()[0]


def test_a_gpu_whose_uuid_cannot_be_read() -> None:
    nvml = FakeNvml([device("l4", 0, uuid_error=pynvml.NVML_ERROR_UNKNOWN), device("l4", 1)])
    nvml.nvmlInit()

    with pytest.raises(pynvml.NVMLError_Unknown):
        nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(0))
    assert nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(1)) == nvml.uuids()[1]


def test_zero_gpus_visible_or_none_bound_to_the_driver() -> None:
    hidden = FakeNvml([])
    unbound = FakeNvml([], gpus_bound=False)

    hidden.nvmlInit()
    with pytest.raises(pynvml.NVMLError_GpuNotFound):
        unbound.nvmlInit()
    unbound.nvmlInitWithFlags(pynvml.NVML_INIT_FLAG_NO_GPUS)

    assert hidden.nvmlDeviceGetCount() == 0
    assert unbound.nvmlDeviceGetCount() == 0


def test_driver_reload_breaks_the_session_until_nvml_is_started_again() -> None:
    nvml = FakeNvml.node("h100-sxm")
    old = _started(nvml)
    nvml.nvmlDeviceSetGpuLockedClocks(old, 210, 1500)
    nvml.nvmlDeviceSetPowerManagementLimit(old, 400_000)
    nvml.driver_reload()

    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetCount()
    nvml.nvmlShutdown()
    nvml.nvmlInit()
    fresh = nvml.nvmlDeviceGetHandleByIndex(0)

    assert nvml.locked(0) is None and nvml.nvmlDeviceGetPowerManagementLimit(fresh) == 700_000
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetUUID(old)
    assert (nvml.init_count, nvml.shutdown_count) == (2, 1)


def test_injected_fault_on_one_device_for_a_number_of_calls() -> None:
    nvml = FakeNvml.node("h100-sxm", count=2)
    nvml.nvmlInit()
    nvml.fail("nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_TIMEOUT, device=1, times=1)
    first, second = (nvml.nvmlDeviceGetHandleByIndex(index) for index in (0, 1))

    assert nvml.nvmlDeviceGetPowerUsage(first) == 75_000
    with pytest.raises(pynvml.NVMLError_Timeout):
        nvml.nvmlDeviceGetPowerUsage(second)
    assert nvml.nvmlDeviceGetPowerUsage(second) == 75_000


def test_calls_before_init_or_after_shutdown_are_uninitialized() -> None:
    nvml = FakeNvml.node("h100-sxm")

    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlShutdown()
    nvml.nvmlInit()
    nvml.nvmlShutdown()
    nvml.nvmlShutdown()  # nvml.h: no error for more shutdowns than inits

    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()


# ----------------------------------------------------------------------------------------- sysfs: layout


def _cpu(tree: sysfs_zoo.SysfsTree, cpu: int, name: str) -> str:
    return (tree.cpufreq_dir(cpu) / name).read_text().strip()


@pytest.mark.parametrize("row", sysfs_zoo.CPU_ZOO, ids=lambda row: row.key)
def test_every_cpu_row_is_consistent_and_cites_a_source(row: sysfs_zoo.CpuModel) -> None:
    assert row.source and row.key in sysfs_zoo.facts_table()
    assert row.cpuinfo_min_khz < row.cpuinfo_max_khz
    assert row.default_governor in row.governors
    if row.available_khz is not None:
        assert (max(row.available_khz), min(row.available_khz)) == (row.cpuinfo_max_khz, row.cpuinfo_min_khz)


def test_intel_pstate_has_one_policy_per_cpu(tmp_path: Path) -> None:
    tree = intel_pstate(tmp_path, cpus=4)

    assert os.readlink(tree.cpufreq_dir(2)) == "../cpufreq/policy2"
    assert _cpu(tree, 2, "related_cpus") == "2" and _cpu(tree, 2, "affected_cpus") == "2"
    assert (_cpu(tree, 0, "scaling_driver"), _cpu(tree, 0, "scaling_governor")) == ("intel_pstate", "powersave")
    assert (_cpu(tree, 0, "cpuinfo_min_freq"), _cpu(tree, 0, "cpuinfo_max_freq")) == ("800000", "3800000")
    assert _cpu(tree, 0, "scaling_max_freq") == "3800000"
    assert not (tree.cpufreq_dir(0) / "scaling_available_frequencies").exists()
    assert (tree.cpu_root / "intel_pstate" / "status").read_text() == "active\n"
    assert (tree.cpu_root / "online").read_text() == "0-3\n"
    assert not (tree.cpu_root / "cpu0" / "online").exists()


def test_acpi_cpufreq_shared_policy_is_one_directory_behind_two_symlinks(tmp_path: Path) -> None:
    tree = acpi_cpufreq_shared(tmp_path, cpus=4, shared=2)

    assert tree.cpufreq_dir(0).resolve() == tree.cpufreq_dir(1).resolve() == tree.cpu_root / "cpufreq" / "policy0"
    assert tree.cpufreq_dir(2).resolve() != tree.cpufreq_dir(0).resolve()
    assert _cpu(tree, 1, "related_cpus") == "0 1" and _cpu(tree, 1, "affected_cpus") == "0 1"
    table = (tree.cpufreq_dir(0) / "scaling_available_frequencies").read_text()
    assert table.startswith("2401000 2400000 2300000") and table.endswith("1200000 \n")
    assert _cpu(tree, 0, "bios_limit") == "2401000"


def test_amd_pstate_epp_files(tmp_path: Path) -> None:
    tree = amd_pstate_epp(tmp_path, cpus=2)

    assert _cpu(tree, 1, "scaling_driver") == "amd-pstate-epp"
    assert (tree.cpufreq_dir(1) / "scaling_available_governors").read_text() == "performance powersave\n"
    assert _cpu(tree, 1, "amd_pstate_max_freq") == _cpu(tree, 1, "cpuinfo_max_freq") == "3700000"
    assert _cpu(tree, 1, "energy_performance_preference") == "balance_performance"


# ------------------------------------------------------------------------------------ sysfs: kernel model


def test_offline_cpu_policy_answers_ebusy_only_through_the_kernel_hook(tmp_path: Path) -> None:
    tree = intel_pstate(tmp_path, cpus=4, offline=[3])

    plain = _cpu(tree, 3, "scaling_max_freq")
    with tree.kernel(), pytest.raises(OSError) as raised:
        (tree.cpufreq_dir(3) / "scaling_max_freq").read_text()

    assert plain == "3800000"
    assert raised.value.errno == errno.EBUSY
    assert (tree.cpu_root / "cpu3" / "online").read_text() == "0\n"
    assert (tree.cpu_root / "offline").read_text() == "3\n"
    assert tree.policy_dir(3) / "scaling_max_freq" in tree.inactive_paths()
    with tree.kernel():
        assert _cpu(tree, 2, "scaling_max_freq") == "3800000"
        (tree.cpu_root / "cpu3" / "online").write_text("1\n")
        assert _cpu(tree, 3, "scaling_max_freq") == "3800000"


def test_offlining_one_cpu_of_a_shared_policy_keeps_it_active(tmp_path: Path) -> None:
    tree = acpi_cpufreq_shared(tmp_path, cpus=2, shared=2, offline=[1])

    with tree.kernel():
        assert _cpu(tree, 1, "affected_cpus") == "0"
        assert _cpu(tree, 1, "related_cpus") == "0 1"
        assert _cpu(tree, 1, "scaling_max_freq") == "2401000"


def test_a_write_through_one_cpu_of_a_shared_policy_changes_both(tmp_path: Path) -> None:
    tree = acpi_cpufreq_shared(tmp_path, cpus=2)

    with tree.kernel():
        (tree.cpufreq_dir(0) / "scaling_max_freq").write_text("2050000\n")

    assert _cpu(tree, 1, "scaling_max_freq") == "2000000"  # resolved down to a table frequency
    assert [(write.path, write.error) for write in tree.writes] == [
        ("devices/system/cpu/cpu0/cpufreq/scaling_max_freq", None)]


def test_thermally_limited_cpu_reads_its_cap_until_the_cap_lifts(tmp_path: Path) -> None:
    tree = intel_pstate(tmp_path, cpus=2, throttled={1: 2_000_000})

    first_look = _cpu(tree, 1, "scaling_max_freq")
    with tree.kernel():
        (tree.cpufreq_dir(1) / "scaling_max_freq").write_text("3800000\n")
        held = _cpu(tree, 1, "scaling_max_freq")
    tree.throttle(1, None)

    assert (first_look, held) == ("2000000", "2000000")
    assert _cpu(tree, 1, "cpuinfo_max_freq") == "3800000"
    assert _cpu(tree, 1, "scaling_max_freq") == "3800000"


def test_firmware_ppc_limit_shows_in_bios_limit(tmp_path: Path) -> None:
    tree = acpi_cpufreq_shared(tmp_path, cpus=2, throttled={0: 1_800_000}, ppc_limited=True)

    assert _cpu(tree, 0, "bios_limit") == _cpu(tree, 1, "scaling_max_freq") == "1800000"


def test_old_kernel_refuses_max_below_min_new_kernel_pulls_min_down(tmp_path: Path) -> None:
    old = intel_pstate(tmp_path / "old", cpus=1, old_kernel=True)
    new = intel_pstate(tmp_path / "new", cpus=1)

    for tree in (old, new):
        with tree.kernel():
            (tree.cpufreq_dir(0) / "scaling_min_freq").write_text("2000000\n")
    with old.kernel(), pytest.raises(OSError) as raised:
        (old.cpufreq_dir(0) / "scaling_max_freq").write_text("1500000\n")
    with new.kernel():
        (new.cpufreq_dir(0) / "scaling_max_freq").write_text("1500000\n")

    assert raised.value.errno == errno.EINVAL
    assert old.limits(0) == (2_000_000, 3_800_000)
    assert new.limits(0) == (1_500_000, 1_500_000)
    assert old.writes[-1].error == errno.EINVAL


def test_kernel_refuses_writes_to_read_only_attributes_and_bad_values(tmp_path: Path) -> None:
    tree = build(tmp_path, "acpi-cpufreq", cpus=2)

    with tree.kernel():
        with pytest.raises(PermissionError):
            (tree.cpufreq_dir(0) / "cpuinfo_max_freq").write_text("9999999\n")
        with pytest.raises(OSError) as bad_number:
            (tree.cpufreq_dir(0) / "scaling_max_freq").write_text("fast\n")
        with pytest.raises(OSError) as bad_governor:
            (tree.cpufreq_dir(0) / "scaling_governor").write_text("turbo\n")
        (tree.cpufreq_dir(0) / "scaling_governor").write_text("userspace\n")

    assert bad_number.value.errno == bad_governor.value.errno == errno.EINVAL
    assert _cpu(tree, 0, "scaling_governor") == "userspace"
    assert _cpu(tree, 0, "cpuinfo_max_freq") == "2401000"


def test_reads_change_nothing(tmp_path: Path) -> None:
    tree = acpi_cpufreq_shared(tmp_path, cpus=4, offline=[3])
    before = tree.snapshot()

    with tree.kernel():
        for cpu in range(3):
            _cpu(tree, cpu, "scaling_max_freq")

    assert tree.writes == [] and tree.snapshot() == before


def test_the_hook_leaves_other_files_alone(tmp_path: Path) -> None:
    tree = intel_pstate(tmp_path / "sys", cpus=1)
    other = tmp_path / "elsewhere.txt"

    with tree.kernel():
        other.write_text("plain\n")
        with open(other, encoding="ascii") as handle:  # the builtin is what the hook wraps
            text = handle.read()

    assert text == "plain\n" and tree.writes == []
