"""The power and throughput model: how clock, load and phase shape what a GPU draws and delivers."""

from __future__ import annotations

import itertools

import pytest

from climatik.sim import A100, H100, H200, GpuProfile, Load, Phase, PhaseMix, profile_by_key
from climatik.sim.node import device_name, gpu_uuid
from climatik.sim.physics import decode_tradeoff, firmware_clock_mhz, power_w, relative_throughput, throughput

PREFILL = PhaseMix.only(Phase.PREFILL)
DECODE = PhaseMix.only(Phase.DECODE)
TRAINING = PhaseMix.only(Phase.TRAINING)


@pytest.mark.parametrize("profile", [H100, H200, A100], ids=lambda p: p.key)
@pytest.mark.parametrize("mix", [PREFILL, DECODE, TRAINING], ids=["prefill", "decode", "training"])
def test_power_rises_with_clock(profile: GpuProfile, mix: PhaseMix) -> None:
    load = Load(1.0, mix)
    powers = [power_w(profile, mhz, load) for mhz in profile.supported_clocks()]
    assert all(lower < higher for lower, higher in itertools.pairwise(powers))


@pytest.mark.parametrize("profile", [H100, H200, A100], ids=lambda p: p.key)
def test_power_rises_with_load_from_idle(profile: GpuProfile) -> None:
    powers = [power_w(profile, profile.max_sm_mhz, Load(u, PREFILL)) for u in (0.0, 0.25, 0.5, 1.0)]
    assert powers[0] == pytest.approx(profile.idle_w)
    assert all(lower < higher for lower, higher in itertools.pairwise(powers))


def test_published_phase_powers_at_max_clock_and_full_load() -> None:
    assert power_w(H100, 1980, Load(1.0, PREFILL)) == pytest.approx(700.0)
    assert power_w(H100, 1980, Load(1.0, DECODE)) == pytest.approx(380.0)
    assert power_w(A100, 1410, Load(1.0, PREFILL)) == pytest.approx(400.0)
    assert power_w(A100, 1410, Load(1.0, DECODE)) == pytest.approx(250.0)
    assert power_w(H200, 1980, Load(1.0, DECODE)) < power_w(H100, 1980, Load(1.0, DECODE))


@pytest.mark.parametrize("mix", [PREFILL, TRAINING], ids=["prefill", "training"])
def test_compute_bound_throughput_falls_about_in_proportion_to_clock(mix: PhaseMix) -> None:
    half = relative_throughput(H100, 990, mix)
    assert half == pytest.approx(0.5, abs=0.03)
    assert relative_throughput(H100, 1485, mix) == pytest.approx(0.75, abs=0.03)


def test_decode_throughput_barely_moves_with_clock() -> None:
    assert relative_throughput(H100, 1485, DECODE) > 0.95
    assert relative_throughput(H100, 990, DECODE) > 0.85


def test_lowering_decode_clock_saves_far_more_power_than_throughput() -> None:
    load = Load(1.0, DECODE)
    power_saved = 1 - power_w(H100, 1200, load) / power_w(H100, 1980, load)
    throughput_lost = 1 - throughput(H100, 1200, load) / throughput(H100, 1980, load)
    assert power_saved > 3 * throughput_lost


def test_decode_reproduces_the_published_energy_per_token_saving() -> None:
    # arXiv 2501.08219: about 40 % less energy per token for 1-6 % more latency on H100.
    tradeoff = decode_tradeoff(H100, max_latency_added=0.06)
    assert tradeoff.energy_saved == pytest.approx(0.40, abs=0.02)
    assert 0.01 <= tradeoff.latency_added <= 0.06 + 1e-9
    assert tradeoff.mhz < H100.max_sm_mhz


def test_power_limit_ranges_are_the_boards() -> None:
    assert H100.power_limit_range == (200.0, 700.0)
    assert H200.power_limit_range == (200.0, 700.0)
    assert A100.power_limit_range == (100.0, 400.0)
    assert (H100.default_power_limit_w, A100.default_power_limit_w) == (700.0, 400.0)


