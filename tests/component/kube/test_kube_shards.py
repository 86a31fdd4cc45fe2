"""Shards over shard Leases: keys split by consistent hashing, a newcomer acts only once every member has handed
over, a member that is gone hands its keys over once its Lease has run out (never before), one that leaves at
once, and a member that lapsed comes back as a new incarnation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import pytest
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient

from climatik.kube.client import LEASES
from climatik.kube.errors import UnavailableError
from climatik.kube.shards import (
    ACKED_ANNOTATION,
    GROUP_LABEL,
    ShardConfig,
    ShardMembership,
    lease_name,
    namespace_of,
    owner_of,
)

KEYS = [f"ns-{i % 7}/policy-{i}" for i in range(400)]


def member(cluster: FakeCluster, clock: FakeClock, identity: str, group: str = "climatik-monitor",
           **options: object) -> ShardMembership:
    config = ShardConfig.of(namespace="climatik-system", group=group, identity=identity)
    return ShardMembership(FakeKubeClient(cluster), config, keys=lambda: KEYS, clock=clock, **options)  # type: ignore[arg-type]


def owners(members: Iterable[ShardMembership]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {key: [] for key in KEYS}
    for m in members:
        for key in KEYS:
            if m.owns(key):
                found[key].append(m.config.identity)
    return found


def assert_one_owner_at_most(members: Iterable[ShardMembership]) -> None:
    shared = {key: who for key, who in owners(members).items() if len(who) > 1}
    assert not shared, f"owned twice: {dict(list(shared.items())[:3])}"


def assert_every_key_owned_once(members: Iterable[ShardMembership]) -> None:
    counts = {key: len(who) for key, who in owners(members).items()}
    assert set(counts.values()) == {1}, {n: sum(1 for c in counts.values() if c == n) for n in set(counts.values())}


def settle(*members: ShardMembership, rounds: int = 2) -> None:
    for _ in range(rounds):
        for m in members:
            m.round()
            assert_one_owner_at_most(members)


def test_a_lone_member_owns_every_key_from_its_first_round(cluster: FakeCluster, clock: FakeClock) -> None:
    a = member(cluster, clock, "monitor-a")
    assert not a.owns(KEYS[0])
    assert a.round()
    assert all(a.owns(key) for key in KEYS)
    assert a.active() == (True, "ok")
    (lease,) = cluster.objects(LEASES)
    assert lease["metadata"]["name"] == "climatik-monitor-shard-monitor-a"
    assert lease["metadata"]["labels"] == {GROUP_LABEL: "climatik-monitor"}
    assert lease["spec"]["holderIdentity"] == "monitor-a"


def test_three_members_split_the_keys_evenly_and_each_key_has_one_owner(cluster: FakeCluster,
                                                                         clock: FakeClock) -> None:
    members = [member(cluster, clock, name) for name in ("monitor-a", "monitor-b", "monitor-c")]
    settle(*members)
    assert_every_key_owned_once(members)
    shares = [len(m.owned_keys()) for m in members]
    assert all(90 <= share <= 180 for share in shares), shares  # 400 keys, about 133 each


def test_sharded_by_namespace_every_key_of_a_namespace_has_the_same_owner(cluster: FakeCluster,
                                                                         clock: FakeClock) -> None:
    members = [member(cluster, clock, name, unit=namespace_of) for name in ("monitor-a", "monitor-b", "monitor-c")]
    settle(*members)
    assert_every_key_owned_once(members)
    by_namespace: dict[str, set[str]] = {}
    for key, (who,) in owners(members).items():
        by_namespace.setdefault(namespace_of(key), set()).add(who)
    assert all(len(who) == 1 for who in by_namespace.values()), by_namespace
    assert len(set().union(*by_namespace.values())) > 1, "the namespaces are spread over the members"

    members[2].leave()
    settle(*members[:2])
    assert_every_key_owned_once(members[:2])
    assert all(len({next(m.config.identity for m in members[:2] if m.owns(key)) for key in KEYS
                     if namespace_of(key) == namespace}) == 1 for namespace in by_namespace)


def test_a_newcomer_acts_only_after_the_others_have_handed_its_keys_over(cluster: FakeCluster,
                                                                          clock: FakeClock) -> None:
    a = member(cluster, clock, "monitor-a")
    a.round()
    b = member(cluster, clock, "monitor-b")
    b.round()  # b sees a, which has not acknowledged it yet
    assert not b.owned_keys()
    assert b.active() == (False, "waiting for the other shards to hand over")
    assert len(a.owned_keys()) == len(KEYS)  # a has not seen b yet: it keeps every key meanwhile
    a.round()  # a switches to {a, b}, then acknowledges b
    moving = {key for key in KEYS if owner_of(key, ["monitor-a", "monitor-b"]) == "monitor-b"}
    assert not any(a.owns(key) for key in moving)
    assert not b.owned_keys()
    b.round()  # b reads the acknowledgement
    assert b.owned_keys() == moving
    assert_every_key_owned_once([a, b])


def test_a_member_acknowledges_only_once_its_reconcile_on_a_lost_key_has_ended(cluster: FakeCluster,
                                                                               clock: FakeClock) -> None:
    a = member(cluster, clock, "monitor-a")
    a.round()
    b = member(cluster, clock, "monitor-b")
    b.round()
    key = next(k for k in KEYS if owner_of(k, ["monitor-a", "monitor-b"]) == "monitor-b")
    released = threading.Event()

    def reconcile() -> None:
        with a.hold(key) as owned:
            assert owned
            released.wait(5)

    worker = threading.Thread(target=reconcile)
    worker.start()
    time.sleep(0.05)
    rounding = threading.Thread(target=a.round)
    rounding.start()
    time.sleep(0.2)
    assert rounding.is_alive()  # waiting for the reconcile before acknowledging b
    assert not a.owns(key)  # but no new reconcile of the key starts meanwhile
    b.round()
    assert not b.owns(key)
    released.set()
    worker.join(5)
    rounding.join(5)
    b.round()
    assert b.owns(key)
    acked = lease_of(cluster, "monitor-a")["metadata"]["annotations"][ACKED_ANNOTATION]
    assert acked.startswith("monitor-b/")


def test_a_dead_members_keys_move_only_once_its_lease_has_run_out(cluster: FakeCluster, clock: FakeClock) -> None:
    a, b = member(cluster, clock, "monitor-a"), member(cluster, clock, "monitor-b")
    settle(a, b)
    b_keys = b.owned_keys()
    assert b_keys
    # b dies: it runs no more rounds. a keeps rounding every 2 s.
    for _ in range(7):
        clock.advance(2.0)
        a.round()
        assert not any(a.owns(key) for key in b_keys)
    clock.advance(2.0)  # 16 s after b's last renewal: it has stopped acting on its own clock
    assert not any(b.owns(key) for key in b_keys)
    a.round()
    assert all(a.owns(key) for key in KEYS)
    assert a.members() == ("monitor-a",)


def test_a_round_comes_early_when_a_members_lease_is_about_to_run_out(cluster: FakeCluster,
                                                                      clock: FakeClock) -> None:
    a, b = member(cluster, clock, "monitor-a"), member(cluster, clock, "monitor-b")
    settle(a, b)
    assert a.pause() == 2.0
    clock.advance(14.0)  # b has not renewed since a last saw it change, 14 s ago
    assert a.pause() == pytest.approx(1.05)


def test_a_member_that_leaves_hands_its_keys_over_at_the_next_round(cluster: FakeCluster, clock: FakeClock) -> None:
    a, b = member(cluster, clock, "monitor-a"), member(cluster, clock, "monitor-b")
    settle(a, b)
    b.leave()
    assert not b.owned_keys()
    assert [lease["spec"]["holderIdentity"] for lease in cluster.objects(LEASES)] == ["monitor-a"]
    a.round()
    assert len(a.owned_keys()) == len(KEYS)


def test_a_member_cut_off_from_the_api_server_stops_acting_when_its_lease_runs_out(cluster: FakeCluster,
                                                                                   clock: FakeClock) -> None:
    a = member(cluster, clock, "monitor-a")
    a.round()
    cluster.fail_next(UnavailableError("apiserver down", status=503), count=100)
    for _ in range(7):  # 14 s of failing rounds: still within its lease
        clock.advance(2.0)
        with pytest.raises(UnavailableError):
            a.round()
        assert a.owns(KEYS[0])
    clock.advance(1.5)
    assert not a.owns(KEYS[0])
    assert a.active() == (False, "shard lease not renewed")


def test_a_member_back_after_its_lease_ran_out_waits_as_a_new_incarnation(cluster: FakeCluster,
                                                                          clock: FakeClock) -> None:
    a, b = member(cluster, clock, "monitor-a"), member(cluster, clock, "monitor-b")
    settle(a, b)
    epoch = lease_of(cluster, "monitor-b")["metadata"]["annotations"]["climatik.io/shard-epoch"]
    for _ in range(9):  # b stalls for 18 s; a takes its keys
        clock.advance(2.0)
        a.round()
    assert len(a.owned_keys()) == len(KEYS)
    b.round()  # b comes back: a new epoch, and a's acknowledgement of the old one does not count
    assert lease_of(cluster, "monitor-b")["metadata"]["annotations"]["climatik.io/shard-epoch"] != epoch
    assert not b.owned_keys()
    assert_one_owner_at_most([a, b])
    settle(a, b)
    assert_every_key_owned_once([a, b])
    assert b.owned_keys()


def test_the_lease_of_a_member_counted_gone_is_deleted_and_a_newcomer_does_not_wait_on_it(
        cluster: FakeCluster, clock: FakeClock) -> None:
    a, b = member(cluster, clock, "monitor-a"), member(cluster, clock, "monitor-b")
    settle(a, b)
    for _ in range(7):
        clock.advance(2.0)
        a.round()
    assert len(cluster.objects(LEASES)) == 2  # b may still be alive
    clock.advance(2.0)
    a.round()
    assert [lease["spec"]["holderIdentity"] for lease in cluster.objects(LEASES)] == ["monitor-a"]
    c = member(cluster, clock, "monitor-c")
    settle(a, c)
    assert_every_key_owned_once([a, c])


def test_a_member_whose_lease_is_deleted_by_hand_stops_acting_and_joins_again(cluster: FakeCluster,
                                                                              clock: FakeClock) -> None:
    a, b = member(cluster, clock, "monitor-a"), member(cluster, clock, "monitor-b")
    settle(a, b)
    cluster.delete(LEASES, "climatik-system", lease_name("climatik-monitor", "monitor-b"))
    clock.advance(2.0)
    assert not b.round()
    assert not b.owned_keys()
    a.round()  # a sees b gone and takes every key
    assert len(a.owned_keys()) == len(KEYS)
    settle(a, b, rounds=3)  # b joins again as a new incarnation
    assert_every_key_owned_once([a, b])


def test_groups_do_not_see_each_other(cluster: FakeCluster, clock: FakeClock) -> None:
    monitor = member(cluster, clock, "replica-a", group="climatik-monitor")
    other = member(cluster, clock, "replica-b", group="climatik-other")
    for m in (monitor, other, monitor, other):
        m.round()
    assert monitor.members() == ("replica-a",)
    assert len(monitor.owned_keys()) == len(other.owned_keys()) == len(KEYS)


def test_gained_and_lost_keys_are_announced(cluster: FakeCluster, clock: FakeClock) -> None:
    a, b = member(cluster, clock, "monitor-a"), member(cluster, clock, "monitor-b")
    settle(a, b)
    gained: list[frozenset[str]] = []
    lost: list[frozenset[str]] = []
    a.on_gained(gained.append)
    a.on_lost(lost.append)
    b_keys = b.owned_keys()
    b.leave()
    a.round()
    assert gained == [b_keys] and lost == []
    c = member(cluster, clock, "monitor-c")
    settle(a, c)
    assert lost == [c.owned_keys()]


def test_a_round_that_crashes_does_not_end_the_rounds(cluster: FakeCluster, clock: FakeClock) -> None:
    a = member(cluster, clock, "monitor-a")
    rounds: list[int] = []

    def crash() -> bool:
        rounds.append(1)
        raise ValueError("malformed")

    a.round = crash  # type: ignore[method-assign]
    stop = threading.Event()
    runner = threading.Thread(target=a.run, args=(stop,))
    runner.start()
    for _ in range(50):
        if len(rounds) >= 2:
            break
        clock.advance(2.0)
        time.sleep(0.02)
    stop.set()
    runner.join(5)
    assert len(rounds) >= 2


def test_lease_names_are_valid_for_any_identity() -> None:
    assert lease_name("climatik-monitor", "Monitor_7f9c/A") == "climatik-monitor-shard-monitor-7f9c-a"
    assert len(lease_name("g", "x" * 400)) <= 253


def lease_of(cluster: FakeCluster, identity: str) -> dict:  # type: ignore[type-arg]
    return next(lease for lease in cluster.objects(LEASES) if lease["spec"]["holderIdentity"] == identity)
