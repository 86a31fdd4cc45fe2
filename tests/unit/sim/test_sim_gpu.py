"""One simulated GPU over simulated time: clock locks with a lag, firmware limits, power averaging."""

from __future__ import annotations

import pytest

from climatik.sim import A100, H100, Load, Phase, PhaseMix, SimGpu

PREFILL = Load(1.0, PhaseMix.only(Phase.PREFILL))
TRAINING = Load(1.0, PhaseMix.only(Phase.TRAINING))


def make_gpu(lag_s: float = 0.05, power_limit_w: float | None = None) -> SimGpu:
    return SimGpu(profile=H100, uuid="GPU-test", index=0, lag_s=lag_s, power_limit_w=power_limit_w)


def test_locked_clock_takes_effect_only_after_the_lag() -> None:
    gpu = make_gpu(lag_s=0.05)
    gpu.step(1.0, PREFILL)
    assert gpu.set_locked_clock(1200) == 1200
    gpu.step(0.04, PREFILL)
    assert gpu.sm_clock_mhz == 1980
    gpu.step(0.02, PREFILL)
    assert gpu.sm_clock_mhz == 1200


def test_lag_is_honoured_inside_a_long_step() -> None:
    lagged, instant = make_gpu(lag_s=0.5), make_gpu(lag_s=0.0)
    for gpu in (lagged, instant):
        gpu.set_locked_clock(990)
        gpu.step(1.0, PREFILL)
    assert lagged.sm_clock_mhz == instant.sm_clock_mhz == 990
    # Half a second more at full clock costs energy the instant GPU did not spend.
    assert lagged.energy_j > instant.energy_j + 0.4 * 200


def test_reset_returns_to_the_default_clock() -> None:
    gpu = make_gpu(lag_s=0.0)
    gpu.set_locked_clock(800)
    gpu.step(0.1, PREFILL)
    gpu.reset_locked_clock()
    gpu.step(0.1, PREFILL)
    assert gpu.sm_clock_mhz == H100.default_sm_mhz
    assert gpu.locked_max_mhz is None


def test_lock_is_snapped_and_clamped_to_supported_clocks() -> None:
    gpu = make_gpu()
    assert gpu.set_locked_clock(1234.5) == 1230
    assert gpu.set_locked_clock(9999) == 1980
    assert gpu.set_locked_clock(1) == 210
    with pytest.raises(ValueError, match="positive"):
        gpu.set_locked_clock(0)
    with pytest.raises(ValueError, match="positive"):
        gpu.set_locked_clock(float("nan"))


def test_power_limits_outside_the_boards_range_are_refused_like_nvml_refuses_them() -> None:
    gpu = make_gpu()
    assert (gpu.min_power_limit_w, gpu.max_power_limit_w, gpu.default_power_limit_w) == (200.0, 700.0, 700.0)
    for watts in (199.0, 701.0, float("nan"), 0.0):
        with pytest.raises(ValueError, match=r"outside 200\.\.700 W"):
            gpu.set_power_limit(watts)
    assert gpu.power_limit_w == 700.0
    gpu.set_power_limit(200.0)
    gpu.reset_power_limit()
    assert gpu.power_limit_w == 700.0
    with pytest.raises(ValueError, match=r"outside 100\.\.400 W"):
        SimGpu(profile=A100, uuid="GPU-a100", index=0, power_limit_w=450.0)


def test_a_lowered_limit_bites_within_the_firmware_response_time() -> None:
    gpu = make_gpu(lag_s=0.0)
    gpu.step(2.0, PREFILL)
    gpu.set_power_limit(300.0)
    gpu.step(0.05, PREFILL)
    # One time constant later the clock has come most of the way down, not all of it.
    assert 300.0 < gpu.instant_power_w < 550.0
    gpu.step(0.25, PREFILL)
    assert gpu.instant_power_w == pytest.approx(300.0, abs=3.0)
    assert gpu.sm_clock_mhz < 1980


