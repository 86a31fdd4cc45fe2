"""When a reading shows the last change: late enough, clocks under new caps, a raise visible, or waited long enough."""

from __future__ import annotations

from climatik.algorithms import Observation, ObservedGpu
from climatik.algorithms.settle import settled

CHANGED = 1_700_000_000.0
CAPS: dict[str, int | None] = {"a": 1500, "b": 1500}


def reading(at: float, *clocks: int) -> Observation:
    gpus = tuple(ObservedGpu(uuid, "node", 400.0, mhz) for uuid, mhz in zip(("a", "b"), clocks, strict=False))
    return Observation(at=at, power=800.0, gpus=gpus)


def shows(obs: Observation, *, raised_from: float | None = None) -> bool:
    return settled(obs, CAPS, CHANGED, floor_s=2.0, max_wait_s=60.0, raised_from=raised_from)


def test_nothing_is_pending_without_a_change() -> None:
    assert settled(reading(CHANGED, 1980, 1980), CAPS, None, floor_s=2.0, max_wait_s=60.0)


def test_a_reading_taken_within_the_averaging_window_of_a_cut_does_not_show_it() -> None:
    assert not shows(reading(CHANGED + 1.0, 1500, 1500))  # its average mixes the old and the new clocks
    assert shows(reading(CHANGED + 2.0, 1500, 1500))


def test_a_reading_still_showing_a_clock_over_its_new_cap_was_collected_before_the_cut() -> None:
    # A slow exporter republishes its last collect: the scrape is recent, the values are not.
    assert not shows(reading(CHANGED + 30.0, 1500, 1980))
    assert shows(reading(CHANGED + 30.0, 1500, 1485))


def test_a_raise_shows_once_a_gpu_runs_above_its_old_clock() -> None:
    assert not shows(reading(CHANGED + 30.0, 1200, 1200), raised_from=1200)  # old clocks fit the new caps too
    assert shows(reading(CHANGED + 30.0, 1200, 1500), raised_from=1200)


def test_a_change_that_never_shows_stops_blocking_after_the_longest_wait() -> None:
    assert not shows(reading(CHANGED + 59.0, 1980, 1980))
    assert shows(reading(CHANGED + 60.0, 1980, 1980))
