"""A whole reconcile loop on the runtime: informer -> queue -> workers -> status writes, against the fake.

The reconciler is written the way Climatik's controllers are: level-triggered, reading the cache, writing
status through the conflict-retrying helper, never mutating cached objects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.kube import FakeCluster, FakeKubeClient

from climatik.api.conditions import set_condition
from climatik.clock import SystemClock
from climatik.kube.client import POLICIES
from climatik.kube.controller import Controller, Result
from climatik.kube.informer import Informer, enqueue_own_key
from climatik.kube.listwatch import ClientListerWatcher
from climatik.kube.status import update_status
from climatik.kube.store import generation_of
from climatik.kube.workqueue import WorkQueue


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


class EchoLimit:
    """Copies spec.powerCapLimit into status and keeps a Ready condition."""

    def __init__(self, client: FakeKubeClient, informer: Informer) -> None:
        self.client = client
        self.informer = informer
        self.clock = SystemClock()

    def __call__(self, key: str) -> Result | None:
        cached = self.informer.store.get(key)
        if cached is None:
            return None

        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            status = obj.get("status") or {}
            status["limit"] = obj["spec"]["powerCapLimit"]
            status["observedGeneration"] = generation_of(obj)
            status["conditions"] = set_condition(
                status.get("conditions"), type="Ready", status=True, reason="Observed", message="",
                observed_generation=generation_of(obj), now=self.clock.wall(),
            )
            return status

        update_status(self.client.policies, key, mutate, current=cached)
        return Result(requeue_after=60)


@pytest.fixture
def loop() -> Iterator[tuple[FakeCluster, FakeKubeClient]]:
    cluster = FakeCluster()
    client = FakeKubeClient(cluster)
    informer = Informer(ClientListerWatcher(client, POLICIES), name="policies")
    queue = WorkQueue(name="policies")
    informer.add_handler(enqueue_own_key(queue))
    controller = Controller(name="echo", reconcile=EchoLimit(client, informer), queue=queue, workers=4)
    stop = threading.Event()
    informer.start(stop)
    assert informer.wait_for_sync(5)
    controller.start()
    yield cluster, client
    controller.stop(grace=5)
    stop.set()
    informer.join(5)


def policy(name: str, limit: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml"}, "spec": {"powerCapLimit": limit, "selector": {}}}


def status_of(client: FakeKubeClient, name: str) -> dict[str, Any]:
    return client.policies.get(name, namespace="ml").get("status") or {}


def test_every_policy_gets_its_status_and_spec_changes_are_followed(
    loop: tuple[FakeCluster, FakeKubeClient],
) -> None:
    _, client = loop
    for i in range(20):
        client.policies.create(policy(f"p{i}", 100 + i))
    eventually(lambda: all(status_of(client, f"p{i}").get("limit") == 100 + i for i in range(20)))
    changed = client.policies.get("p3", namespace="ml")
    changed["spec"]["powerCapLimit"] = 999
    client.policies.replace(changed)
    eventually(lambda: status_of(client, "p3").get("observedGeneration") == 2)
    assert status_of(client, "p3")["limit"] == 999


def test_a_steady_state_costs_no_writes(loop: tuple[FakeCluster, FakeKubeClient]) -> None:
    cluster, client = loop
    client.policies.create(policy("p", 500))
    eventually(lambda: status_of(client, "p").get("limit") == 500)
    time.sleep(0.2)  # the status write's own watch event comes back and is reconciled again
    writes = len(cluster.writes())
    cluster.drop_watches()  # a reconnect does not cause writes either
    time.sleep(0.3)
    assert len(cluster.writes()) == writes
