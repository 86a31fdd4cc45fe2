"""How fast an informer's cache is current again after the server comes back, and how it notices a watch that
died silently: back-off that starts over, Retry-After, a bounded wait while the server is away, the liveness
check on silent watches, and the order of events around a resync.

Each test drives the informer in its own threads with a fake clock, so every wait is read, never slept.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from support.kube import FakeRequest
from support.kube.informing import Harness, cm, eventually

from climatik.kube.errors import UnavailableError
from climatik.kube.metrics import RuntimeMetrics


class Outage:
    """A reactor that refuses lists and watches while set, as an apiserver that is down does."""

    def __init__(self) -> None:
        self.down = threading.Event()

    def __call__(self, request: FakeRequest) -> None:
        if self.down.is_set() and request.verb in ("list", "watch"):
            raise UnavailableError("connection refused")


def test_each_reconnect_after_a_healthy_watch_starts_the_back_off_over() -> None:
    harness = Harness()
    outage = Outage()
    harness.cluster.add_reactor(outage)
    try:
        harness.start()
        first_waits = []
        failures = 0
        for restart in range(3):
            eventually(harness.watching)
            harness.clock.advance(20.0)  # a healthy watch, then the server restarts, 20 s apart
            outage.down.set()
            harness.cluster.drop_watches()
            failures += 1
            wait = harness.next_retry(failures)
            first_waits.append(wait)
            harness.clock.advance(wait)
            failures += 1
            wait = harness.next_retry(failures)  # still down: a second, longer wait
            outage.down.clear()
            harness.clock.advance(wait)
            harness.api.create(cm(f"after-{restart}"))
            eventually(lambda: harness.cached() == harness.served())
        assert all(0.8 <= wait <= 1.2 for wait in first_waits), first_waits
        assert harness.verbs("list") == 1
    finally:
        harness.close()


@pytest.mark.parametrize("status", [429, 503])
def test_a_list_answered_with_retry_after_is_retried_when_the_server_said(status: int) -> None:
    harness = Harness()
    try:
        harness.cluster.refuse_next(status, retry_after=0.5, count=4, verbs={"list"})
        harness.api.create(cm("a"))
        harness.informer.start(harness.stop)
        waits = []
        for failures in range(1, 5):
            waits.append(harness.next_retry(failures))
            harness.clock.advance(waits[-1])
        assert harness.informer.wait_for_sync(5)
        assert all(0.5 <= wait <= 0.6 for wait in waits), waits
        assert harness.cached() == {"ns/a": "1"}
    finally:
        harness.close()


def test_a_watch_answered_with_retry_after_resumes_from_its_version_when_the_server_said() -> None:
    harness = Harness()
    try:
        harness.start()
        harness.cluster.refuse_next(429, retry_after=1, count=4, verbs={"watch"})
        harness.drop_watch()
        waits = []
        for failures in range(1, 5):
            waits.append(harness.next_retry(failures))
            harness.clock.advance(waits[-1])
        harness.api.create(cm("a"))
        eventually(lambda: harness.cached() == {"ns/a": "1"})
        assert all(1.0 <= wait <= 1.2 for wait in waits), waits
        assert harness.verbs("list") == 1
    finally:
        harness.close()


def test_a_long_retry_after_is_honoured_only_up_to_a_bound() -> None:
    # A kube-apiserver that is starting asks every client for 5 s, though it serves within 1-2 s.
    harness = Harness()
    try:
        harness.cluster.refuse_next(503, retry_after=5, count=3, verbs={"list"})
        harness.informer.start(harness.stop)
        for failures in range(1, 4):
            wait = harness.next_retry(failures)
            assert 1.0 <= wait <= 1.2
            harness.clock.advance(wait)
        assert harness.informer.wait_for_sync(5)
    finally:
        harness.close()


def test_however_long_the_server_is_unreachable_retries_come_within_two_seconds() -> None:
    harness = Harness()
    try:
        harness.cluster.fail_next(UnavailableError("connection refused"), count=12, verbs={"list"})
        harness.api.create(cm("a"))
        harness.informer.start(harness.stop)
        waits = []
        for failures in range(1, 13):
            waits.append(harness.next_retry(failures))
            harness.clock.advance(waits[-1])
        assert harness.informer.wait_for_sync(5)
        assert 0.8 <= waits[0] <= 1.2
        assert max(waits) <= 2.0, waits
        assert sum(waits) <= 24.0  # a 24 s outage is noticed within 2 s of its end
    finally:
        harness.close()


class WatchTimes:
    """A reactor noting the fake time of every watch request."""

    def __init__(self, harness: Harness) -> None:
        self.clock = harness.clock
        self.times: list[float] = []

    def __call__(self, request: FakeRequest) -> None:
        if request.verb == "watch":
            self.times.append(self.clock.now())


def test_a_watch_that_goes_silent_is_replaced_and_catches_up_without_a_relist() -> None:
    harness = Harness(max_watch_silence=60.0)
    watches = WatchTimes(harness)
    harness.cluster.add_reactor(watches)
    try:
        harness.api.create(cm("a"))
        harness.start()
        eventually(harness.watching)
        harness.cluster.silence_watches()  # a half-open connection: open, but nothing arrives any more
        silent_since = harness.clock.now()
        harness.api.create(cm("b"))
        harness.api.delete("a", namespace="ns")
        harness.clock.advance(30.0)
        harness.clock.advance(31.0)
        eventually(lambda: harness.cached() == {"ns/b": "1"})
        assert len(watches.times) == 2
        assert watches.times[1] >= silent_since + 60.0
        assert harness.restarts("silent") == 1
        assert harness.verbs("list") == 1
    finally:
        harness.close()


def test_events_and_bookmarks_keep_a_watch_alive() -> None:
    harness = Harness(max_watch_silence=60.0)
    watches = WatchTimes(harness)
    harness.cluster.add_reactor(watches)
    try:
        harness.start()
        for i in range(5):  # 200 s with something every 40 s: never 60 s of silence
            eventually(harness.watching)
            harness.clock.advance(40.0)
            if i % 2:
                harness.api.create(cm(f"c{i}"))
            else:  # other kinds move the version on, so the bookmark is news
                harness.client.pods.create({"metadata": {"name": f"p{i}", "namespace": "ns"}})
                harness.cluster.bookmark()
            eventually(lambda: harness.informer.reflector.resource_version == harness.cluster.resource_version)
        assert len(watches.times) == 1
        assert harness.restarts("silent") == 0
    finally:
        harness.close()


class _CounterHook:
    """Stands in for a metric: calls `hook` each time it is incremented."""

    def __init__(self, hook: Any) -> None:
        self._hook = hook

    def labels(self, *_: str) -> _CounterHook:
        return self

    def inc(self, amount: float = 1.0) -> None:
        self._hook()


def test_a_resync_that_races_a_list_never_reports_an_object_before_its_add() -> None:
    # The reflector is stalled right after it counts a list (by the metric below); a resync then runs in
    # another thread. Whatever the interleaving, handlers must see the add first.
    harness_holder: list[Harness] = []
    resyncs: list[threading.Thread] = []

    def resync_now() -> None:
        thread = threading.Thread(target=harness_holder[0].informer.resync)
        resyncs.append(thread)
        thread.start()
        thread.join(5.0)

    metrics = RuntimeMetrics(CollectorRegistry())
    metrics.relists_total = _CounterHook(resync_now)  # type: ignore[assignment]
    harness = Harness(metrics=metrics)
    harness_holder.append(harness)
    try:
        harness.api.create(cm("a"))
        harness.start()
        assert len(resyncs) == 1 and not resyncs[0].is_alive(), "the resync did not finish"
        eventually(lambda: len(harness.recorder.events) == 2)
        assert harness.recorder.events == [("add", "ns/a"), ("update", "ns/a")]
    finally:
        harness.close()
