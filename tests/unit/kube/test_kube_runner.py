"""The controller runner: results and errors decide when a key is looked at again."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry
from support.clock import FakeClock

from climatik.kube.controller import Controller, Result, TerminalError
from climatik.kube.metrics import RuntimeMetrics
from climatik.kube.workqueue import ItemBackoff, WorkQueue


class Script:
    """A reconciler that answers from a script per call and records the keys it saw."""

    def __init__(self, *answers: Result | Exception | None) -> None:
        self.answers = list(answers)
        self.seen: list[str] = []

    def __call__(self, key: str) -> Result | None:
        self.seen.append(key)
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def make(script: Script, clock: FakeClock, registry: CollectorRegistry) -> Controller:
    queue = WorkQueue(name="test", clock=clock, backoff=ItemBackoff(base=1.0, cap=60.0))
    return Controller(name="test", reconcile=script, queue=queue, clock=clock, metrics=RuntimeMetrics(registry))


def count(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value(
        "climatik_controller_reconcile_total", {"controller": "test", "result": result}
    )
    return value or 0.0


def test_success_is_not_retried(clock: FakeClock, registry: CollectorRegistry) -> None:
    script = Script(Result())
    controller = make(script, clock, registry)
    controller.queue.add("ns/a")
    assert controller.process_next(timeout=0)
    clock.advance(3600)
    assert not controller.process_next(timeout=0)
    assert script.seen == ["ns/a"]
    assert count(registry, "success") == 1


def test_requeue_after_brings_the_key_back_when_asked(clock: FakeClock, registry: CollectorRegistry) -> None:
    script = Script(Result(requeue_after=30.0), Result())
    controller = make(script, clock, registry)
    controller.queue.add("ns/a")
    controller.process_next(timeout=0)
    clock.advance(29.0)
    assert not controller.process_next(timeout=0)
    clock.advance(1.0)
    assert controller.process_next(timeout=0)
    assert script.seen == ["ns/a", "ns/a"]
    assert count(registry, "requeue_after") == 1


def test_errors_are_retried_with_growing_back_off_and_success_resets_it(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    script = Script(RuntimeError("boom"), RuntimeError("boom"), Result(), RuntimeError("again"))
    controller = make(script, clock, registry)
    controller.queue.add("ns/a")
    controller.process_next(timeout=0)  # fails: retry in 1 s
    clock.advance(1.0)
    controller.process_next(timeout=0)  # fails: retry in 2 s
    clock.advance(1.0)
    assert not controller.process_next(timeout=0)
    clock.advance(1.0)
    controller.process_next(timeout=0)  # succeeds: back-off forgotten
    assert controller.queue.num_requeues("ns/a") == 0
    controller.queue.add("ns/a")
    controller.process_next(timeout=0)  # fails again: retry in 1 s, not 4 s
    clock.advance(1.0)
    assert controller.process_next(timeout=0)
    assert len(script.seen) == 5
    assert count(registry, "error") == 3
    assert registry.get_sample_value("climatik_controller_reconcile_errors_total", {"controller": "test"}) == 3


def test_a_terminal_error_is_not_retried(clock: FakeClock, registry: CollectorRegistry) -> None:
    script = Script(TerminalError("invalid spec"))
    controller = make(script, clock, registry)
    controller.queue.add("ns/bad")
    controller.process_next(timeout=0)
    clock.advance(3600)
    assert not controller.process_next(timeout=0)
    assert script.seen == ["ns/bad"]
    assert count(registry, "terminal") == 1


def test_reconcile_duration_is_observed(clock: FakeClock, registry: CollectorRegistry) -> None:
    def slow(key: str) -> None:
        clock.advance(0.2)

    queue = WorkQueue(clock=clock)
    controller = Controller(name="test", reconcile=slow, queue=queue, clock=clock, metrics=RuntimeMetrics(registry))
    queue.add("a")
    controller.process_next(timeout=0)
    labels = {"controller": "test"}
    assert registry.get_sample_value("climatik_controller_reconcile_duration_seconds_sum", labels) == pytest.approx(0.2)


def test_workers_share_the_load_but_never_a_key() -> None:
    active: Counter[str] = Counter()
    overlaps: list[str] = []
    done: list[str] = []
    lock = threading.Lock()

    def reconcile(key: str) -> None:
        with lock:
            active[key] += 1
            if active[key] > 1:
                overlaps.append(key)
        time.sleep(0.002)
        with lock:
            active[key] -= 1
            done.append(key)

    controller = Controller(name="parallel", reconcile=reconcile, queue=WorkQueue(), workers=4)
    controller.start()
    for round_ in range(50):
        for i in range(5):
            controller.queue.add(f"k{i}")
        if round_ % 10 == 0:
            time.sleep(0.005)
    deadline = time.monotonic() + 10
    while (len(controller.queue) or controller.queue.processing()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert controller.stop(grace=5)
    assert overlaps == []
    assert {f"k{i}" for i in range(5)} <= set(done)


def test_stop_lets_the_reconcile_in_flight_finish_and_starts_no_new_one() -> None:
    started = threading.Event()
    release = threading.Event()
    finished: list[str] = []

    def reconcile(key: str) -> None:
        started.set()
        release.wait(5)
        finished.append(key)

    controller = Controller(name="drain", reconcile=reconcile, queue=WorkQueue())
    controller.queue.add("first")
    controller.queue.add("second")
    controller.start()
    assert started.wait(5)
    stopper = threading.Thread(target=lambda: controller.stop(grace=5))
    stopper.start()
    time.sleep(0.05)
    release.set()
    stopper.join(5)
    assert finished == ["first"]


def test_stop_gives_up_waiting_after_the_grace_period() -> None:
    release = threading.Event()

    def stuck(key: str) -> None:
        release.wait(10)

    controller = Controller(name="stuck", reconcile=stuck, queue=WorkQueue())
    controller.queue.add("a")
    controller.start()
    time.sleep(0.05)
    began = time.monotonic()
    assert controller.stop(grace=0.2) is False
    assert time.monotonic() - began < 2
    release.set()
