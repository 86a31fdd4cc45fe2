"""The status summary of a decision: stable while nothing changes."""

from __future__ import annotations

from climatik.algorithms import Targets
from climatik.api import Recommendation
from climatik.recommend.summary import recommendation


def test_uniform_targets_are_summarised_by_their_clock() -> None:
    summary = recommendation(algorithm="closed-loop", targets=Targets({"a": 1200, "b": 1200}, {("n", 0): 2000}),
                             state_text='{"v":2}', applied=True, changed=True, previous=None,
                             now="2025-01-01T00:00:00Z")

    assert summary == Recommendation(algorithm="closed-loop", gpu_frequency=1200, cpu_frequency=2000,
                                     target_count=3, applied=True, last_changed="2025-01-01T00:00:00Z",
                                     state='{"v":2}')


def test_mixed_targets_have_no_single_clock_and_unchanged_keeps_the_last_change_time() -> None:
    previous = Recommendation(last_changed="2024-12-31T23:00:00Z")
    summary = recommendation(algorithm="x", targets=Targets({"a": 1200, "b": 900}), state_text="", applied=False,
                             changed=False, previous=previous, now="2025-01-01T00:00:00Z")

    assert summary.gpu_frequency is None and summary.state is None
    assert summary.last_changed == "2024-12-31T23:00:00Z"