def test_plants_the_model_does_not_match() -> None:
    load = Load(1.0, TRAINING)
    steep, flat = H100.with_alpha(3.5), H100.with_alpha(2.0)
    assert power_w(steep, 1980, load) == pytest.approx(power_w(H100, 1980, load))
    assert power_w(steep, 990, load) < power_w(H100, 990, load) < power_w(flat, 990, load)
    hungry = H100.scaled(1.06)
    assert power_w(hungry, 1980, load) - H100.idle_w == pytest.approx(1.06 * (740.0 - H100.idle_w))
    assert power_w(hungry, 210, Load.idle()) == H100.idle_w
    assert throughput(hungry, 1500, load) == throughput(H100, 1500, load)


def test_mix_is_share_weighted() -> None:
    mixed = power_w(H100, 1500, Load(0.8, PhaseMix.inference(0.25)))
    parts = 0.25 * power_w(H100, 1500, Load(0.8, PREFILL)) + 0.75 * power_w(H100, 1500, Load(0.8, DECODE))
    assert mixed == pytest.approx(parts)


def test_idle_gpu_does_no_work_and_draws_idle_power() -> None:
    assert throughput(H100, 1980, Load.idle()) == 0.0
    assert power_w(H100, 210, Load.idle()) == pytest.approx(H100.idle_w)


def test_firmware_lowers_clock_until_power_fits_the_limit() -> None:
    load = Load(1.0, PREFILL)
    mhz = firmware_clock_mhz(H100, 1980, load, power_limit_w=400.0)
    assert mhz < 1980
    assert mhz in H100.supported_clocks()
    assert power_w(H100, mhz, load) <= 400.0
    assert power_w(H100, mhz + H100.step_mhz, load) > 400.0


def test_firmware_keeps_requested_clock_when_power_fits() -> None:
    assert firmware_clock_mhz(H100, 1500, Load(1.0, DECODE), power_limit_w=700.0) == 1500


def test_training_at_full_load_is_throttled_by_the_default_limit() -> None:
    mhz = firmware_clock_mhz(H100, 1980, Load(1.0, TRAINING), power_limit_w=H100.power_limit_w)
    assert mhz < 1980
    assert power_w(H100, mhz, Load(1.0, TRAINING)) <= H100.power_limit_w


def test_firmware_floors_at_min_clock_when_nothing_fits() -> None:
    assert firmware_clock_mhz(H100, 1980, Load(1.0, PREFILL), power_limit_w=50.0) == H100.min_sm_mhz


def test_supported_clocks_and_snapping() -> None:
    clocks = H100.supported_clocks()
    assert clocks[0] == 210
    assert clocks[-1] == 1980
    assert {b - a for a, b in itertools.pairwise(clocks)} == {15}
    assert H100.snap(1500) == 1500
    assert H100.snap(1507) == 1500
    assert H100.snap(5000) == 1980
    assert H100.snap(10) == 210


def test_profiles_carry_the_names_nvidia_tools_print() -> None:
    assert profile_by_key("H100").model_name == "NVIDIA H100 80GB HBM3"
    assert profile_by_key("h200").model_name == "NVIDIA H200"
    assert profile_by_key("a100").model_name == "NVIDIA A100-SXM4-80GB"
    assert (A100.max_sm_mhz, A100.power_limit_w, A100.default_sm_mhz) == (1410, 400.0, 1410)
    with pytest.raises(ValueError, match="unknown GPU profile"):
        profile_by_key("v100")


def test_phase_mix_must_sum_to_one() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        PhaseMix(prefill=0.5, decode=0.3)
    with pytest.raises(ValueError, match="unknown phases"):
        PhaseMix.from_mapping({"prefil": 1.0})
    with pytest.raises(ValueError, match="utilisation"):
        Load(1.5, PREFILL)


def test_gpu_names_are_stable_and_shaped_like_nvml_uuids() -> None:
    uuid = gpu_uuid("node-a", 3)
    assert uuid == gpu_uuid("node-a", 3)
    assert uuid != gpu_uuid("node-b", 3)
    assert uuid.startswith("GPU-")
    assert [len(part) for part in uuid[4:].split("-")] == [8, 4, 4, 4, 12]
    assert device_name(3) == "nvidia3"
