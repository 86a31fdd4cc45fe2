"""Events: one object per distinct happening, repeats folded into a count."""

from __future__ import annotations

from typing import Any

import pytest
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient

from climatik.kube.client import EVENTS
from climatik.kube.errors import UnavailableError
from climatik.kube.events import EventRecorder

POLICY = {
    "apiVersion": "climatik.io/v1alpha1",
    "kind": "PowerCappingPolicy",
    "metadata": {"name": "p", "namespace": "ml", "uid": "u-1"},
}
NODE_FREQ = {"apiVersion": "climatik.io/v1alpha1", "kind": "NodeFrequencies", "metadata": {"name": "n1"}}


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def recorder(cluster: FakeCluster, clock: FakeClock) -> EventRecorder:
    return EventRecorder(FakeKubeClient(cluster), component="climatik-monitor", host="node-a", clock=clock)


def events(cluster: FakeCluster) -> list[dict[str, Any]]:
    return sorted(cluster.objects(EVENTS), key=lambda e: e["metadata"]["creationTimestamp"])


def test_an_event_names_the_object_and_the_reporter(recorder: EventRecorder, cluster: FakeCluster) -> None:
    recorder.warning(POLICY, "UnknownAlgorithm", "algorithm 'foo' is not registered")
    (event,) = events(cluster)
    assert event["involvedObject"] == {
        "apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy", "name": "p", "namespace": "ml",
        "uid": "u-1",
    }
    assert event["metadata"]["namespace"] == "ml"
    assert (event["type"], event["reason"], event["count"]) == ("Warning", "UnknownAlgorithm", 1)
    assert event["source"] == {"component": "climatik-monitor", "host": "node-a"}


def test_repeats_bump_the_count_and_last_timestamp(
    recorder: EventRecorder, cluster: FakeCluster, clock: FakeClock
) -> None:
    for _ in range(3):
        recorder.warning(POLICY, "PrometheusUnavailable", "no data")
        clock.advance(60)
    (event,) = events(cluster)
    assert event["count"] == 3
    assert event["firstTimestamp"] == "2025-01-01T00:00:00Z"
    assert event["lastTimestamp"] == "2025-01-01T00:02:00Z"


def test_different_messages_are_different_events(recorder: EventRecorder, cluster: FakeCluster) -> None:
    recorder.normal(POLICY, "CappingStarted", "power 950 W above 900 W")
    recorder.normal(POLICY, "CappingStarted", "power 980 W above 900 W")
    recorder.normal(POLICY, "CappingReleased", "power 700 W")
    assert len(events(cluster)) == 3


def test_events_about_cluster_scoped_objects_go_to_default(recorder: EventRecorder, cluster: FakeCluster) -> None:
    recorder.normal(NODE_FREQ, "TargetsApplied", "2 GPUs")
    (event,) = events(cluster)
    assert event["metadata"]["namespace"] == "default"


def test_an_expired_event_is_recreated(recorder: EventRecorder, cluster: FakeCluster) -> None:
    recorder.warning(POLICY, "NoPods", "selector matches no pods")
    (first,) = events(cluster)
    cluster.delete(EVENTS, "ml", first["metadata"]["name"])
    recorder.warning(POLICY, "NoPods", "selector matches no pods")
    (second,) = events(cluster)
    assert second["count"] == 1
    assert second["metadata"]["name"] != first["metadata"]["name"]


def test_failing_to_record_never_raises(recorder: EventRecorder, cluster: FakeCluster) -> None:
    cluster.fail_next(UnavailableError("down"), count=2)
    recorder.warning(POLICY, "NoPods", "x")
    recorder.warning(POLICY, "NoPods", "x")
    assert events(cluster) == []
    recorder.warning(POLICY, "NoPods", "x")
    assert len(events(cluster)) == 1
