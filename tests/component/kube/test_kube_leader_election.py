"""Leader election on a Lease: one leader, takeover after expiry, release on stop, a leader that rides out an API
outage for as long as nobody else can hold its lease, and a restarted process that takes its own lease back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient, FakeRequest

from climatik.kube.client import LEASES
from climatik.kube.errors import UnavailableError
from climatik.kube.leader import LeaderElector, LeaseConfig


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


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


class LeaseApi:
    """A reactor that notes the fake time of every lease write it lets through, and refuses every lease
    request while `down` is set (the API server is unreachable)."""

    def __init__(self, cluster: FakeCluster, clock: FakeClock) -> None:
        self.clock = clock
        self.down = threading.Event()
        self.writes: list[float] = []
        self.refused = 0
        cluster.add_reactor(self)

    def __call__(self, request: FakeRequest) -> None:
        if request.resource != LEASES:
            return
        if self.down.is_set():
            self.refused += 1
            raise UnavailableError("apiserver unreachable")
        if request.verb in ("create", "update"):
            self.writes.append(self.clock.now())


def advance_to(clock: FakeClock, target: float, *, parked: int = 2) -> None:
    """Move the fake clock to `target` one wake-up at a time, each time once `parked` waits are parked again
    (a leader parks twice: in its renewal loop, and in the timer that watches its lease), so that every wait
    ends exactly on time and nothing runs while the clock moves."""
    while clock.now() < target:
        pending = clock.await_waiters(parked)
        clock.advance(min(*pending, target - clock.now()))


def test_a_leader_cut_off_from_the_api_keeps_leading_until_its_lease_could_have_passed_on(
    cluster: FakeCluster, clock: FakeClock
) -> None:
    api = LeaseApi(cluster, clock)
    run = Run(candidate(cluster, clock, "a"))
    assert run.started.wait(5)
    advance_to(clock, clock.now() + 2.0)  # one renewal
    eventually(lambda: len(api.writes) == 2)
    api.down.set()
    last_renewal = api.writes[-1]
    advance_to(clock, last_renewal + 14.9)  # far past the renew deadline (10 s): nobody else can hold it yet
    assert run.elector.is_leader()
    assert not run.stopped.is_set()
    assert api.refused >= 6  # it kept trying
    advance_to(clock, last_renewal + 15.0)
    assert run.stopped.wait(5)
    run.thread.join(5)
    assert run.result == [False]
    assert not run.elector.is_leader()


def test_an_outage_shorter_than_the_lease_costs_no_leadership(cluster: FakeCluster, clock: FakeClock) -> None:
    api = LeaseApi(cluster, clock)
    run = Run(candidate(cluster, clock, "a"))
    assert run.started.wait(5)
    api.down.set()
    advance_to(clock, clock.now() + 12.0)  # renewals fail for longer than the renew deadline
    api.down.clear()
    advance_to(clock, clock.now() + 30.0)
    assert run.elector.is_leader()
    assert not run.stopped.is_set()
    assert lease(cluster)["holderIdentity"] == "a"
    run.stop.set()
    run.thread.join(5)
    assert run.result == [True]


def test_a_renewal_that_hangs_cannot_stretch_the_lease(cluster: FakeCluster, clock: FakeClock) -> None:
    api = LeaseApi(cluster, clock)
    run = Run(candidate(cluster, clock, "a"))
    assert run.started.wait(5)
    started = api.writes[-1]
    hang, hanging = threading.Event(), threading.Event()

    def stall(request: FakeRequest) -> None:
        if request.resource == LEASES and not hang.is_set():
            hanging.set()
            hang.wait(10)  # a connection that says nothing, far longer than the lease

    cluster.add_reactor(stall)
    try:
        advance_to(clock, started + 2.0)
        assert hanging.wait(5)
        clock.advance(13.0)  # only the lease timer is parked now
        assert run.stopped.wait(5), "still leading past the lease while a renewal hung"
        assert not run.elector.is_leader()
    finally:
        hang.set()
    run.thread.join(5)
    assert run.result == [False]


def test_a_leader_that_sees_another_holder_stops_at_once(cluster: FakeCluster, clock: FakeClock) -> None:
    run = Run(candidate(cluster, clock, "a"))
    assert run.started.wait(5)
    current = FakeKubeClient(cluster).leases.get("climatik-monitor", namespace="climatik")
    current["spec"]["holderIdentity"] = "intruder"
    FakeKubeClient(cluster).leases.replace(current)
    advance_to(clock, clock.now() + 2.0)
    assert run.stopped.wait(5)
    run.thread.join(5)
    assert run.result == [False]


def test_a_restarted_process_with_the_same_identity_takes_its_lease_back_at_once(
    cluster: FakeCluster, clock: FakeClock
) -> None:
    pod = "climatik-monitor-7d9f6-x2k4p"  # the pod name survives a container restart
    crashed = candidate(cluster, clock, pod)
    assert crashed.try_acquire_or_renew()  # then the container dies, without releasing the lease
    acquired = lease(cluster)["acquireTime"]
    clock.advance(3.0)
    assert not candidate(cluster, clock, "climatik-monitor-7d9f6-other").try_acquire_or_renew()
    restarted = Run(candidate(cluster, clock, pod))
    assert restarted.started.wait(5)  # no fake time passed: it did not wait for the lease to expire
    spec = lease(cluster)
    assert spec["holderIdentity"] == pod
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == acquired
    restarted.stop.set()
    restarted.thread.join(5)


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
