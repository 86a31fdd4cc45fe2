"""The node guard in the tuner: budgets from the spec the reconciler applies are in force before the status that
acknowledges them is written, the guard keeps them with the API server gone, its statuses go out through the
reconciler's writer, and the original limits come back on removal, deletion, shutdown and after a crash."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture, capture_logs
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient
from support.kube.cluster import FakeRequest
from support.livecache import LiveCache
from tune_doubles import GPU_A, GPU_B, PoweredGpus

from climatik.clock import SystemClock
from climatik.kube.client import NODE_FREQUENCIES
from climatik.kube.controller import Controller
from climatik.kube.errors import UnavailableError
from climatik.kube.workqueue import WorkQueue
from climatik.tune.applier import Applier
from climatik.tune.guard import NodeGuard
from climatik.tune.guardloop import GUARD_KEY, GuardLoop, GuardMetrics
from climatik.tune.levers import CappedGpus
from climatik.tune.reconciler import REPORT_KEY, TuneReconciler
from climatik.tune.state import PowerLimitOriginals, StateStore

NODE = "gpu-node-1"
GPU_C = "GPU-5fd4c8a1-0000-4000-8000-00000000000c"
POLICY = "ml/llm"


class Tuner:
    """One tuner process's reconciler and guard over a node's GPUs, its state file and the cluster, driven by hand:
    `reconcile` is a reconcile of the node's object, `tick` one of the guard's, `write_reports` what the
    reconciler's worker does with the guard's requests."""

    def __init__(self, cluster: FakeCluster, gpus: PoweredGpus, state_file: Path, clock: FakeClock) -> None:
        self.cluster, self.gpus, self.clock = cluster, gpus, clock
        self.client = FakeKubeClient(cluster)
        self.state = StateStore(state_file)
        self.devices = CappedGpus(gpus, state=self.state)
        self.registry = CollectorRegistry()
        self.requests: list[str] = []
        self.guard = GuardLoop(guard=NodeGuard(self.devices, self.devices, originals=PowerLimitOriginals(self.state)),
                               devices=self.devices, clock=clock, node=NODE,
                               request_report=lambda: self.requests.append(REPORT_KEY),
                               metrics=GuardMetrics(self.registry, NODE))
        self.reconciler = TuneReconciler(
            node_name=NODE, cache=LiveCache(cluster, NODE_FREQUENCIES), api=self.client.node_frequencies,
            applier=Applier(state=self.state, clock=clock, gpu_backend=self.devices), events=None, clock=clock,
            guard=self.guard)

    def reconcile(self) -> None:
        self.reconciler(NODE)

    def tick(self, seconds: float = 0.1) -> None:
        self.clock.advance(seconds)
        self.guard(GUARD_KEY)

    def write_reports(self) -> None:
        while self.requests:
            self.reconciler(self.requests.pop())

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"node": NODE, **labels})


class Node:
    """The cluster with one node's object, its GPUs and its state file, across tuner restarts."""

    def __init__(self, tmp_path: Path) -> None:
        self.cluster = FakeCluster()
        self.client = FakeKubeClient(self.cluster)
        self.gpus = PoweredGpus([GPU_A, GPU_B, GPU_C])
        self.state_file = tmp_path / "tuner-state.json"
        self.clock = FakeClock()
        self.api_down = False
        self.cluster.add_reactor(self._refuse_while_down)

    def tuner(self) -> Tuner:
        return Tuner(self.cluster, self.gpus, self.state_file, self.clock)

    def spec(self, budgets: list[tuple[int, list[str]]]) -> None:
        spec = {"nodeName": NODE, "powerBudgets": [{"policy": POLICY if index == 0 else f"{POLICY}-{index}",
                                                    "watts": watts, "gpuIds": gpus}
                                                   for index, (watts, gpus) in enumerate(budgets)]}
        if self.cluster.objects(NODE_FREQUENCIES):
            current = self.client.node_frequencies.get(NODE)
            current["spec"] = spec
            self.client.node_frequencies.replace(current)
        else:
            self.client.node_frequencies.create({"metadata": {"name": NODE}, "spec": spec})

    def obj(self) -> dict[str, Any]:
        return self.client.node_frequencies.get(NODE)

    def status(self) -> dict[str, Any]:
        return dict(self.obj().get("status") or {})

    def budgeted(self, *uuids: str) -> float:
        return sum(self.gpus.limits[uuid] for uuid in uuids)

    def originals(self) -> dict[str, int]:
        devices = json.loads(self.state_file.read_text())["devices"] if self.state_file.exists() else {}
        return dict(devices.get("gpuPowerLimit") or {})

    def _refuse_while_down(self, request: FakeRequest) -> None:
        if self.api_down:
            raise UnavailableError("connection refused", status=503)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


