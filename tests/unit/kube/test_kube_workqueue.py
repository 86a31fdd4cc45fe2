"""The work queue keeps client-go's promises: one copy of a key, one worker per key, nothing lost."""

from __future__ import annotations

import threading
import time

import pytest
from support.clock import FakeClock

from climatik.kube.workqueue import ItemBackoff, WorkQueue


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> WorkQueue:
    return WorkQueue(name="test", clock=clock, backoff=ItemBackoff(base=1.0, cap=8.0))


def drain(queue: WorkQueue) -> list[str]:
    keys = []
    while (key := queue.get(timeout=0)) is not None:
        keys.append(key)
        queue.done(key)
    return keys


def test_a_key_added_many_times_is_handed_out_once(queue: WorkQueue) -> None:
    for key in ("a", "b", "a", "a", "b", "c"):
        queue.add(key)
    assert drain(queue) == ["a", "b", "c"]


def test_a_key_in_flight_is_not_handed_to_a_second_worker(queue: WorkQueue) -> None:
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")
    assert queue.get(timeout=0) is None


def test_a_key_changed_while_in_flight_comes_back_after_done(queue: WorkQueue) -> None:
    queue.add("a")
    key = queue.get(timeout=0)
    queue.add("a")
    queue.add("a")
    queue.done(key)  # type: ignore[arg-type]
    assert drain(queue) == ["a"]


def test_a_key_not_changed_while_in_flight_does_not_come_back(queue: WorkQueue) -> None:
    queue.add("a")
    queue.done(queue.get(timeout=0))  # type: ignore[arg-type]
    assert drain(queue) == []


def test_add_after_waits_for_the_delay(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_after("a", 5.0)
    assert queue.get(timeout=0) is None
    clock.advance(4.9)
    assert len(queue) == 0
    clock.advance(0.1)
    assert drain(queue) == ["a"]


def test_the_earliest_delay_wins(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_after("a", 10.0)
    queue.add_after("a", 2.0)
    queue.add_after("a", 5.0)
    clock.advance(2.0)
    assert drain(queue) == ["a"]
    clock.advance(10.0)
    assert drain(queue) == []


def test_delayed_keys_come_out_in_time_order(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_after("late", 3.0)
    queue.add_after("early", 1.0)
    queue.add_after("now", 0)
    clock.advance(5.0)
    assert drain(queue) == ["now", "early", "late"]


def test_rate_limited_adds_back_off_exponentially_up_to_the_cap(queue: WorkQueue, clock: FakeClock) -> None:
    delays = []
    for _ in range(6):
        queue.add_rate_limited("a")
        waited = 0.0
        while queue.get(timeout=0) is None:
            clock.advance(0.5)
            waited += 0.5
        queue.done("a")
        delays.append(waited)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert queue.num_requeues("a") == 6


def test_forget_resets_the_back_off(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_rate_limited("a")
    queue.add_rate_limited("a")
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    clock.advance(1.0)
    assert drain(queue) == ["a"]


def test_back_offs_are_per_key(queue: WorkQueue) -> None:
    for _ in range(3):
        queue.add_rate_limited("flaky")
    queue.add_rate_limited("fine")
    assert queue.num_requeues("flaky") == 3
    assert queue.num_requeues("fine") == 1


def test_get_blocks_until_a_delayed_key_is_due(queue: WorkQueue, clock: FakeClock) -> None:
    got: list[str | None] = []
    queue.add_after("a", 30.0)
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    clock.await_waiters(1)
    assert got == []
    clock.advance(30.0)
    worker.join(5)
    assert got == ["a"]


def test_get_with_a_timeout_gives_up(queue: WorkQueue, clock: FakeClock) -> None:
    got: list[str | None] = ["unset"]
    worker = threading.Thread(target=lambda: got.__setitem__(0, queue.get(timeout=2.0)))
    worker.start()
    clock.await_waiters(1)
    clock.advance(2.0)
    worker.join(5)
    assert got == [None]


def test_shut_down_wakes_idle_workers_and_refuses_new_keys(queue: WorkQueue) -> None:
    results: list[str | None] = []
    workers = [threading.Thread(target=lambda: results.append(queue.get())) for _ in range(3)]
    for w in workers:
        w.start()
    time.sleep(0.05)
    queue.shut_down()
    for w in workers:
        w.join(5)
    assert results == [None, None, None]
    queue.add("late")
    queue.add_after("later", 0)
    assert queue.get(timeout=0) is None


def test_shut_down_still_hands_out_what_was_queued(queue: WorkQueue) -> None:
    queue.add("a")
    queue.add_after("delayed", 10)
    queue.shut_down()
    assert queue.get() == "a"
    assert queue.get() is None


def test_shut_down_with_drain_waits_for_keys_in_flight(queue: WorkQueue) -> None:
    queue.add("a")
    key = queue.get(timeout=0)
    drained: list[bool] = []
    waiter = threading.Thread(target=lambda: drained.append(queue.shut_down_with_drain()))
    waiter.start()
    time.sleep(0.05)
    assert drained == [], "drain returned while a key was still being processed"
    queue.done(key)  # type: ignore[arg-type]
    waiter.join(5)
    assert drained == [True]


def test_shut_down_with_drain_gives_up_after_its_timeout(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("a")
    queue.get(timeout=0)
    drained: list[bool] = []
    waiter = threading.Thread(target=lambda: drained.append(queue.shut_down_with_drain(timeout=10)))
    waiter.start()
    clock.await_waiters(1)
    clock.advance(10)
    waiter.join(5)
    assert drained == [False]


def test_concurrent_workers_never_hold_the_same_key() -> None:
    queue = WorkQueue(name="race")
    in_flight: set[str] = set()
    overlaps: list[str] = []
    processed: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        while (key := queue.get()) is not None:
            with lock:
                if key in in_flight:
                    overlaps.append(key)
                in_flight.add(key)
            time.sleep(0.001)
            with lock:
                in_flight.discard(key)
                processed.append(key)
            queue.done(key)

    workers = [threading.Thread(target=work) for _ in range(8)]
    for w in workers:
        w.start()
    for i in range(2000):
        queue.add(f"k{i % 10}")
    deadline = time.monotonic() + 10
    while (len(queue) or queue.processing()) and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.shut_down()
    for w in workers:
        w.join(5)
    assert overlaps == []
    assert set(processed) == {f"k{i}" for i in range(10)}
