"""The fake clock lets tests decide when time passes, for sleepers and waiters alike."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from support.clock import FakeClock

from climatik.clock import SystemClock


def test_sleep_moves_fake_time_at_once_and_is_recorded() -> None:
    clock = FakeClock(start=10.0)
    clock.sleep(2.5)
    clock.sleep(0.5)
    assert clock.now() == 13.0
    assert clock.sleeps == [2.5, 0.5]


def test_wall_time_moves_with_fake_time() -> None:
    clock = FakeClock(start_wall=dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    clock.advance(90)
    assert clock.wall() == dt.datetime(2025, 3, 1, 0, 1, 30, tzinfo=dt.UTC)


def test_a_waiter_times_out_only_when_the_clock_is_advanced_past_its_deadline() -> None:
    clock = FakeClock()
    stop = threading.Event()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(clock.wait_event(stop, 5.0)))
    waiter.start()
    assert clock.await_waiters(1) == [5.0]
    clock.advance(4.0)
    waiter.join(0.05)
    assert result == []
    clock.advance(1.0)
    waiter.join(5)
    assert result == [False]


def test_a_waiter_returns_as_soon_as_its_event_is_set() -> None:
    clock = FakeClock()
    stop = threading.Event()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(clock.wait_event(stop, 3600.0)))
    waiter.start()
    clock.await_waiters(1)
    stop.set()
    waiter.join(5)
    assert result == [True]
    assert clock.waiters() == []


def test_await_waiters_fails_when_nobody_waits() -> None:
    with pytest.raises(TimeoutError):
        FakeClock().await_waiters(1, timeout=0.05)


def test_the_system_clock_is_monotonic_and_waits_for_real() -> None:
    clock = SystemClock()
    before = clock.now()
    assert clock.wait_event(threading.Event(), 0.01) is False
    assert clock.now() - before >= 0.01
    assert clock.wall().tzinfo is dt.UTC
