"""Clamping: targets stay within what the hardware reported, on supported clocks, never above what was asked."""

from __future__ import annotations

import pytest

from climatik.algorithms import CpuLimits, GpuLimits, Inventory, Targets, clamp_cpu, clamp_gpu, clamp_targets
from climatik.algorithms.framework import floor_gpu, step_above

H100 = GpuLimits("GPU-a", 210, 1980, tuple(range(210, 1981, 15)))
NO_STEPS = GpuLimits("GPU-b", 300, 1400)


@pytest.mark.parametrize(("asked", "given"), [
    (1500, 1500), (1509, 1500), (1514.9, 1500), (5000, 1980), (100, 210), (210, 210), (0, 210),
])
def test_gpu_targets_snap_down_within_the_range(asked: float, given: int) -> None:
    assert clamp_gpu(asked, H100) == given


def test_without_a_step_list_any_whole_mhz_in_range_is_allowed() -> None:
    assert [clamp_gpu(mhz, NO_STEPS) for mhz in (1000.7, 100, 9999)] == [1000, 300, 1400]


def test_steps_outside_the_reported_range_are_never_used() -> None:
    odd = GpuLimits("GPU-c", 500, 1000, (300, 450, 600, 900, 1200))

    assert clamp_gpu(550, odd) == 600  # the lowest usable step, since 450 is below the minimum
    assert clamp_gpu(1100, odd) == 900


def test_floor_snaps_up_and_step_above_moves_one_step() -> None:
    assert floor_gpu(H100, 700) == 705
    assert floor_gpu(H100, None) == 210
    assert floor_gpu(H100, 5000) == 1980
    assert step_above(H100, 1500) == 1515
    assert step_above(H100, 1980) == 1980


def test_cpu_targets_are_clamped_to_cpuinfo_limits() -> None:
    limits = CpuLimits(800, 3000)

    assert [clamp_cpu(mhz, limits) for mhz in (100, 1234.9, 4000)] == [800, 1234, 3000]


def test_targets_without_inventory_are_dropped_and_reported() -> None:
    inventory = Inventory({"GPU-a": H100}, {("n1", 0): CpuLimits(800, 3000)})
    clamped = clamp_targets(Targets({"GPU-a": 1509, "GPU-new": 1200, "GPU-gone": None},
                                    {("n1", 0): 500, ("n2", 3): 1000}), inventory)

    assert clamped.targets.gpus == {"GPU-a": 1500, "GPU-gone": None}
    assert clamped.targets.cpus == {("n1", 0): 800}
    assert clamped.waiting_for_inventory == ("GPU-new",)
    assert clamped.cpus_without_inventory == (("n2", 3),)
