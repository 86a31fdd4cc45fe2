"""The door to the GPU backend that the applier and the guard share: wrapping a backend loses none of what it
offers, and a backend that offers less still works with neutral answers."""

from __future__ import annotations

import pynvml
import pytest
from support.clock import FakeClock
from support.nvml_zoo import FakeNvml, device
from tune_doubles import GPU_A, FakeGpuBackend

from climatik.tune.applier import Applier
from climatik.tune.backends.base import GpuBackendExtras
from climatik.tune.backends.nvml import NvmlGpuBackend
from climatik.tune.levers import CappedGpus, PowerDevices, PowerLimitError
from climatik.tune.state import StateStore


def test_wrapping_nvml_keeps_its_extras_and_its_power_side() -> None:
    nvml = FakeNvml([device("a100-sxm4-80gb-mig", 0), device("h100-sxm", 1)])
    capped = CappedGpus(NvmlGpuBackend(nvml=nvml, clock=FakeClock()))
    mig, whole = nvml.uuids()

    capped.inventory()

    assert isinstance(capped, GpuBackendExtras) and isinstance(capped, PowerDevices)
    assert set(capped.blocked()) == {mig}, "the MIG GPU is still never locked"
    assert [gpu.uuid for gpu in capped.facts().gpus] == [mig, whole]
    assert set(capped.power_states()) == {mig, whole}
    capped.release()
    assert not nvml.session_open, "the release between reconciles still reaches NVML"


def test_the_applier_through_the_door_still_sees_nvml_health() -> None:
    clock = FakeClock()
    nvml = FakeNvml.node("h100-sxm")
    nvml.fail_init(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    capped = CappedGpus(NvmlGpuBackend(nvml=nvml, clock=clock))

    Applier(state=StateStore(None), clock=clock, gpu_backend=capped).inventory()

    assert not capped.health().ready and "Driver Not Loaded" in capped.health().message


def test_a_backend_without_extras_or_power_gets_neutral_answers() -> None:
    capped = CappedGpus(FakeGpuBackend([GPU_A]))

    assert capped.health().ready and capped.blocked() == {}
    assert capped.facts().backend == "fake"
    assert capped.power_states() == {}
    with pytest.raises(PowerLimitError, match="sets no power limits"):
        capped.set_power_limit(GPU_A, 300.0)
    capped.release()
