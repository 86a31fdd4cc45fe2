"""The NVML backend on the zoo's fake NVML: inventory in MHz and watts, targets as locked clock ranges, NVML
errors as entry statuses, lost GPUs looked up afresh, a node without a driver reported, not crashing."""

from __future__ import annotations

import pynvml
import pytest
from support.clock import FakeClock
from support.nvml_zoo import FakeNvml, device

from climatik.api import GpuFrequency
from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED
from climatik.tune.applier import Applier
from climatik.tune.backends.base import BackendUnavailableError
from climatik.tune.backends.nvml import NvmlGpuBackend
from climatik.tune.state import StateStore

H100_STEPS = list(range(210, 1981, 15))


@pytest.fixture(params=["str", "bytes"], ids=["str-bindings", "bytes-bindings"])
def nvml(request: pytest.FixtureRequest) -> FakeNvml:
    """Two H100s; nvidia-ml-py has returned bytes in some releases and str in others."""
    return FakeNvml.node("h100-sxm", count=2, strings=request.param)


@pytest.fixture
def backend(nvml: FakeNvml) -> NvmlGpuBackend:
    return NvmlGpuBackend(nvml=nvml, clock=FakeClock())


def test_inventory_describes_each_gpu_in_mhz_and_watts(nvml: FakeNvml, backend: NvmlGpuBackend) -> None:
    gpus = backend.inventory()

    assert [gpu.uuid for gpu in gpus] == nvml.uuids()
    first = gpus[0]
    assert (first.index, first.model) == (0, "NVIDIA H100 80GB HBM3")
    assert (first.min_frequency, first.max_frequency, first.default_frequency) == (210, 1980, 1980)
    assert first.supported_frequencies == H100_STEPS
    assert (first.power_limit, first.min_power_limit, first.max_power_limit) == (700, 200, 700)
    assert nvml.writes() == []


def test_a_detail_the_gpu_does_not_support_leaves_the_gpu_listed(nvml: FakeNvml, backend: NvmlGpuBackend) -> None:
    nvml.fail("nvmlDeviceGetPowerManagementLimitConstraints", pynvml.NVML_ERROR_NOT_SUPPORTED, device=1)

    gpus = backend.inventory()

    assert len(gpus) == 2
    assert gpus[1].min_power_limit is None
    assert gpus[1].supported_frequencies == H100_STEPS


def test_target_becomes_the_upper_end_of_a_locked_range(nvml: FakeNvml, backend: NvmlGpuBackend) -> None:
    nvml.load(1)

    result = backend.apply(nvml.uuids()[1], 1500)

    assert nvml.locked(1) == (210, 1500)
    assert result.status == APPLIED
    assert (result.requested_mhz, result.applied_mhz, result.current_mhz) == (1500, 1500, 1500)
    assert result.message is None


@pytest.mark.parametrize(
    ("requested", "applied", "says"),
    [(1507, 1500, "snapped down"), (2500, 1980, "above the highest"), (100, 210, "below the lowest")],
)
def test_targets_are_fitted_to_supported_steps(
    nvml: FakeNvml, backend: NvmlGpuBackend, requested: int, applied: int, says: str
) -> None:
    result = backend.apply(nvml.uuids()[0], requested)

    assert nvml.locked(0) == (210, applied)
    assert (result.status, result.applied_mhz) == (APPLIED, applied)
    assert result.message is not None and says in result.message


@pytest.mark.parametrize(
    ("code", "status", "says"),
    [
        (pynvml.NVML_ERROR_NO_PERMISSION, FAILED, "Insufficient Permissions (needs root or CAP_SYS_ADMIN)"),
        (pynvml.NVML_ERROR_NOT_SUPPORTED, UNSUPPORTED, "Not Supported"),
        (pynvml.NVML_ERROR_NOT_FOUND, FAILED, "Not Found"),
        (pynvml.NVML_ERROR_GPU_IS_LOST, FAILED, "GPU is lost"),
        (pynvml.NVML_ERROR_INVALID_ARGUMENT, FAILED, "Invalid Argument"),
        (pynvml.NVML_ERROR_UNKNOWN, FAILED, "Unknown Error"),
    ],
)
def test_nvml_errors_become_entry_statuses(
    nvml: FakeNvml, backend: NvmlGpuBackend, code: int, status: str, says: str
) -> None:
    nvml.fail("nvmlDeviceSetGpuLockedClocks", code)
    uuid = nvml.uuids()[0]

    result = backend.apply(uuid, 1500)

    assert result.status == status
    assert result.message is not None and says in result.message and uuid in result.message
    assert result.requested_mhz == 1500


