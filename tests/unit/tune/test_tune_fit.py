"""Fitting targets to what the hardware supports: down to a step, into the range, saying why."""

from __future__ import annotations

import pytest

from climatik.tune.backends.base import Fit, fit_to_range, fit_to_steps

STEPS = [1410, 210, 225, 240, 1395]  # unordered, as NVML lists them


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (225, Fit(225)),
        (239, Fit(225, "239 MHz is not a supported step; snapped down to 225 MHz")),
        (1000, Fit(240, "1000 MHz is not a supported step; snapped down to 240 MHz")),
        (1410, Fit(1410)),
        (5000, Fit(1410, "5000 MHz is above the highest supported clock; using 1410 MHz")),
        (0, Fit(210, "0 MHz is below the lowest supported clock; using 210 MHz")),
    ],
)
def test_targets_snap_down_to_a_supported_step(requested: int, expected: Fit) -> None:
    assert fit_to_steps(requested, STEPS) == expected


def test_no_steps_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no supported clock steps"):
        fit_to_steps(1000, [])


@pytest.mark.parametrize(
    ("requested", "low", "high", "expected"),
    [
        (2000, 800, 3500, Fit(2000)),
        (500, 800, 3500, Fit(800, "500 MHz is below the minimum 800 MHz; using 800 MHz")),
        (4000, 800, 3500, Fit(3500, "4000 MHz is above the maximum 3500 MHz; using 3500 MHz")),
        (4000, None, None, Fit(4000)),
    ],
)
def test_targets_are_clamped_into_a_range(requested: int, low: int | None, high: int | None, expected: Fit) -> None:
    assert fit_to_range(requested, low, high) == expected
