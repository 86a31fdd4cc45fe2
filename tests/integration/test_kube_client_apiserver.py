"""The client, Events, create-or-update and selector-scoped informers against a real kube-apiserver."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import testenv
from support.clock import FakeClock

from climatik.kube.client import CONFIG_MAPS, NAMESPACES, NODE_FREQUENCIES, KubeClient, connect
from climatik.kube.events import EventRecorder
from climatik.kube.informer import Informer
from climatik.kube.listwatch import ClientListerWatcher
from climatik.kube.status import create_or_update
from climatik.kube.store import object_key

pytestmark = pytest.mark.integration


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def client(control_plane: testenv.ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeClient]:
    with connect(control_plane.kubeconfig, timeout=10) as client:
        yield client


@pytest.fixture
def namespace(client: KubeClient, request: pytest.FixtureRequest) -> str:
    name = str(request.node.name).replace("_", "-")[:50].strip("-")
    client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


def test_repeated_events_are_one_event_with_a_count(client: KubeClient, namespace: str) -> None:
    policy = client.policies.create({
        "metadata": {"name": "p", "namespace": namespace}, "spec": {"powerCapLimit": 500, "selector": {}},
    })
    recorder = EventRecorder(client, component="climatik-test", clock=FakeClock())
    for _ in range(3):
        recorder.warning(policy, "NoMetrics", "Prometheus returned no series for the selected pods")
    recorder.normal(policy, "CappingReleased", "power back under budget")
    events = client.events.list(namespace=namespace)
    by_reason = {e["reason"]: e for e in events}
    assert sorted(by_reason) == ["CappingReleased", "NoMetrics"]
    assert by_reason["NoMetrics"]["count"] == 3
    assert by_reason["NoMetrics"]["involvedObject"]["uid"] == policy["metadata"]["uid"]


def test_create_or_update_writes_node_frequencies_only_when_they_change(client: KubeClient) -> None:
    def desired(mhz: int) -> dict[str, Any]:
        return {
            "metadata": {"name": "node-cou"},
            "spec": {"nodeName": "node-cou", "gpuFrequencies": [{"gpuId": "GPU-0", "targetFrequency": mhz}]},
        }

    nfs = client.node_frequencies
    assert create_or_update(nfs, desired(1500)).written
    version = nfs.get("node-cou")["metadata"]["resourceVersion"]
    assert not create_or_update(nfs, desired(1500)).written
    assert nfs.get("node-cou")["metadata"]["resourceVersion"] == version
    updated = create_or_update(nfs, desired(1200))
    assert updated.written
    assert updated.object is not None
    assert updated.object["metadata"]["generation"] == 2
    nfs.delete("node-cou")


def test_an_informer_scoped_to_one_object_by_name_sees_only_that_object(client: KubeClient) -> None:
    nfs = client.node_frequencies
    for node in ("sel-a", "sel-b"):
        nfs.create({"metadata": {"name": node}, "spec": {"nodeName": node}})
    lw = ClientListerWatcher(client, NODE_FREQUENCIES, field_selector="metadata.name=sel-a")
    informer = Informer(lw, name="own-node")
    keys: list[str] = []
    informer.add_event_handlers(on_add=lambda o: keys.append(object_key(o)),
                                on_update=lambda old, new: keys.append(object_key(new)))
    stop = threading.Event()
    informer.start(stop)
    try:
        assert informer.wait_for_sync(10)
        for node in ("sel-a", "sel-b"):
            current = nfs.get(node)
            current["spec"]["gpuFrequencies"] = [{"gpuId": "GPU-0", "targetFrequency": 1000}]
            nfs.replace(current)
        eventually(lambda: keys == ["sel-a", "sel-a"])
        time.sleep(0.5)
        assert keys == ["sel-a", "sel-a"]
        assert informer.store.keys() == ["sel-a"]
    finally:
        stop.set()
        informer.join(10)
        for node in ("sel-a", "sel-b"):
            nfs.delete(node)


def test_a_list_in_pages_is_one_consistent_snapshot(client: KubeClient, namespace: str) -> None:
    for i in range(7):
        client.config_maps.create({"metadata": {"name": f"cm{i}", "namespace": namespace}})
    listed = ClientListerWatcher(client, CONFIG_MAPS, namespace=namespace, page_size=2).list()
    names = sorted(o["metadata"]["name"] for o in listed.items if o["metadata"]["name"].startswith("cm"))
    assert names == [f"cm{i}" for i in range(7)]
    assert all(o["kind"] == "ConfigMap" for o in listed.items)
    assert int(listed.resource_version) > 0
