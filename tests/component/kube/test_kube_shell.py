"""The process shell: probes and metrics on one port, orderly stop on SIGTERM, non-zero exit on lease loss."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient, FakeRequest

from climatik.clock import SystemClock
from climatik.kube.client import CONFIG_MAPS, LEASES
from climatik.kube.controller import Controller, Result
from climatik.kube.errors import UnavailableError
from climatik.kube.informer import Informer, enqueue_own_key
from climatik.kube.leader import LeaderElector, LeaseConfig
from climatik.kube.listwatch import ClientListerWatcher
from climatik.kube.metrics import RuntimeMetrics
from climatik.kube.process import CommonSettings, ProcessShell, Wiring
from climatik.kube.workqueue import WorkQueue


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class Process:
    """One controller over config maps in a fake cluster, wired as a subcommand would wire it."""

    def __init__(self, reconcile: Callable[[str], Result | None], *, elector_clock: FakeClock | None = None,
                 **shell_args: Any) -> None:
        self.cluster = FakeCluster()
        self.client = FakeKubeClient(self.cluster)
        self.registry = CollectorRegistry()
        metrics = RuntimeMetrics(self.registry)
        self.informer = Informer(ClientListerWatcher(self.client, CONFIG_MAPS), name="configmaps", metrics=metrics)
        queue = WorkQueue(name="demo", metrics=metrics)
        self.informer.add_handler(enqueue_own_key(queue))
        self.controller = Controller(name="demo", reconcile=reconcile, queue=queue, metrics=metrics)
        self.elector = None
        if elector_clock is not None:
            config = LeaseConfig(namespace="climatik", name="demo", identity="me")
            self.elector = LeaderElector(self.client, config, clock=elector_clock, metrics=metrics)
        self.shell = ProcessShell(
            name="demo", registry=self.registry, informers=[self.informer], controllers=[self.controller],
            elector=self.elector, host="127.0.0.1", port=0, **shell_args,
        )
        self.code: list[int] = []

    def start_in_thread(self) -> int:
        threading.Thread(target=lambda: self.code.append(self.shell.run()), daemon=True).start()
        return self.shell.wait_serving(5)

    def exit_code(self) -> int:
        eventually(lambda: bool(self.code), timeout=10)
        return self.code[0]


def test_readiness_waits_for_synced_caches_and_metrics_are_served() -> None:
    process = Process(lambda key: None)
    process.cluster.fail_next(UnavailableError("starting"), verbs={"list"})
    process.client.config_maps.create({"metadata": {"name": "a", "namespace": "ns"}})
    port = process.start_in_thread()
    assert get(port, "/healthz") == (200, "ok\n")
    status, text = get(port, "/readyz")
    assert status == 503
    assert "configmaps" in text
    eventually(lambda: get(port, "/readyz")[0] == 200, timeout=10)
    reconciled = 'climatik_controller_reconcile_total{controller="demo",result="success"} 1.0'
    eventually(lambda: reconciled in get(port, "/metrics")[1])
    metrics = get(port, "/metrics")[1]
    assert "climatik_workqueue_depth" in metrics
    assert 'climatik_informer_relists_total{informer="configmaps"} 1.0' in metrics
    assert get(port, "/nope")[0] == 404
    process.shell.request_stop()
    assert process.exit_code() == 0


def test_metrics_asked_for_by_sample_name_are_served_alone() -> None:
    process = Process(lambda key: None)
    process.client.config_maps.create({"metadata": {"name": "a", "namespace": "ns"}})
    port = process.start_in_thread()
    eventually(lambda: get(port, "/readyz")[0] == 200, timeout=10)
    status, text = get(port, "/metrics?name[]=climatik_informer_relists_total"
                             "&name[]=climatik_controller_reconcile_duration_seconds_count")
    assert status == 200
    assert 'climatik_informer_relists_total{informer="configmaps"} 1.0' in text
    assert 'climatik_controller_reconcile_duration_seconds_count{controller="demo"}' in text
    assert "climatik_workqueue_depth" not in text
    assert "climatik_controller_reconcile_duration_seconds_bucket" not in text
    assert "climatik_workqueue_depth" in get(port, "/metrics?other=1")[1]
    process.shell.request_stop()
    assert process.exit_code() == 0


def test_sigterm_lets_the_reconcile_in_flight_finish_then_runs_the_shutdown_hooks() -> None:
    in_flight = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def reconcile(key: str) -> None:
        in_flight.set()
        release.wait(5)
        order.append(f"reconciled {key}")

    process = Process(reconcile, shutdown_hooks=[lambda: order.append("hook")], grace_period=5)
    process.client.config_maps.create({"metadata": {"name": "a", "namespace": "ns"}})
    process.client.config_maps.create({"metadata": {"name": "b", "namespace": "ns"}})

    def operator() -> None:
        assert in_flight.wait(5)
        os.kill(os.getpid(), signal.SIGTERM)
        eventually(lambda: process.shell.ready() == (False, "shutting down"))
        order.append("released")
        release.set()

    helper = threading.Thread(target=operator)
    helper.start()
    code = process.shell.run()  # in the main thread, so it owns the signal handlers
    helper.join(5)
    assert code == 0
    assert order == ["released", "reconciled ns/a", "hook"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_a_second_signal_exits_at_once() -> None:
    exits: list[int] = []
    stuck = threading.Event()

    def reconcile(key: str) -> None:
        stuck.wait(10)

    process = Process(reconcile, exit_now=exits.append, grace_period=30)
    process.client.config_maps.create({"metadata": {"name": "a", "namespace": "ns"}})

    def operator() -> None:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)
        eventually(lambda: process.shell.ready() == (False, "shutting down"))
        os.kill(os.getpid(), signal.SIGTERM)
        eventually(lambda: bool(exits))
        stuck.set()

    helper = threading.Thread(target=operator)
    helper.start()
    process.shell.run()
    helper.join(10)
    assert exits == [128 + signal.SIGTERM]


def test_an_elected_process_is_ready_only_while_leading_and_releases_on_stop() -> None:
    process = Process(lambda key: None, elector_clock=FakeClock())
    port = process.start_in_thread()
    eventually(lambda: get(port, "/readyz")[0] == 200)
    metrics = get(port, "/metrics")[1]
    assert 'climatik_leader_election_is_leader{lease="demo"} 1.0' in metrics
    process.shell.request_stop()
    assert process.exit_code() == 0
    (lease,) = process.cluster.objects(LEASES)
    assert lease["spec"].get("holderIdentity") is None


def test_losing_the_lease_stops_the_process_with_a_failure_code() -> None:
    clock = FakeClock()
    reconciled = threading.Event()

    def reconcile(key: str) -> None:
        reconciled.set()

    process = Process(reconcile, elector_clock=clock)
    process.client.config_maps.create({"metadata": {"name": "a", "namespace": "ns"}})
    hooks: list[str] = []
    process.shell._hooks.append(lambda: hooks.append("hook"))
    process.start_in_thread()
    assert reconciled.wait(5)

    def partition(request: FakeRequest) -> None:
        if request.resource == LEASES:
            raise UnavailableError("partitioned")

    process.cluster.add_reactor(partition)
    while not process.code:
        try:
            pending = clock.await_waiters(1, timeout=1)
        except TimeoutError:
            continue
        clock.advance(min(pending))
    assert process.exit_code() == 1
    assert hooks == ["hook"]


@pytest.mark.parametrize("path", ["/healthz", "/livez"])
def test_liveness_is_served_before_anything_is_ready(path: str) -> None:
    process = Process(lambda key: None)
    process.cluster.fail_next(UnavailableError("down"), count=100, verbs={"list"})
    port = process.start_in_thread()
    assert get(port, path)[0] == 200
    assert get(port, "/readyz")[0] == 503
    process.shell.request_stop()
    assert process.exit_code() == 0


def held_lease(holder: str, clock: FakeClock) -> dict[str, Any]:
    """The Lease a process that crashed while leading leaves behind: held, renewed just now, never released."""
    now = clock.wall().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"name": "demo", "namespace": "climatik"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": now, "renewTime": now,
                     "leaseTransitions": 3}}


def test_a_process_restarted_under_its_identity_leads_again_without_waiting_out_its_lease() -> None:
    clock = FakeClock()
    process = Process(lambda key: None, elector_clock=clock)  # identity "me", as a pod name survives a restart
    process.client.leases.create(held_lease("me", clock))
    port = process.start_in_thread()
    eventually(lambda: get(port, "/readyz")[0] == 200)  # the fake clock never moved
    (lease,) = process.cluster.objects(LEASES)
    assert lease["spec"]["holderIdentity"] == "me"
    assert lease["spec"]["leaseTransitions"] == 3
    process.shell.request_stop()
    assert process.exit_code() == 0


def test_a_process_under_another_identity_waits_out_the_lease_it_finds() -> None:
    clock = FakeClock()
    process = Process(lambda key: None, elector_clock=clock)
    process.client.leases.create(held_lease("someone-else", clock))
    port = process.start_in_thread()
    clock.await_waiters(1)
    answer = get(port, "/readyz")
    deadline = time.monotonic() + 10
    while answer[1].startswith("caches not synced") and time.monotonic() < deadline:  # a busy machine is slow
        time.sleep(0.01)
        answer = get(port, "/readyz")
    assert answer == (503, "not the leader\n")
    while get(port, "/readyz")[0] != 200:
        # A second at most at a time: once the lease is taken, the elector's renewal must get to run before the
        # fake clock passes the lease duration, however slow the machine.
        clock.advance(min(1.0, *clock.await_waiters(1)))
    assert clock.now() - 1000.0 >= 15.0
    process.shell.request_stop()
    assert process.exit_code() == 0


def test_informers_built_by_the_wiring_cache_no_managed_fields_unless_asked() -> None:
    cluster = FakeCluster()
    wiring = Wiring(CommonSettings(), clock=SystemClock(), client=FakeKubeClient(cluster))
    body = {"metadata": {"name": "a", "namespace": "ns", "managedFields": [{"manager": "kubectl"}]}, "data": {}}
    wiring.client.config_maps.create(body)
    stripped = wiring.informer(CONFIG_MAPS, name="stripped")
    served = wiring.informer(CONFIG_MAPS, name="served", transform=None)
    stop = threading.Event()
    try:
        for informer in (stripped, served):
            informer.start(stop)
            assert informer.wait_for_sync(5)
        assert "managedFields" not in stripped.store.get("ns/a")["metadata"]  # type: ignore[index]
        assert served.store.get("ns/a")["metadata"]["managedFields"] == [{"manager": "kubectl"}]  # type: ignore[index]
    finally:
        stop.set()
        for informer in (stripped, served):
            informer.join(5)
