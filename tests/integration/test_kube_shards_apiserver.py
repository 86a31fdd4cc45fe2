"""Shards against a real kube-apiserver: replicas that split 300 keys, one killed without a word, one that joins
and one that leaves, with every replica's reconciles recorded; no key is ever held by two replicas at once, and
the keys of the killed replica are owned again within 20 s (the lease timings are the shipped defaults)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import testenv

from climatik.kube.client import NAMESPACES, KubeClient, connect
from climatik.kube.shards import ShardConfig, ShardMembership

pytestmark = pytest.mark.integration

KEYS = [f"team-{i % 5}/policy-{i}" for i in range(300)]
#: Holds of one key by one replica less than this apart are recorded as one stretch.
JOIN_S = 0.02


class Replica:
    """A membership running its rounds, and a worker that reconciles every key it owns, over and over, and
    records when it held each one. `crash()` stops both without leaving; `stop()` leaves."""

    def __init__(self, kubeconfig: Path, namespace: str, identity: str) -> None:
        self.identity = identity
        self.client = connect(kubeconfig, timeout=5)
        self.membership = ShardMembership(self.client, ShardConfig.of(namespace=namespace, group="climatik-monitor",
                                                                   identity=identity), keys=lambda: KEYS)
        self.held: dict[str, list[list[float]]] = defaultdict(list)  # key -> [start, end] stretches
        self._halt = threading.Event()
        self._rounds_stop = threading.Event()
        self._threads = [threading.Thread(target=self._rounds, daemon=True),
                         threading.Thread(target=self._work, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _rounds(self) -> None:
        self.membership.run(self._rounds_stop)

    def _work(self) -> None:
        while not self._halt.is_set():
            for key in KEYS:
                with self.membership.hold(key) as owned:
                    if not owned:
                        continue
                    start = time.monotonic()
                    time.sleep(0.0002)
                    end = time.monotonic()
                stretches = self.held[key]
                if stretches and start - stretches[-1][1] < JOIN_S:
                    stretches[-1][1] = end
                else:
                    stretches.append([start, end])
            time.sleep(0.005)

    def crash(self) -> None:
        """Stop at once, leaving the Lease behind (as a killed process does)."""
        self._halt.set()
        self._threads[1].join(5)
        self.membership.round = lambda: False  # type: ignore[method-assign]  # no more renewals
        self.membership.leave = lambda: None  # type: ignore[method-assign]
        self._rounds_stop.set()
        self._threads[0].join(5)

    def stop(self) -> None:
        self._halt.set()
        self._threads[1].join(5)
        self._rounds_stop.set()
        self._threads[0].join(15)
        self.client.close()


@pytest.fixture
def namespace(control_plane: testenv.ControlPlane) -> Iterator[str]:
    with connect(control_plane.kubeconfig, timeout=10) as client:
        client.create(NAMESPACES, {"metadata": {"name": "shards-it"}})
        yield "shards-it"
        delete_namespace(client)


def delete_namespace(client: KubeClient) -> None:
    client.delete(NAMESPACES, "shards-it")


def owners(replicas: list[Replica]) -> dict[str, list[str]]:
    return {key: [r.identity for r in replicas if r.membership.owns(key)] for key in KEYS}


def wait_until_owned_once(replicas: list[Replica], timeout: float) -> float:
    """Seconds until every replica in `replicas` is active and every key is owned by exactly one of them."""
    started = time.monotonic()
    while True:
        if all(r.membership.active()[0] for r in replicas) and all(
                len(who) == 1 for who in owners(replicas).values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            counts = [len(who) for who in owners(replicas).values()]
            raise AssertionError(f"not every key owned once after {timeout} s: "
                                 f"{ {n: counts.count(n) for n in set(counts)} }")
        time.sleep(0.05)


def wait_until_each_held_a_key(replicas: list[Replica], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(r.held for r in replicas):
        if time.monotonic() > deadline:
            raise AssertionError(f"held nothing after {timeout} s: {[r.identity for r in replicas if not r.held]}")
        time.sleep(0.05)


def overlaps(replicas: list[Replica]) -> list[str]:
    """Every time a replica began holding a key that another replica was still holding."""
    found = []
    for key in KEYS:
        stretches = sorted((start, end, r.identity) for r in replicas for start, end in r.held.get(key, []))
        last_end, last_who = -1.0, ""
        for start, end, who in stretches:
            if who != last_who and start < last_end:
                found.append(f"{key}: {last_who} until {last_end:.3f}, {who} from {start:.3f}")
            if end > last_end:
                last_end, last_who = end, who
    return found


def test_replicas_hand_keys_over_without_ever_sharing_one(control_plane: testenv.ControlPlane,
                                                          namespace: str) -> None:
    kubeconfig = control_plane.kubeconfig
    a, b, c = (Replica(kubeconfig, namespace, name) for name in ("monitor-a", "monitor-b", "monitor-c"))
    everyone = [a, b, c]
    try:
        started = wait_until_owned_once([a, b, c], timeout=20)
        wait_until_each_held_a_key([a, b, c], timeout=10)  # c is killed next: its worker must have acted first
        c_keys = c.membership.owned_keys()
        assert 50 <= len(c_keys) <= 150

        c.crash()
        taken_over = wait_until_owned_once([a, b], timeout=25)
        assert taken_over < 20, f"the killed replica's keys were owned again after {taken_over:.1f} s"

        d = Replica(kubeconfig, namespace, "monitor-d")
        everyone.append(d)
        joined = wait_until_owned_once([a, b, d], timeout=15)
        assert d.membership.owned_keys()

        b.stop()
        left = wait_until_owned_once([a, d], timeout=10)
        assert left < 5, f"the keys of the replica that left were owned again after {left:.1f} s"
        print(f"all owned {started:.1f} s after start; killed replica's keys owned again after {taken_over:.1f} s; "
              f"newcomer active after {joined:.1f} s; keys of the one that left owned again after {left:.1f} s")
    finally:
        for replica in everyone:
            replica.stop()
    assert all(r.held for r in everyone)
    assert not overlaps(everyone), overlaps(everyone)[:5]