@pytest.fixture
def told() -> Iterator[list[MutableMapping[str, Any]]]:
    """What the tuner logs, info lines included (the test run logs warnings only)."""
    before = structlog.get_config()
    capture = LogCapture()
    structlog.configure(processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        yield capture.entries
    finally:
        structlog.configure(**before)


def test_a_budget_is_in_force_before_the_status_that_acknowledges_it(node: Node) -> None:
    node.spec([(1000, [GPU_A, GPU_B])])
    tuner = node.tuner()

    tuner.reconcile()

    status = node.status()
    assert node.budgeted(GPU_A, GPU_B) <= 1000 and node.gpus.limits[GPU_C] == 700.0
    assert status["observedGeneration"] == node.obj()["metadata"]["generation"]
    assert status["budgets"] == [{**status["budgets"][0], "policy": POLICY, "watts": 1000, "lever": "PowerLimit"}]
    assert status["power"]["mean"] == pytest.approx(sum(node.gpus.draw(uuid) for uuid in (GPU_A, GPU_B, GPU_C)),
                                                    abs=700.0)


def test_a_lowered_budget_is_held_and_acknowledged_in_the_same_write(node: Node) -> None:
    node.spec([(1000, [GPU_A, GPU_B])])
    tuner = node.tuner()
    tuner.reconcile()
    for _ in range(5):
        tuner.tick()
    writes = len(node.cluster.writes())

    node.spec([(600, [GPU_A, GPU_B])])
    tuner.reconcile()

    assert node.budgeted(GPU_A, GPU_B) <= 600
    assert len(node.cluster.writes()) == writes + 2, "the spec change and one status write"
    status = node.status()
    assert (status["observedGeneration"], status["budgets"][0]["watts"]) == (node.obj()["metadata"]["generation"],
                                                                              600)


def test_the_guard_keeps_the_budget_while_the_api_server_is_down(node: Node) -> None:
    node.gpus.demand = {GPU_A: 150.0, GPU_B: 650.0, GPU_C: 100.0}
    node.spec([(1000, [GPU_A, GPU_B])])
    tuner = node.tuner()
    tuner.reconcile()
    node.api_down = True

    node.gpus.demand.update({GPU_A: 650.0, GPU_B: 650.0})  # a burst on the idle GPU
    with capture_logs() as logs:
        for _ in range(30):
            tuner.tick()
            tuner.write_reports()

    assert node.budgeted(GPU_A, GPU_B) <= 1000
    assert node.gpus.limits[GPU_A] > 400, "the split followed the burst without the API server"
    failures = [log for log in logs if log["event"] == "guard_report_failed"]
    assert 1 <= len(failures) <= 2, "a report is asked for again after a while, not on every tick"

    node.api_down = False
    for _ in range(60):
        tuner.tick()
        tuner.write_reports()
    assert node.status()["budgets"][0]["powerMax"] > 1000 * 0.9


def test_reports_go_out_when_they_say_something_new_and_a_steady_node_writes_nothing(node: Node) -> None:
    node.gpus.demand = {GPU_A: 300.0, GPU_B: 300.0, GPU_C: 100.0}
    node.spec([(1000, [GPU_A, GPU_B])])
    tuner = node.tuner()
    tuner.reconcile()
    for _ in range(100):
        tuner.tick()
        tuner.write_reports()
    steady = len(node.cluster.writes())

    for _ in range(100):
        tuner.tick()
        tuner.write_reports()
    assert len(node.cluster.writes()) == steady

    node.gpus.demand[GPU_C] = 600.0
    for _ in range(60):
        tuner.tick()
        tuner.write_reports()
    assert node.status()["power"]["max"] == pytest.approx(1200.0, abs=1.0), "the node's power moved and was told"


def test_the_tuners_own_status_write_does_not_wake_it_to_write_again(node: Node) -> None:
    node.gpus.demand = {GPU_A: 300.0, GPU_B: 300.0, GPU_C: 100.0}
    node.spec([(1000, [GPU_A, GPU_B])])
    tuner = node.tuner()
    tuner.reconcile()
    written = len(node.cluster.writes())

    for step in range(20):  # every write is an update event, and an update event is a reconcile
        node.gpus.demand[GPU_A] = 300.0 + 7 * step  # readings move a little between reconciles
        tuner.tick()
        tuner.reconcile()
    assert len(node.cluster.writes()) - written <= 1, node.cluster.writes()[written:]


def test_a_removed_budget_gives_the_original_limits_back(node: Node) -> None:
    node.spec([(1000, [GPU_A, GPU_B])])
    tuner = node.tuner()
    tuner.reconcile()
    assert set(node.originals()) == {GPU_A, GPU_B}

    node.spec([])
    tuner.reconcile()

    assert node.gpus.limits == dict.fromkeys((GPU_A, GPU_B, GPU_C), 700.0)
    assert node.originals() == {}
    assert "budgets" not in node.status()


def test_a_deleted_object_gives_limits_and_caps_back(node: Node) -> None:
    node.spec([(1000, [GPU_A, GPU_B]), (150, [GPU_C])])
    tuner = node.tuner()
    tuner.reconcile()
    for _ in range(5):
        tuner.tick()
    assert node.gpus.locked[GPU_C] is not None, "a budget under the lowest limit is kept by the clock"

    node.client.node_frequencies.delete(NODE)
    tuner.reconcile()

    assert node.gpus.limits == dict.fromkeys((GPU_A, GPU_B, GPU_C), 700.0)
    assert node.gpus.locked == dict.fromkeys((GPU_A, GPU_B, GPU_C))


def test_shutdown_gives_limits_and_caps_back(node: Node) -> None:
    node.spec([(1000, [GPU_A, GPU_B]), (150, [GPU_C])])
    tuner = node.tuner()
    tuner.reconcile()
    for _ in range(5):
        tuner.tick()

    tuner.guard.release()

    assert node.gpus.limits == dict.fromkeys((GPU_A, GPU_B, GPU_C), 700.0)
    assert node.gpus.locked == dict.fromkeys((GPU_A, GPU_B, GPU_C))
    assert node.originals() == {}


def test_a_restart_mid_budget_keeps_enforcing_and_gives_back_what_no_budget_holds(node: Node) -> None:
    node.spec([(1000, [GPU_A, GPU_B]), (500, [GPU_C])])
    crashed = node.tuner()
    crashed.reconcile()
    left = dict(node.gpus.limits)
    assert left[GPU_C] < 700.0
    node.spec([(900, [GPU_A, GPU_B])])  # while no tuner runs, the recommender took GPU C's budget away

    restarted = node.tuner()
    for _ in range(3):
        restarted.tick()
    assert node.gpus.limits == left, "nothing is given back before the spec says what still stands"
    restarted.reconcile()

    assert node.budgeted(GPU_A, GPU_B) <= 900
    assert node.gpus.limits[GPU_C] == 700.0
    node.spec([])
    restarted.reconcile()
    assert node.gpus.limits == dict.fromkeys((GPU_A, GPU_B, GPU_C), 700.0), "the true originals, not the crash's"


def test_caps_a_crashed_tuner_left_are_given_back_once_no_budget_holds_them(node: Node) -> None:
    node.spec([(150, [GPU_C])])
    crashed = node.tuner()
    crashed.reconcile()
    for _ in range(5):
        crashed.tick()
    assert node.gpus.locked[GPU_C] is not None

    node.spec([])
    node.tuner().reconcile()

    assert node.gpus.locked[GPU_C] is None
    assert node.gpus.limits[GPU_C] == 700.0


def test_ticks_writes_and_verdicts_are_counted_and_told(node: Node, told: list[MutableMapping[str, Any]]) -> None:
    node.gpus.demand = {GPU_A: 650.0, GPU_B: 650.0, GPU_C: 650.0}
    node.spec([(1000, [GPU_A, GPU_B]), (50, [GPU_C])])  # under what GPU C draws idle
    tuner = node.tuner()
    tuner.reconcile()
    for _ in range(19):
        tuner.tick()

    assert tuner.metric("climatik_tune_guard_ticks_total", outcome="ok") == 20
    assert (tuner.metric("climatik_tune_guard_limit_writes_total") or 0) >= 3
    assert (tuner.metric("climatik_tune_guard_clock_cap_writes_total") or 0) >= 1
    assert tuner.metric("climatik_tune_guard_budget_met", policy=POLICY) == 1
    assert tuner.metric("climatik_tune_guard_budget_met", policy=f"{POLICY}-1") == 0
    assert tuner.metric("climatik_tune_guard_tick_seconds_count") == 20
    levers = {(line["policy"], line["lever"]) for line in told if line["event"] == "guard_lever_changed"}
    assert levers == {(POLICY, "PowerLimit"), (f"{POLICY}-1", "ClockCap")}
    assert [line["policy"] for line in told if line["event"] == "guard_budget_not_met"] == [f"{POLICY}-1"]


def test_a_failing_tick_is_told_once_and_the_guard_goes_on(node: Node, told: list[MutableMapping[str, Any]]) -> None:
    node.spec([(1000, [GPU_A, GPU_B])])
    tuner = node.tuner()
    tuner.reconcile()
    node.gpus.unavailable = "the GPU library is gone"
    for _ in range(5):
        tuner.tick()
    node.gpus.unavailable = None
    tuner.tick()

    assert [line["event"] for line in told if line["event"].startswith("guard_tick")] == [
        "guard_tick_failed", "guard_tick_recovered"]
    assert tuner.metric("climatik_tune_guard_ticks_total", outcome="failed") == 5


def test_the_guard_thread_ticks_on_its_own_until_stopped(node: Node) -> None:
    node.spec([(1000, [GPU_A, GPU_B])])
    tuner = node.tuner()
    guard = GuardLoop(guard=NodeGuard(tuner.devices, tuner.devices), devices=tuner.devices, clock=SystemClock(),
                      node=NODE, request_report=lambda: None, interval=0.01, metrics=None)
    queue = WorkQueue(name="tune-guard")
    queue.add(GUARD_KEY)
    controller = Controller(name="tune-guard", reconcile=guard, queue=queue)
    controller.start()
    guard.enforce([])  # nothing yet: the thread reads the node's power at the idle interval
    guard.enforce([budget for budget in _budgets(node)])

    node.gpus.demand[GPU_A] = 200.0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and node.gpus.limits[GPU_B] < 700.0 * 0.9:
        threading.Event().wait(0.01)
    assert controller.stop(grace=5.0), "the thread ends within the grace period"
    assert node.gpus.limits[GPU_B] >= 700.0 * 0.9, "the thread moved the split as GPU A's demand fell"
    assert node.budgeted(GPU_A, GPU_B) <= 1000


def _budgets(node: Node) -> list[Any]:
    from climatik.api import NodeFrequencies  # noqa: PLC0415 - the spec as the reconciler decodes it

    return list(NodeFrequencies.from_api(node.obj()).spec.power_budgets or [])


def test_shutdown_with_the_gpu_library_gone_does_not_stop_the_clocks_being_restored(node: Node) -> None:
    node.spec([(1000, [GPU_A, GPU_B])])
    tuner = node.tuner()
    tuner.reconcile()
    node.gpus.unavailable = "the GPU library is gone"

    assert tuner.guard.release() == 0, "nothing could be given back, and nothing was raised at the shutdown hook"
    assert set(node.originals()) == {GPU_A, GPU_B}, "the originals stay recorded for the next tuner"
