"""An informer over config maps in a `FakeCluster`, run in its own threads on a fake clock, with a recorder of
what its handlers were told: the rig of the informer's component tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from climatik.kube.client import CONFIG_MAPS
from climatik.kube.informer import Informer
from climatik.kube.listwatch import ClientListerWatcher
from climatik.kube.metrics import RuntimeMetrics
from climatik.kube.store import Obj, object_key
from support.clock import FakeClock
from support.kube.client import FakeKubeClient
from support.kube.cluster import FakeCluster


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `check` (real time) until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


def cm(name: str, value: str = "1", namespace: str = "ns", **labels: str) -> dict[str, Any]:
    """A config map whose data `v` is `value`."""
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}, "data": {"v": value}}


class Recorder:
    """Records handler calls as (event, key) pairs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def on_add(self, obj: Obj) -> None:
        self._note("add", obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        self._note("update", new)

    def on_delete(self, obj: Obj) -> None:
        self._note("delete", obj)

    def _note(self, kind: str, obj: Obj) -> None:
        with self.lock:
            self.events.append((kind, object_key(obj)))

    def of(self, kind: str) -> list[str]:
        with self.lock:
            return sorted(k for e, k in self.events if e == kind)


class Harness:
    """An informer over config maps in a fake cluster, started in threads with a fake clock.

    Keyword arguments go to the `Informer`, except `lister_watcher` (instead of one over the fake cluster),
    `resource` and `lw_args` (for the `ClientListerWatcher`) and `metrics` (instead of a fresh one).
    """

    def __init__(self, *, gone_as_event: bool = False, **informer_args: Any) -> None:
        self.clock = FakeClock()
        self.cluster = FakeCluster(clock=self.clock)
        self.client = FakeKubeClient(self.cluster, gone_as_event=gone_as_event)
        self.api = self.client.config_maps
        self.registry = CollectorRegistry()
        self.recorder = Recorder()
        lw = informer_args.pop("lister_watcher", None) or ClientListerWatcher(
            self.client, informer_args.pop("resource", CONFIG_MAPS), **informer_args.pop("lw_args", {})
        )
        metrics = informer_args.pop("metrics", None) or RuntimeMetrics(self.registry)
        self.informer = Informer(lw, name="cms", clock=self.clock, metrics=metrics, **informer_args)
        self.informer.add_handler(self.recorder)
        self.stop = threading.Event()

    def start(self) -> None:
        self.informer.start(self.stop)
        assert self.informer.wait_for_sync(5)

    def close(self) -> None:
        self.stop.set()
        assert self.informer.join(5), "informer threads did not stop"

    def cached(self) -> dict[str, str]:
        return {object_key(o): o["data"]["v"] for o in self.informer.store.list()}

    def served(self) -> dict[str, str]:
        return {object_key(o): o["data"]["v"] for o in self.cluster.objects(CONFIG_MAPS)}

    def verbs(self, verb: str) -> int:
        return sum(1 for r in self.cluster.requests if r.verb == verb)

    def drop_watch(self, *, after: float = 10.0) -> None:
        """Wait for an open watch, let it run `after` seconds (fake time), then break it."""
        eventually(self.watching)
        self.clock.advance(after)
        self.cluster.drop_watches()

    def watching(self) -> bool:
        return self.cluster.open_watches() > 0

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"informer": "cms", **labels}) or 0.0

    def restarts(self, reason: str) -> float:
        return self.metric("climatik_informer_watch_restarts_total", reason=reason)

    def next_retry(self, failures: float) -> float:
        """Once the reflector has failed `failures` times in all, the wait it parked in before retrying.

        Waiting for the failure count first makes sure the wait read is the retry's, not a watch's liveness
        check (both park on the fake clock).
        """
        eventually(lambda: self.restarts("error") >= failures)
        return min(self.clock.await_waiters(1))
