"""Leader election on a Lease: one leader, takeover after expiry, release on stop, loss on failed renewals."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient, FakeRequest

from climatik.kube.client import LEASES
from climatik.kube.errors import UnavailableError
from climatik.kube.leader import LeaderElector, LeaseConfig


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> FakeCluster:
    return FakeCluster(clock=clock)


def candidate(cluster: FakeCluster, clock: FakeClock, identity: str) -> LeaderElector:
    config = LeaseConfig(namespace="climatik", name="climatik-monitor", identity=identity)
    return LeaderElector(FakeKubeClient(cluster), config, clock=clock)


def lease(cluster: FakeCluster) -> dict[str, Any]:
    (obj,) = cluster.objects(LEASES)
    return obj["spec"]  # type: ignore[no-any-return]


def test_of_two_candidates_exactly_one_leads(cluster: FakeCluster, clock: FakeClock) -> None:
    a, b = candidate(cluster, clock, "a"), candidate(cluster, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.try_acquire_or_renew()  # renewing
    spec = lease(cluster)
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0


def test_a_renewed_lease_is_never_taken(cluster: FakeCluster, clock: FakeClock) -> None:
    a, b = candidate(cluster, clock, "a"), candidate(cluster, clock, "b")
    a.try_acquire_or_renew()
    for _ in range(20):
        clock.advance(2)
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()


def test_a_lease_no_longer_renewed_is_taken_after_its_duration(cluster: FakeCluster, clock: FakeClock) -> None:
    a, b = candidate(cluster, clock, "a"), candidate(cluster, clock, "b")
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b starts watching the record here
    clock.advance(14.9)
    assert not b.try_acquire_or_renew()
    clock.advance(0.1)
    assert b.try_acquire_or_renew()
    spec = lease(cluster)
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1
    assert not a.try_acquire_or_renew()


def test_expiry_is_judged_on_the_candidates_own_clock(cluster: FakeCluster, clock: FakeClock) -> None:
    a = candidate(cluster, clock, "a")
    a.try_acquire_or_renew()
    clock.advance(3600)  # the record is old, but b has only just seen it
    b = candidate(cluster, clock, "b")
    assert not b.try_acquire_or_renew()
    clock.advance(15)
    assert b.try_acquire_or_renew()


def test_a_released_lease_is_taken_at_once(cluster: FakeCluster, clock: FakeClock) -> None:
    a, b = candidate(cluster, clock, "a"), candidate(cluster, clock, "b")
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    spec = lease(cluster)
    assert spec.get("holderIdentity") is None
    assert spec["leaseDurationSeconds"] == 1
    assert b.try_acquire_or_renew()


def test_release_by_a_non_holder_changes_nothing(cluster: FakeCluster, clock: FakeClock) -> None:
    a, b = candidate(cluster, clock, "a"), candidate(cluster, clock, "b")
    a.try_acquire_or_renew()
    b.release()
    assert lease(cluster)["holderIdentity"] == "a"


class Run:
    """A candidate's run() loop in a thread, recording its callbacks."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector
        self.stop = threading.Event()
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.result: list[bool] = []
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        self.result.append(
            self.elector.run(self.stop, on_started_leading=self.started.set, on_stopped_leading=self.stopped.set)
        )


def test_a_leader_that_cannot_renew_gives_up_within_the_renew_deadline(cluster: FakeCluster, clock: FakeClock) -> None:
    run = Run(candidate(cluster, clock, "a"))
    assert run.started.wait(5)
    outage = threading.Event()

    def refuse(request: FakeRequest) -> None:
        if outage.is_set():
            raise UnavailableError("apiserver unreachable")

    cluster.add_reactor(refuse)
    outage.set()
    waited = 0.0
    while not run.stopped.is_set() and waited < 30:
        (pending,) = clock.await_waiters(1)
        clock.advance(pending)
        waited += pending
        time.sleep(0.01)
    run.thread.join(5)
    assert run.result == [False]
    assert not run.elector.is_leader()
    assert 10 <= waited <= 12


def test_stopping_the_leader_releases_the_lease(cluster: FakeCluster, clock: FakeClock) -> None:
    run = Run(candidate(cluster, clock, "a"))
    assert run.started.wait(5)
    assert run.elector.is_leader()
    run.stop.set()
    run.thread.join(5)
    assert run.result == [True]
    assert run.stopped.is_set()
    assert lease(cluster).get("holderIdentity") is None


def test_a_waiting_candidate_takes_over_when_the_leader_stops(cluster: FakeCluster, clock: FakeClock) -> None:
    leader = Run(candidate(cluster, clock, "a"))
    assert leader.started.wait(5)
    follower = Run(candidate(cluster, clock, "b"))
    clock.await_waiters(2)
    assert not follower.started.is_set()
    leader.stop.set()
    leader.thread.join(5)
    for _ in range(5):
        if follower.started.is_set():
            break
        clock.advance(2.4)
        time.sleep(0.02)
    assert follower.started.wait(5)
    follower.stop.set()
    follower.thread.join(5)


@pytest.mark.parametrize(
    "timings", [(10.0, 10.0, 2.0), (15.0, 2.0, 2.0), (15.0, 10.0, 0.0)], ids=["deadline", "retry", "zero"]
)
def test_inconsistent_timings_are_refused(timings: tuple[float, float, float]) -> None:
    duration, deadline, retry = timings
    with pytest.raises(ValueError):
        LeaseConfig(namespace="n", name="l", identity="i", lease_duration=duration, renew_deadline=deadline,
                    retry_period=retry)
