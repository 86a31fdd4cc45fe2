"""Back-off grows, is capped, is jittered upwards only, and forgets after a healthy while."""

from __future__ import annotations

import random

import pytest
from support.clock import FakeClock

from climatik.kube.reflector import Backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(clock=FakeClock(), initial=1.0, cap=10.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_only_stretches_the_delay() -> None:
    backoff = Backoff(clock=FakeClock(), initial=1.0, cap=1.0, jitter=0.5, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    assert min(delays) >= 1.0
    assert max(delays) <= 1.5
    assert len(set(delays)) > 100


def test_a_healthy_period_resets_the_sequence() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock, initial=1.0, cap=30.0, jitter=0.0, reset_after=60.0)
    for _ in range(4):
        backoff.next_delay()
    clock.advance(59.0)
    assert backoff.next_delay() == 16.0
    clock.advance(61.0)
    assert backoff.next_delay() == 1.0


def test_reset_starts_over() -> None:
    backoff = Backoff(clock=FakeClock(), initial=0.5, jitter=0.0)
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 0.5


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": 5, "cap": 1}, {"factor": 0.5}, {"jitter": -1}])
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(clock=FakeClock(), **kwargs)  # type: ignore[arg-type]
