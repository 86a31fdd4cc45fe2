"""The informer against an in-process API server that drops watches, replays from versions and answers 410.

Each test drives the informer in its own threads with a fake clock: back-off waits only end when the test
advances time, so every delay is observed rather than slept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.kube import FakeRequest
from support.kube.informing import Harness, Recorder, cm, eventually

from climatik.kube.client import CONFIG_MAPS, NODE_FREQUENCIES, PODS
from climatik.kube.errors import ForbiddenError, UnavailableError
from climatik.kube.listwatch import ListResult, WatchEvent
from climatik.kube.store import BY_NODE, POD_INDEXES, Obj, object_key, strip_managed_fields


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def test_the_cache_starts_with_a_list_and_follows_every_change(harness: Harness) -> None:
    harness.api.create(cm("a"))
    harness.api.create(cm("b"))
    harness.start()
    assert harness.informer.has_synced()
    assert harness.recorder.of("add") == ["ns/a", "ns/b"]
    eventually(harness.watching)

    harness.api.create(cm("c"))
    current = harness.api.get("a", namespace="ns")
    current["data"]["v"] = "2"
    harness.api.replace(current)
    harness.api.delete("b", namespace="ns")

    eventually(lambda: harness.cached() == {"ns/a": "2", "ns/c": "1"})
    assert harness.recorder.of("update") == ["ns/a"]
    assert harness.recorder.of("delete") == ["ns/b"]
    assert harness.verbs("list") == 1


def test_a_dropped_watch_resumes_from_the_last_version_without_relisting(harness: Harness) -> None:
    harness.api.create(cm("a"))
    harness.start()
    for round_ in range(3):
        harness.drop_watch()
        harness.api.create(cm(f"new-{round_}"))  # made while no watch is open: replayed by the next one
    eventually(lambda: harness.cached() == harness.served())
    assert harness.verbs("list") == 1
    assert harness.verbs("watch") >= 3
    assert harness.recorder.of("add") == ["ns/a", "ns/new-0", "ns/new-1", "ns/new-2"]


def break_watches_and(harness: Harness, changes: Callable[[], None]) -> None:
    """Fail watches (the informer backs off), make `changes` and compact history, then let it retry."""
    outage = threading.Event()

    def refuse(request: FakeRequest) -> None:
        if request.verb == "watch" and not outage.is_set():
            raise UnavailableError("connection refused")

    harness.cluster.add_reactor(refuse)
    harness.drop_watch()
    harness.next_retry(1)  # parked in back-off
    changes()
    harness.cluster.compact()
    outage.set()
    harness.clock.advance(60)


@pytest.mark.parametrize("gone_as_event", [False, True], ids=["http-410", "error-event-410"])
def test_after_a_410_the_informer_relists_and_reports_what_vanished(gone_as_event: bool) -> None:
    harness = Harness(gone_as_event=gone_as_event)
    try:
        for name in ("stays", "changes", "goes"):
            harness.api.create(cm(name))
        harness.start()

        def changes() -> None:
            harness.api.delete("goes", namespace="ns")
            current = harness.api.get("changes", namespace="ns")
            current["data"]["v"] = "2"
            harness.api.replace(current)
            harness.api.create(cm("arrives"))

        break_watches_and(harness, changes)
        eventually(lambda: harness.cached() == harness.served())
        assert harness.cached() == {"ns/stays": "1", "ns/changes": "2", "ns/arrives": "1"}
        assert harness.recorder.of("delete") == ["ns/goes"]
        assert harness.recorder.of("update") == ["ns/changes"]
        assert "ns/arrives" in harness.recorder.of("add")
        assert harness.verbs("list") == 2
        assert harness.metric("climatik_informer_watch_restarts_total", reason="gone") == 1
        assert harness.metric("climatik_informer_relists_total") == 2
    finally:
        harness.close()


def test_a_410_in_the_middle_of_a_stream_triggers_a_relist(harness: Harness) -> None:
    harness.api.create(cm("a"))
    harness.start()
    eventually(harness.watching)
    harness.cluster.expire_watches()
    eventually(lambda: harness.verbs("list") == 2)
    harness.api.create(cm("b"))
    eventually(lambda: harness.cached() == harness.served())


def test_bookmarks_move_the_resume_version_forward(harness: Harness) -> None:
    harness.start()
    eventually(harness.watching)
    for i in range(5):  # other kinds move the global version on
        harness.client.pods.create({"metadata": {"name": f"p{i}", "namespace": "ns"}})
    harness.cluster.bookmark()
    eventually(lambda: harness.informer.reflector.resource_version == harness.cluster.resource_version)
    assert harness.informer.store.list() == []
    assert harness.recorder.events == []


def test_list_failures_back_off_exponentially_then_sync() -> None:
    harness = Harness()
    try:
        harness.cluster.fail_next(ForbiddenError("no RBAC yet", status=403), count=3, verbs={"list"})
        harness.api.create(cm("a"))
        harness.informer.start(harness.stop)
        waits = []
        for failures in range(1, 4):
            pending = harness.next_retry(failures)
            waits.append(pending)
            harness.clock.advance(pending)
        assert harness.informer.wait_for_sync(5)
        assert 0.8 <= waits[0] <= 1.2
        assert 1.6 <= waits[1] <= 2.4
        assert 3.2 <= waits[2] <= 4.8
        assert harness.cached() == {"ns/a": "1"}
        assert harness.verbs("list") == 4
    finally:
        harness.close()


def test_has_synced_is_false_until_the_first_list_succeeds() -> None:
    harness = Harness()
    try:
        harness.cluster.fail_next(UnavailableError("down"), verbs={"list"})
        harness.informer.start(harness.stop)
        harness.clock.await_waiters(1)
        assert not harness.informer.has_synced()
        harness.clock.advance(5)
        assert harness.informer.wait_for_sync(5)
    finally:
        harness.close()


class EmptyWatches:
    """A lister-watcher whose watches end at once without a single event (a misbehaving proxy)."""

    def __init__(self) -> None:
        self.watches = 0

    def list(self) -> ListResult:
        return ListResult([], "7")

    def watch(self, *, resource_version: str, timeout_seconds: int) -> Any:
        self.watches += 1
        return _Ended()


class _Ended:
    def __iter__(self) -> Iterator[WatchEvent]:
        return iter(())

    def close(self) -> None:
        pass


def test_watches_that_end_at_once_are_backed_off_not_hammered() -> None:
    lw = EmptyWatches()
    harness = Harness(lister_watcher=lw)
    try:
        harness.start()
        first = harness.next_retry(1)
        assert lw.watches == 1
        harness.clock.advance(first)
        second = harness.next_retry(2)
        assert lw.watches == 2
        assert second > first
    finally:
        harness.close()


def test_a_field_selector_watches_one_object_by_name() -> None:
    harness = Harness(resource=NODE_FREQUENCIES, lw_args={"field_selector": "metadata.name=node-1"})
    try:
        nfs = harness.client.node_frequencies
        nfs.create({"metadata": {"name": "node-1"}, "spec": {"nodeName": "node-1"}})
        nfs.create({"metadata": {"name": "node-2"}, "spec": {"nodeName": "node-2"}})
        harness.start()
        eventually(harness.watching)
        nfs.create({"metadata": {"name": "node-3"}, "spec": {"nodeName": "node-3"}})
        nfs.delete("node-1")
        eventually(lambda: harness.recorder.of("delete") == ["node-1"])
        assert harness.recorder.of("add") == ["node-1"]
        assert harness.informer.store.keys() == []
    finally:
        harness.close()


def test_objects_leaving_a_label_selection_are_deleted_from_the_cache() -> None:
    harness = Harness(lw_args={"label_selector": "app=gpu"})
    try:
        harness.api.create(cm("a", app="gpu"))
        harness.api.create(cm("b", app="cpu"))
        harness.start()
        eventually(harness.watching)
        moved = harness.api.get("a", namespace="ns")
        moved["metadata"]["labels"]["app"] = "cpu"
        harness.api.replace(moved)
        joined = harness.api.get("b", namespace="ns")
        joined["metadata"]["labels"]["app"] = "gpu"
        harness.api.replace(joined)
        eventually(lambda: sorted(harness.informer.store.keys()) == ["ns/b"])
        assert harness.recorder.of("delete") == ["ns/a"]
    finally:
        harness.close()


def test_pods_are_indexed_by_node() -> None:
    harness = Harness(resource=PODS, indexers=POD_INDEXES)
    try:
        pods = harness.client.pods
        pods.create({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"nodeName": "n1"}})
        harness.start()
        eventually(harness.watching)
        pods.create({"metadata": {"name": "b", "namespace": "ns"}, "spec": {"nodeName": "n1"}})
        pods.create({"metadata": {"name": "c", "namespace": "ns"}, "spec": {"nodeName": "n2"}})
        eventually(lambda: len(harness.informer.store) == 3)
        assert [object_key(p) for p in harness.informer.store.by_index(BY_NODE, "n1")] == ["ns/a", "ns/b"]
    finally:
        harness.close()


def test_resync_replays_the_cache_as_updates() -> None:
    harness = Harness(resync_period=30.0)
    try:
        harness.api.create(cm("a"))
        harness.api.create(cm("b"))
        harness.start()
        harness.clock.await_waiters(1)
        assert harness.recorder.of("update") == []
        harness.clock.advance(30.0)
        eventually(lambda: harness.recorder.of("update") == ["ns/a", "ns/b"])
        assert harness.verbs("list") == 1
    finally:
        harness.close()


def test_cached_objects_given_to_handlers_cannot_be_changed(harness: Harness) -> None:
    errors: list[Exception] = []

    def vandal(obj: Obj) -> None:
        try:
            obj["data"]["v"] = "vandalised"
        except TypeError as exc:
            errors.append(exc)

    harness.informer.add_event_handlers(on_add=vandal)
    harness.api.create(cm("a"))
    harness.start()
    eventually(lambda: len(errors) == 1)
    assert harness.cached() == {"ns/a": "1"}


def test_a_failing_handler_does_not_stop_the_informer(harness: Harness) -> None:
    def explode(obj: Obj) -> None:
        raise RuntimeError("handler bug")

    harness.informer.add_event_handlers(on_add=explode)
    harness.start()
    eventually(harness.watching)
    harness.api.create(cm("a"))
    harness.api.create(cm("b"))
    eventually(lambda: harness.recorder.of("add") == ["ns/a", "ns/b"])


def test_a_handler_added_late_is_told_about_objects_already_cached(harness: Harness) -> None:
    harness.api.create(cm("a"))
    harness.start()
    late = Recorder()
    harness.informer.add_handler(late)
    assert late.of("add") == ["ns/a"]


def test_stopping_ends_an_open_watch_promptly(harness: Harness) -> None:
    harness.start()
    eventually(harness.watching)
    began = time.monotonic()
    harness.stop.set()
    assert harness.informer.join(2)
    assert time.monotonic() - began < 1


def test_a_transform_trims_objects_before_they_are_cached() -> None:
    harness = Harness(transform=strip_managed_fields)
    try:
        body = cm("a")
        body["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:data": {}}}]
        harness.api.create(body)
        harness.start()
        eventually(harness.watching)
        harness.api.create({**cm("b"), "metadata": {**cm("b")["metadata"], "managedFields": [{"manager": "x"}]}})
        eventually(lambda: len(harness.informer.store) == 2)
        assert all("managedFields" not in o["metadata"] for o in harness.informer.store.list())
        assert all("managedFields" in o["metadata"] for o in harness.cluster.objects(CONFIG_MAPS))
    finally:
        harness.close()
