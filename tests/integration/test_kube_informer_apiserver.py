"""The informer against a real kube-apiserver that is killed, restarted, and whose etcd is compacted.

These tests own their control plane (started once for the module) because they kill its apiserver.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import testenv
from prometheus_client import CollectorRegistry

from climatik.clock import SystemClock
from climatik.kube.client import CONFIG_MAPS, NAMESPACES, KubeClient, connect
from climatik.kube.informer import Informer
from climatik.kube.listwatch import ClientListerWatcher, ListResult, WatchStream
from climatik.kube.metrics import RuntimeMetrics
from climatik.kube.reflector import Backoff
from climatik.kube.store import Obj, object_key

pytestmark = pytest.mark.integration


def eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testenv.ControlPlane]:
    plane = testenv.ControlPlane(tmp_path_factory.mktemp("kube-restarts"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def client(plane: testenv.ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeClient]:
    with connect(plane.kubeconfig, timeout=10) as client:
        yield client


class Gate:
    """Wraps a lister-watcher so a test can cut the current watch and hold the next one back."""

    def __init__(self, inner: ClientListerWatcher) -> None:
        self.inner = inner
        self.open = threading.Event()
        self.open.set()
        self.stream: WatchStream | None = None

    def list(self) -> ListResult:
        return self.inner.list()

    def watch(self, *, resource_version: str, timeout_seconds: int) -> WatchStream:
        self.open.wait(120)
        self.stream = self.inner.watch(resource_version=resource_version, timeout_seconds=timeout_seconds)
        return self.stream

    def cut(self) -> None:
        self.open.clear()
        if self.stream is not None:
            self.stream.close()


class Watched:
    """An informer over the config maps of one namespace, recording what its handler is told."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        client.create(NAMESPACES, {"metadata": {"name": namespace}})
        self.gate = Gate(ClientListerWatcher(client, CONFIG_MAPS, namespace=namespace))
        self.registry = CollectorRegistry()
        clock = SystemClock()
        self.informer = Informer(
            self.gate, name=namespace, clock=clock, metrics=RuntimeMetrics(self.registry),
            backoff=Backoff(clock=clock, initial=0.2, cap=1.0, jitter=0.2),
        )
        self.seen: dict[str, list[str]] = {"add": [], "update": [], "delete": []}
        self.informer.add_event_handlers(
            on_add=lambda o: self._note("add", o),
            on_update=lambda old, new: self._note("update", new),
            on_delete=lambda o: self._note("delete", o),
        )
        self.stop = threading.Event()
        self.informer.start(self.stop)
        assert self.informer.wait_for_sync(30)

    def _note(self, kind: str, obj: Obj) -> None:
        self.seen[kind].append(f"{object_key(obj)}={(obj.get('data') or {}).get('v', '')}")

    def create(self, name: str, value: str = "1") -> None:
        body = {"metadata": {"name": name, "namespace": self.namespace}, "data": {"v": value}}
        self.client.config_maps.create(body)

    def update(self, name: str, value: str) -> None:
        current = self.client.config_maps.get(name, namespace=self.namespace)
        current["data"] = {"v": value}
        self.client.config_maps.replace(current)

    def delete(self, name: str) -> None:
        self.client.config_maps.delete(name, namespace=self.namespace)

    def cached(self) -> dict[str, Any]:
        return {object_key(o): o["data"]["v"] for o in self.informer.store.list()}

    def served(self) -> dict[str, Any]:
        items = self.client.config_maps.list(namespace=self.namespace)
        return {f"{self.namespace}/{o['metadata']['name']}": o["data"]["v"] for o in items}

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"informer": self.namespace, **labels}) or 0.0

    def close(self) -> None:
        self.stop.set()
        assert self.informer.join(10)


@pytest.fixture
def watched(client: KubeClient, request: pytest.FixtureRequest) -> Iterator[Watched]:
    watched = Watched(client, request.node.name.replace("_", "-")[:50].strip("-"))
    yield watched
    watched.close()


def test_every_change_around_an_apiserver_restart_reaches_the_informer(
    plane: testenv.ControlPlane, watched: Watched
) -> None:
    ns = watched.namespace
    for i in range(4):
        watched.create(f"c{i}")
    eventually(lambda: watched.cached() == watched.served(), what="initial sync")

    # Made just before the kill: the informer may or may not have seen them when the socket dies.
    watched.create("before")
    watched.update("c0", "2")
    watched.delete("c1")
    plane.kill_apiserver()
    plane.start_apiserver()
    # Made after the restart: the informer must reconnect (or relist) to see them.
    watched.create("after")
    watched.update("c2", "3")
    watched.delete("c3")
    watched.delete("before")

    eventually(lambda: watched.cached() == watched.served(), what="cache equal to the server")
    assert watched.cached() == {f"{ns}/c0": "2", f"{ns}/c2": "3", f"{ns}/after": "1"}
    assert {f"{ns}/before=1", f"{ns}/after=1"} <= set(watched.seen["add"])
    assert {f"{ns}/c0=2", f"{ns}/c2=3"} <= set(watched.seen["update"])
    assert {f"{ns}/c1", f"{ns}/c3", f"{ns}/before"} <= {entry.split("=")[0] for entry in watched.seen["delete"]}
    assert watched.metric("climatik_informer_watch_restarts_total", reason="error") >= 1


def test_after_a_compaction_forces_a_410_the_informer_relists_to_the_servers_state(
    plane: testenv.ControlPlane, watched: Watched
) -> None:
    ns = watched.namespace
    for i in range(4):
        watched.create(f"c{i}")
    eventually(lambda: watched.cached() == watched.served(), what="initial sync")
    assert watched.metric("climatik_informer_relists_total") == 1

    watched.gate.cut()  # the informer's next watch waits at the gate, from the version it last saw
    watched.create("new")
    watched.update("c0", "2")
    watched.delete("c1")
    plane.compact_etcd()
    # A restart empties the apiserver's watch cache, which would otherwise still serve the old version.
    plane.kill_apiserver()
    plane.start_apiserver()
    watched.gate.open.set()

    eventually(lambda: watched.metric("climatik_informer_relists_total") == 2, what="a relist")
    eventually(lambda: watched.cached() == watched.served(), what="cache equal to a fresh list")
    assert watched.cached() == {f"{ns}/c0": "2", f"{ns}/c2": "1", f"{ns}/c3": "1", f"{ns}/new": "1"}
    assert watched.metric("climatik_informer_watch_restarts_total", reason="gone") >= 1
    assert [entry.split("=")[0] for entry in watched.seen["delete"]] == [f"{ns}/c1"]
    assert f"{ns}/new=1" in watched.seen["add"]
    assert f"{ns}/c0=2" in watched.seen["update"]