def test_a_burst_overshoots_a_held_limit_briefly() -> None:
    gpu = make_gpu(lag_s=0.0, power_limit_w=300.0)
    gpu.step(2.0, Load(0.3, PhaseMix.only(Phase.DECODE)))
    gpu.step(0.05, PREFILL)
    assert gpu.instant_power_w > 300.0
    gpu.step(0.25, PREFILL)
    assert gpu.instant_power_w <= 300.0 + 1.0


def test_the_firmware_response_can_be_made_instant() -> None:
    gpu = SimGpu(profile=H100, uuid="GPU-test", index=0, lag_s=0.0, firmware_tau_s=0.0)
    gpu.step(1.0, PREFILL)
    gpu.set_power_limit(300.0)
    gpu.step(0.05, PREFILL)
    assert gpu.instant_power_w <= 300.0


def test_the_instant_reading_shows_a_short_burst_the_one_second_average_hides() -> None:
    gpu = make_gpu()
    gpu.step(2.0, Load(0.3, PhaseMix.only(Phase.DECODE)))
    gpu.step(0.1, PREFILL)
    assert gpu.instant_power_w == pytest.approx(700.0)
    assert gpu.average_power_w < 300.0


def test_readings_carry_seeded_noise_and_the_energy_stays_exact() -> None:
    noisy = [SimGpu(profile=H100, uuid="GPU-n", index=0, noise=0.01, noise_seed="s") for _ in range(2)]
    exact = make_gpu()
    errors = []
    for _ in range(200):
        for gpu in (*noisy, exact):
            gpu.step(0.05, PREFILL)
        assert noisy[0].average_power_w == noisy[1].average_power_w
        errors.append(noisy[0].instant_power_w / noisy[0].true_instant_power_w - 1.0)
    assert noisy[0].energy_j == pytest.approx(exact.energy_j)
    assert max(abs(e) for e in errors) <= 0.03 + 1e-9
    assert 0.005 < (sum(e * e for e in errors) / len(errors)) ** 0.5 < 0.015


def test_firmware_enforces_a_lowered_power_limit() -> None:
    gpu = make_gpu(power_limit_w=450.0)
    gpu.step(2.0, PREFILL)
    assert gpu.sm_clock_mhz < 1980
    assert gpu.instant_power_w <= 450.0
    assert gpu.average_power_w <= 450.0


def test_firmware_throttles_training_below_the_lock() -> None:
    gpu = make_gpu(lag_s=0.0)
    gpu.set_locked_clock(1980)
    gpu.step(2.0, TRAINING)
    assert gpu.target_mhz == 1980
    assert gpu.sm_clock_mhz < 1980
    assert gpu.average_power_w <= H100.power_limit_w


def test_reported_power_is_a_one_second_moving_average() -> None:
    gpu = make_gpu()
    gpu.step(5.0, Load.idle())
    gpu.step(0.5, PREFILL)
    assert gpu.instant_power_w == pytest.approx(700.0)
    assert gpu.average_power_w == pytest.approx((75.0 + 700.0) / 2)
    gpu.step(0.5, PREFILL)
    assert gpu.average_power_w == pytest.approx(700.0)


def test_average_does_not_depend_on_step_size() -> None:
    coarse, fine = make_gpu(), make_gpu()
    coarse.step(0.3, Load.idle())
    coarse.step(0.9, PREFILL)
    fine.step(0.3, Load.idle())
    for _ in range(90):
        fine.step(0.01, PREFILL)
    assert coarse.average_power_w == pytest.approx(fine.average_power_w)
    assert coarse.energy_j == pytest.approx(fine.energy_j)


def test_energy_counter_integrates_power() -> None:
    gpu = make_gpu()
    gpu.step(10.0, PREFILL)
    assert gpu.energy_j == pytest.approx(7000.0)


def test_work_done_tracks_throughput() -> None:
    fast, slow = make_gpu(lag_s=0.0), make_gpu(lag_s=0.0)
    slow.set_locked_clock(990)
    for gpu in (fast, slow):
        gpu.step(10.0, PREFILL)
    assert slow.work_done / fast.work_done == pytest.approx(0.51, abs=0.03)
