"""The NVML backend as the node guard's power devices, against the device zoo: what it reads of each board
(instantaneous power where the field exists, the limit and its range, the clock), the limits it sets, the
refusals it reports, and a session that survives what NVML throws at it."""

from __future__ import annotations

import re

import pynvml
import pytest
from support.clock import FakeClock
from support.nvml_zoo import FakeNvml, device

from climatik.tune.backends.base import BackendUnavailableError
from climatik.tune.backends.nvml import NvmlGpuBackend
from climatik.tune.levers import CappedGpus, PowerLimitError


def backend_of(nvml: FakeNvml) -> NvmlGpuBackend:
    return NvmlGpuBackend(nvml=nvml, clock=FakeClock())


@pytest.mark.parametrize(("model", "low", "high"), [
    ("h100-sxm", 200.0, 700.0), ("h200", 200.0, 700.0), ("a100-sxm4-80gb", 100.0, 400.0), ("l4", 40.0, 72.0),
])
def test_each_board_reports_its_limit_and_the_range_it_accepts(model: str, low: float, high: float) -> None:
    nvml = FakeNvml.node(model, count=2)
    nvml.load(1)

    states = backend_of(nvml).power_states()

    assert set(states) == set(nvml.uuids())
    for state in states.values():
        assert (state.limit, state.min_limit, state.max_limit) == (high, low, high)
    idle, busy = (states[uuid] for uuid in nvml.uuids())
    assert idle.power == nvml.state(0).model.idle_power_w and busy.power > idle.power
    assert busy.clock_mhz == nvml.state(1).model.max_sm_mhz


def test_the_instantaneous_field_is_read_where_the_board_has_it() -> None:
    nvml = FakeNvml([device("h100-sxm", 0), device("t4", 1)])
    for index in (0, 1):
        nvml.set_state(index, power_w=300.0, instant_power_w=650.0)

    h100, t4 = (backend_of(nvml).power_states()[uuid] for uuid in nvml.uuids())

    assert h100.power == 650.0, "a burst shows in the instantaneous reading, not in the one-second average"
    assert t4.power == 300.0, "a board without the field is read through its averaged reading"


def test_a_limit_is_set_in_milliwatts_and_read_back() -> None:
    nvml = FakeNvml.node("h100-sxm", count=2)
    backend = backend_of(nvml)
    uuid = nvml.uuids()[1]

    backend.set_power_limit(uuid, 312.5)

    assert nvml.power_limit_w(1) == 312.5 and nvml.power_limit_w(0) == 700.0
    assert backend.power_states()[uuid].limit == 312.5


@pytest.mark.parametrize(("fault", "words"), [
    (pynvml.NVML_ERROR_NO_PERMISSION, "Insufficient Permissions (needs root or CAP_SYS_ADMIN)"),
    (pynvml.NVML_ERROR_NOT_SUPPORTED, "Not Supported"),
])
def test_a_refused_limit_says_why_and_changes_nothing(fault: int, words: str) -> None:
    nvml = FakeNvml.node("l4")
    nvml.fail("nvmlDeviceSetPowerManagementLimit", fault)

    with pytest.raises(PowerLimitError, match=re.escape(words)):
        backend_of(nvml).set_power_limit(nvml.uuids()[0], 50.0)
    assert nvml.power_limit_w(0) == 72.0


def test_a_limit_outside_the_boards_range_is_refused() -> None:
    nvml = FakeNvml.node("h100-sxm")

    with pytest.raises(PowerLimitError, match=r"150 W .* Invalid Argument"):
        backend_of(nvml).set_power_limit(nvml.uuids()[0], 150.0)
    assert nvml.power_limit_w(0) == 700.0


def test_a_mig_gpu_is_read_but_never_limited() -> None:
    nvml = FakeNvml([device("a100-sxm4-80gb-mig", 0), device("a100-sxm4-80gb", 1)])
    nvml.set_state(0, power_w=250.0, instant_power_w=250.0)
    backend = backend_of(nvml)
    mig, whole = nvml.uuids()

    assert backend.power_states()[mig].power == 250.0
    with pytest.raises(PowerLimitError, match="MIG mode is enabled"):
        backend.set_power_limit(mig, 200.0)
    backend.set_power_limit(whole, 200.0)

    assert (nvml.power_limit_w(0), nvml.power_limit_w(1)) == (400.0, 200.0)


def test_a_lost_gpu_is_left_out_and_the_others_still_read() -> None:
    nvml = FakeNvml.node("h200", count=3)
    backend = backend_of(nvml)
    backend.power_states()
    nvml.lose(1)

    assert set(backend.power_states()) == {nvml.uuids()[0], nvml.uuids()[2]}
    nvml.recover(1)
    assert set(backend.power_states()) == set(nvml.uuids())


def test_readings_go_on_after_a_driver_reload_under_the_session() -> None:
    nvml = FakeNvml.node("h100-sxm", count=2)
    backend = backend_of(nvml)
    backend.set_power_limit(nvml.uuids()[0], 400.0)
    nvml.driver_reload()

    states = backend.power_states()

    assert set(states) == set(nvml.uuids())
    assert states[nvml.uuids()[0]].limit == 700.0, "the reload put the default back, and the reading says so"


def test_nvml_that_cannot_start_is_the_backend_unavailable() -> None:
    nvml = FakeNvml.node("h100-sxm")
    nvml.fail_init(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    with pytest.raises(BackendUnavailableError, match="Driver Not Loaded"):
        backend_of(nvml).power_states()


def test_the_guard_holds_the_session_while_it_keeps_a_budget_and_lets_it_go_after() -> None:
    nvml = FakeNvml.node("h100-sxm", count=2)
    capped = CappedGpus(backend_of(nvml))
    capped.power_states()

    capped.hold(True)
    capped.release()
    held = nvml.session_open
    capped.hold(False)
    capped.release()

    assert held, "released between reconciles, the session would be opened again every tick"
    assert not nvml.session_open, "with persistence mode the session is let go once no budget needs it"
