"""Informer caches against a real kube-apiserver that goes away and comes back while the cluster keeps changing.

Two kube-apiservers share one etcd. The informers, wired as every controller wires them, talk to the first;
a writer keeps creating, changing and deleting policies, NodeFrequencies and config maps through the second.
The first apiserver is killed and restarted three times 25 s apart, then kept down for 30 s. Each time, the
caches must equal a fresh LIST within 3 s of the apiserver answering /readyz again.

The figures (how long after /readyz each cache was current, and how long the apiserver took to start) are
printed; run with -s to see them.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import testenv

from climatik.clock import SystemClock
from climatik.kube.client import CONFIG_MAPS, NAMESPACES, NODE_FREQUENCIES, POLICIES, KubeClient, Resource, connect
from climatik.kube.errors import KubeError
from climatik.kube.informer import Informer
from climatik.kube.process import CommonSettings, Wiring
from climatik.kube.store import object_key

pytestmark = pytest.mark.integration

STALENESS_LIMIT_S = 3.0
RESTARTS = 3
RESTART_SPACING_S = 25.0
LONG_OUTAGE_S = 30.0
NAMESPACE = "outages"
POOL = 150  # names per resource the writer cycles through
WATCHED = (POLICIES, NODE_FREQUENCIES, CONFIG_MAPS)


@dataclass
class Outage:
    """What one outage of the informers' apiserver cost."""

    down_s: float  # from the kill until the restarted apiserver answered /readyz
    start_s: float  # of which the apiserver's own start
    stale_s: dict[str, float] = field(default_factory=dict)  # per informer: from /readyz until current

    def line(self) -> str:
        stale = "  ".join(f"{name} {seconds:5.2f} s" for name, seconds in sorted(self.stale_s.items()))
        return f"down {self.down_s:5.1f} s (start {self.start_s:4.1f} s)  current after /readyz: {stale}"