def test_a_lost_gpu_is_looked_up_afresh_next_time(nvml: FakeNvml, backend: NvmlGpuBackend) -> None:
    backend.inventory()
    nvml.lose(0)
    assert backend.apply(nvml.uuids()[0], 1500).status == FAILED
    assert backend.apply(nvml.uuids()[1], 1500).status == APPLIED, "the other GPU is not affected"
    nvml.recover(0)
    lookups = sum(1 for call in nvml.calls if call.function == "nvmlDeviceGetHandleByIndex")

    assert backend.apply(nvml.uuids()[0], 1500).status == APPLIED
    assert sum(1 for call in nvml.calls if call.function == "nvmlDeviceGetHandleByIndex") > lookups


def test_an_unknown_gpu_is_unsupported(nvml: FakeNvml, backend: NvmlGpuBackend) -> None:
    result = backend.apply("GPU-not-here", 1500)

    assert result.status == UNSUPPORTED
    assert result.message == "no GPU GPU-not-here on this node"
    assert nvml.writes() == []


def test_reset_unlocks_the_clocks(nvml: FakeNvml, backend: NvmlGpuBackend) -> None:
    nvml.load(0)
    backend.apply(nvml.uuids()[0], 1200)

    result = backend.reset(nvml.uuids()[0])

    assert nvml.locked(0) is None
    assert (result.status, result.current_mhz, result.message) == (APPLIED, 1980, "locked clocks reset")
    assert backend.current_clock(nvml.uuids()[0]) == 1980


def test_reset_without_permission_fails_with_nvmls_message(nvml: FakeNvml, backend: NvmlGpuBackend) -> None:
    nvml.deny_writes()

    result = backend.reset(nvml.uuids()[1])

    assert result.status == FAILED
    assert result.message is not None and "Insufficient Permissions" in result.message


def test_without_a_driver_the_backend_is_unavailable_not_crashing(nvml: FakeNvml, backend: NvmlGpuBackend) -> None:
    nvml.fail_init(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    with pytest.raises(BackendUnavailableError, match="Driver Not Loaded"):
        backend.inventory()
    result = backend.apply(nvml.uuids()[0], 1500)
    assert result.status == FAILED
    assert result.message is not None and "Driver Not Loaded" in result.message
    assert backend.current_clock(nvml.uuids()[0]) is None


def test_close_shuts_nvml_down_once(nvml: FakeNvml) -> None:
    backend = NvmlGpuBackend(nvml=FakeNvml([device("h100-sxm", persistence=pynvml.NVML_FEATURE_DISABLED)]))
    lib = backend._session.lib()  # the fake above
    backend.close()
    assert lib.shutdown_count == 0

    backend.inventory()
    backend.close()
    backend.close()

    assert (lib.init_count, lib.shutdown_count, lib.session_open) == (1, 1, False)


def test_an_entry_removed_from_the_spec_resets_its_locked_clocks(nvml: FakeNvml, backend: NvmlGpuBackend) -> None:
    first, second = nvml.uuids()
    applier = Applier(state=StateStore(None), clock=FakeClock(), gpu_backend=backend)
    applier.apply([GpuFrequency(first, 1200), GpuFrequency(second, 1200)])

    applier.apply([GpuFrequency(first, 1200)])

    assert (nvml.locked(0), nvml.locked(1)) == ((210, 1200), None)


def test_a_gpu_whose_uuid_cannot_be_read_hides_no_other() -> None:
    nvml = FakeNvml([device("h100-sxm", 0, uuid_error=pynvml.NVML_ERROR_UNKNOWN), device("h100-sxm", 1)])
    backend = NvmlGpuBackend(nvml=nvml)
    hidden, readable = nvml.uuids()

    assert [gpu.uuid for gpu in backend.inventory()] == [readable]
    assert backend.apply(readable, 1500).status == APPLIED
    unread = backend.apply(hidden, 1500)
    assert unread.status == FAILED, "it may well be the unreadable GPU: not a GPU the node lacks"
    assert unread.message is not None and "index 0: Unknown Error" in unread.message
