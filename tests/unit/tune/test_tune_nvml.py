"""The NVML backend: inventory from NVML, targets as locked clock ranges, NVML errors as entry statuses."""

from __future__ import annotations

import pynvml
import pytest
from pytest_mock import MockerFixture
from support.clock import FakeClock
from tune_doubles import GPU_A, GPU_B, H100_STEPS, NvmlStandIn, nvml_stand_in

from climatik.api import GpuFrequency
from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED
from climatik.tune.applier import Applier
from climatik.tune.backends.base import BackendUnavailableError
from climatik.tune.backends.nvml import NvmlGpuBackend
from climatik.tune.state import StateStore


@pytest.fixture
def nvml(mocker: MockerFixture) -> NvmlStandIn:
    return nvml_stand_in(mocker)


@pytest.fixture
def backend(nvml: NvmlStandIn) -> NvmlGpuBackend:
    return NvmlGpuBackend(nvml=nvml.lib)


def test_inventory_describes_each_gpu_in_mhz_and_watts(nvml: NvmlStandIn, backend: NvmlGpuBackend) -> None:
    gpus = backend.inventory()

    assert [gpu.uuid for gpu in gpus] == [GPU_A, GPU_B]
    first = gpus[0]
    assert (first.index, first.model) == (0, "NVIDIA H100 80GB HBM3")
    assert (first.min_frequency, first.max_frequency, first.default_frequency) == (210, 1980, 1755)
    assert first.supported_frequencies == H100_STEPS
    assert (first.power_limit, first.min_power_limit, first.max_power_limit) == (700, 200, 700)
    nvml.lib.nvmlInit.assert_called_once_with()
    nvml.lib.nvmlDeviceGetSupportedGraphicsClocks.assert_any_call(nvml.handles[0], 2619)
    nvml.lib.nvmlDeviceGetMaxClockInfo.assert_any_call(nvml.handles[0], pynvml.NVML_CLOCK_SM)


def test_a_detail_the_gpu_does_not_support_leaves_the_gpu_listed(nvml: NvmlStandIn, backend: NvmlGpuBackend) -> None:
    nvml.lib.nvmlDeviceGetPowerManagementLimitConstraints.side_effect = pynvml.NVMLError(
        pynvml.NVML_ERROR_NOT_SUPPORTED)

    gpus = backend.inventory()

    assert len(gpus) == 2
    assert gpus[1].min_power_limit is None
    assert gpus[1].supported_frequencies == H100_STEPS


def test_target_becomes_the_upper_end_of_a_locked_range(nvml: NvmlStandIn, backend: NvmlGpuBackend) -> None:
    result = backend.apply(GPU_B, 1500)

    nvml.lib.nvmlDeviceSetGpuLockedClocks.assert_called_once_with(nvml.handle(GPU_B), 210, 1500)
    assert result.status == APPLIED
    assert (result.requested_mhz, result.applied_mhz, result.current_mhz) == (1500, 1500, 1500)
    assert result.message is None


@pytest.mark.parametrize(
    ("requested", "applied", "says"),
    [(1507, 1500, "snapped down"), (2500, 1980, "above the highest"), (100, 210, "below the lowest")],
)
def test_targets_are_fitted_to_supported_steps(
    nvml: NvmlStandIn, backend: NvmlGpuBackend, requested: int, applied: int, says: str
) -> None:
    result = backend.apply(GPU_A, requested)

    nvml.lib.nvmlDeviceSetGpuLockedClocks.assert_called_once_with(nvml.handle(GPU_A), 210, applied)
    assert (result.status, result.applied_mhz) == (APPLIED, applied)
    assert result.message is not None and says in result.message


@pytest.mark.parametrize(
    ("code", "status", "says"),
    [
        (pynvml.NVML_ERROR_NO_PERMISSION, FAILED, "Insufficient Permissions (needs root or CAP_SYS_ADMIN)"),
        (pynvml.NVML_ERROR_NOT_SUPPORTED, UNSUPPORTED, "Not Supported"),
        (pynvml.NVML_ERROR_GPU_IS_LOST, FAILED, "GPU is lost"),
        (pynvml.NVML_ERROR_INVALID_ARGUMENT, FAILED, "Invalid Argument"),
        (pynvml.NVML_ERROR_UNKNOWN, FAILED, "Unknown Error"),
    ],
)
def test_nvml_errors_become_entry_statuses(
    nvml: NvmlStandIn, backend: NvmlGpuBackend, code: int, status: str, says: str
) -> None:
    nvml.lib.nvmlDeviceSetGpuLockedClocks.side_effect = pynvml.NVMLError(code)

    result = backend.apply(GPU_A, 1500)

    assert result.status == status
    assert result.message is not None and says in result.message and GPU_A in result.message
    assert result.requested_mhz == 1500