def body(resource: Resource, name: str, version: int) -> dict[str, object]:
    if resource is POLICIES:
        return {"metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"powerCapLimit": 100 + version, "selector": {"matchLabels": {"app": name}}}}
    if resource is NODE_FREQUENCIES:
        return {"metadata": {"name": name, "labels": {"version": str(version)}}, "spec": {"nodeName": name}}
    return {"metadata": {"name": name, "namespace": NAMESPACE}, "data": {"version": str(version)}}


class Writer:
    """Creates, changes and deletes objects through the other apiserver, about 20 times a second, until
    stopped; `paused()` holds it between two writes (so that a LIST and a cache can be compared)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.writes = 0
        self.failures = 0
        self._rng = random.Random(17)
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> None:
        for resource in WATCHED:
            for i in range(0, POOL, 2):
                self._write(resource, f"{resource.plural[:6]}-{i:03d}")
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(10)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with self.lock:
            yield

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            resource = self._rng.choice(WATCHED)
            self._write(resource, f"{resource.plural[:6]}-{self._rng.randrange(POOL):03d}")

    def _write(self, resource: Resource, name: str) -> None:
        api = self.client.resource(resource)
        namespace = NAMESPACE if resource.namespaced else None
        with self.lock:
            try:
                try:
                    current = api.get(name, namespace=namespace)
                except KubeError:
                    api.create(body(resource, name, self.writes))
                else:
                    if self._rng.random() < 0.3:
                        api.delete(name, namespace=namespace)
                    else:
                        fresh = body(resource, name, self.writes)
                        fresh["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]  # type: ignore[index]
                        api.replace(fresh)
                self.writes += 1
            except KubeError:
                self.failures += 1


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testenv.ControlPlane]:
    plane = testenv.start_with_crds(tmp_path_factory.mktemp("informer-outages"))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def writer(plane: testenv.ControlPlane) -> Iterator[Writer]:
    other = plane.add_apiserver("writer")
    client = connect(other.kubeconfig, timeout=10)
    deadline = time.monotonic() + 60
    while True:  # the second apiserver serves the CRDs once its own discovery has them
        try:
            client.list(POLICIES, namespace=NAMESPACE, limit=1)
            break
        except KubeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    client.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
    writer = Writer(client)
    writer.start()
    try:
        yield writer
    finally:
        writer.close()
        client.close()


class Caches:
    """The informers a controller process would build (through `Wiring`), against the first apiserver."""

    def __init__(self, plane: testenv.ControlPlane) -> None:
        self.wiring = Wiring(CommonSettings(kubeconfig=str(plane.kubeconfig)), clock=SystemClock())
        self.informers = [self.wiring.informer(resource, name=resource.plural) for resource in WATCHED]
        self.stop = threading.Event()
        for informer in self.informers:
            informer.start(self.stop)
        for informer in self.informers:
            assert informer.wait_for_sync(60), f"{informer.name} did not sync"

    def close(self) -> None:
        self.stop.set()
        for informer in self.informers:
            informer.join(10)
        self.wiring.client.close()


def versions_cached(informer: Informer) -> dict[str, str]:
    return {object_key(o): str(o["metadata"]["resourceVersion"]) for o in informer.store.list()}


def versions_served(client: KubeClient, resource: Resource) -> dict[str, str]:
    items = client.resource(resource).list()
    return {(f"{o['metadata']['namespace']}/" if resource.namespaced else "") + o["metadata"]["name"]:
            str(o["metadata"]["resourceVersion"]) for o in items}


def wait_until_current(caches: Caches, writer: Writer, since: float, timeout: float = 90.0) -> dict[str, float]:
    """Seconds from `since` until each cache equalled a fresh LIST (through the writer's apiserver), taken
    while the writer is held; a cache gets 0.2 s to show the writes just made before it counts as behind."""
    current: dict[str, float] = {}
    by_name = dict(zip((i.name for i in caches.informers), WATCHED, strict=True))
    while len(current) < len(caches.informers) and time.monotonic() - since < timeout:
        with writer.paused():
            for informer in caches.informers:
                if informer.name in current:
                    continue
                served = versions_served(writer.client, by_name[informer.name])
                settle = time.monotonic() + 0.2
                while versions_cached(informer) != served and time.monotonic() < settle:
                    time.sleep(0.01)
                if versions_cached(informer) == served:
                    current[informer.name] = time.monotonic() - since
        time.sleep(0.05)
    return {informer.name: current.get(informer.name, float("inf")) for informer in caches.informers}


def outage(plane: testenv.ControlPlane, caches: Caches, writer: Writer, down_for: float) -> Outage:
    apiserver = plane.apiserver
    apiserver.kill()
    killed = time.monotonic()
    time.sleep(down_for)
    started = time.monotonic()
    apiserver.start(wait=False)
    while not apiserver.ready():
        assert time.monotonic() - started < 120, "the apiserver did not come back"
        time.sleep(0.02)
    ready = time.monotonic()
    result = Outage(down_s=ready - killed, start_s=ready - started)
    result.stale_s = wait_until_current(caches, writer, ready)
    return result


def test_caches_equal_a_fresh_list_within_3_s_of_every_return_of_the_apiserver(
    plane: testenv.ControlPlane, writer: Writer
) -> None:
    caches = Caches(plane)
    try:
        assert max(wait_until_current(caches, writer, time.monotonic(), timeout=30).values()) < 30
        outages = []
        for _ in range(RESTARTS):
            began = time.monotonic()
            outages.append(outage(plane, caches, writer, 0.0))
            time.sleep(max(0.0, began + RESTART_SPACING_S - time.monotonic()))
        outages.append(outage(plane, caches, writer, LONG_OUTAGE_S))
    finally:
        caches.close()
    report = "\n".join(o.line() for o in outages)
    print(f"\ninformer staleness after apiserver outages ({writer.writes} writes, {writer.failures} failed):\n{report}")
    assert writer.writes > 500
    worst = max(max(o.stale_s.values()) for o in outages)
    assert worst <= STALENESS_LIMIT_S, report