def test_a_lost_gpu_is_looked_up_afresh_next_time(nvml: NvmlStandIn, backend: NvmlGpuBackend) -> None:
    backend.inventory()
    nvml.lib.nvmlDeviceSetGpuLockedClocks.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
    assert backend.apply(GPU_A, 1500).status == FAILED
    nvml.lib.nvmlDeviceGetHandleByIndex.reset_mock()
    nvml.lib.nvmlDeviceSetGpuLockedClocks.side_effect = None

    assert backend.apply(GPU_A, 1500).status == APPLIED
    assert nvml.lib.nvmlDeviceGetHandleByIndex.called


def test_an_unknown_gpu_is_unsupported(nvml: NvmlStandIn, backend: NvmlGpuBackend) -> None:
    result = backend.apply("GPU-not-here", 1500)

    assert result.status == UNSUPPORTED
    assert result.message == "no GPU GPU-not-here on this node"
    nvml.lib.nvmlDeviceSetGpuLockedClocks.assert_not_called()


def test_reset_unlocks_the_clocks(nvml: NvmlStandIn, backend: NvmlGpuBackend) -> None:
    backend.apply(GPU_A, 1200)

    result = backend.reset(GPU_A)

    nvml.lib.nvmlDeviceResetGpuLockedClocks.assert_called_once_with(nvml.handle(GPU_A))
    assert (result.status, result.current_mhz) == (APPLIED, 1980)
    assert backend.current_clock(GPU_A) == 1980


def test_reset_without_permission_fails_with_nvmls_message(nvml: NvmlStandIn, backend: NvmlGpuBackend) -> None:
    nvml.lib.nvmlDeviceResetGpuLockedClocks.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)

    result = backend.reset(GPU_B)

    assert result.status == FAILED
    assert result.message is not None and "Insufficient Permissions" in result.message


def test_without_a_driver_the_backend_is_unavailable_not_crashing(nvml: NvmlStandIn,
                                                                  backend: NvmlGpuBackend) -> None:
    nvml.lib.nvmlInit.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    with pytest.raises(BackendUnavailableError, match="Driver Not Loaded"):
        backend.inventory()
    result = backend.apply(GPU_A, 1500)
    assert result.status == FAILED
    assert result.message is not None and "Driver Not Loaded" in result.message
    assert backend.current_clock(GPU_A) is None


def test_close_shuts_nvml_down_once(nvml: NvmlStandIn, backend: NvmlGpuBackend) -> None:
    backend.close()
    nvml.lib.nvmlShutdown.assert_not_called()

    backend.inventory()
    backend.close()
    backend.close()

    nvml.lib.nvmlShutdown.assert_called_once_with()


def test_an_entry_removed_from_the_spec_resets_its_locked_clocks(nvml: NvmlStandIn, backend: NvmlGpuBackend) -> None:
    applier = Applier(state=StateStore(None), clock=FakeClock(), gpu_backend=backend)
    applier.apply([GpuFrequency(GPU_A, 1200), GpuFrequency(GPU_B, 1200)])

    applier.apply([GpuFrequency(GPU_A, 1200)])

    nvml.lib.nvmlDeviceResetGpuLockedClocks.assert_called_once_with(nvml.handle(GPU_B))
    assert backend.current_clock(GPU_B) == 1980
    assert backend.current_clock(GPU_A) == 1200


def test_a_gpu_whose_uuid_cannot_be_read_hides_no_other(nvml: NvmlStandIn, backend: NvmlGpuBackend) -> None:
    readable = nvml.lib.nvmlDeviceGetUUID.side_effect

    def uuid_of(handle: object) -> object:
        if handle is nvml.handles[0]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return readable(handle)

    nvml.lib.nvmlDeviceGetUUID.side_effect = uuid_of

    assert [gpu.uuid for gpu in backend.inventory()] == [GPU_B]
    assert backend.apply(GPU_B, 1500).status == APPLIED
    assert backend.apply(GPU_A, 1500).status == UNSUPPORTED
