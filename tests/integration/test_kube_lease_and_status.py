"""Leader election between real processes, and racing status writers, against a real kube-apiserver."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testenv

from climatik.kube.client import NAMESPACES, KubeClient, ResourceClient, connect
from climatik.kube.errors import ConflictError, InvalidError, NotFoundError
from climatik.kube.status import update_object, update_status

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# A leader-election candidate as a real process: prints "leading" when it gets the lease, "stopped" when it
# gives it up; SIGTERM stops it cleanly (releasing the lease); its exit code says whether it kept the lease.
CANDIDATE = """
import signal, sys, threading
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from climatik.kube.client import connect
from climatik.kube.leader import LeaderElector, LeaseConfig
kubeconfig, namespace, identity = sys.argv[1:4]
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
config = LeaseConfig(namespace=namespace, name="demo", identity=identity)
elector = LeaderElector(connect(kubeconfig, timeout=5), config)
kept = elector.run(stop, on_started_leading=lambda: print("leading", flush=True),
                   on_stopped_leading=lambda: print("stopped", flush=True))
sys.exit(0 if kept else 1)
"""


@pytest.fixture(scope="module")
def kubeconfig(control_plane: testenv.ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture(scope="module")
def client(kubeconfig: Path) -> Iterator[KubeClient]:
    with connect(kubeconfig, timeout=10) as client:
        yield client


@pytest.fixture
def namespace(client: KubeClient, request: pytest.FixtureRequest) -> str:
    name = str(request.node.name).replace("_", "-")[:50].strip("-")
    client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


class Candidate:
    """One candidate process and the lines it printed, with when they arrived."""

    def __init__(self, kubeconfig: Path, namespace: str, identity: str) -> None:
        self.identity = identity
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CANDIDATE, str(kubeconfig), namespace, identity],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        self.lines: queue.Queue[tuple[str, float]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((line.strip(), time.monotonic()))

    def next_line(self, timeout: float) -> tuple[str, float] | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def candidates(kubeconfig: Path, namespace: str) -> Iterator[list[Candidate]]:
    started = [Candidate(kubeconfig, namespace, identity) for identity in ("alpha", "beta")]
    yield started
    for candidate in started:
        candidate.close()


def first_leader(candidates: list[Candidate], timeout: float) -> tuple[Candidate, Candidate]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, candidate in enumerate(candidates):
            line = candidate.next_line(0.1)
            if line is not None and line[0] == "leading":
                return candidate, candidates[1 - i]
    raise AssertionError("no candidate became leader")


def holder(client: KubeClient, namespace: str) -> Any:
    return client.leases.get("demo", namespace=namespace)["spec"].get("holderIdentity")


def test_one_candidate_leads_and_the_other_takes_over_when_it_is_killed(
    client: KubeClient, namespace: str, candidates: list[Candidate]
) -> None:
    leader, follower = first_leader(candidates, timeout=30)
    assert follower.next_line(6) is None, "two candidates lead at once"
    assert holder(client, namespace) == leader.identity

    leader.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    line = follower.next_line(30)
    assert line is not None and line[0] == "leading"
    # Expiry is judged on the follower's own observations, polled every retry period (2 s, jittered).
    assert line[1] - killed_at <= 15 + 2 * 2.4
    assert holder(client, namespace) == follower.identity
    lease = client.leases.get("demo", namespace=namespace)["spec"]
    assert lease["leaseTransitions"] == 1


def test_a_leader_stopped_cleanly_releases_the_lease_for_a_quick_takeover(
    client: KubeClient, namespace: str, candidates: list[Candidate]
) -> None:
    leader, follower = first_leader(candidates, timeout=30)
    leader.proc.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert leader.proc.wait(15) == 0
    line = follower.next_line(15)
    assert line is not None and line[0] == "leading"
    assert line[1] - stopped_at < 2 * 2.4 + 1, "the follower waited for expiry: the lease was not released"


class CountingConflicts(ResourceClient):
    """Counts the 409s the status helper met (and retried)."""

    conflicts = 0

    def replace_status(self, body: Any) -> dict[str, Any]:
        try:
            return super().replace_status(body)
        except ConflictError:
            self.conflicts += 1
            raise


def increment(field: str) -> Any:
    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        status = obj.get("status") or {}
        status[field] = status.get(field, 0) + 1
        return status

    return mutate


def test_racing_status_writers_lose_no_update(kubeconfig: Path, client: KubeClient, namespace: str) -> None:
    client.policies.create({
        "metadata": {"name": "shared", "namespace": namespace},
        "spec": {"powerCapLimit": 1000, "selector": {"matchLabels": {"app": "llm"}}},
    })
    rounds = 25
    start = threading.Barrier(2)
    apis: list[CountingConflicts] = []
    failures: list[BaseException] = []

    def writer(field: str) -> None:
        # Each writer has its own connection, as two controllers would.
        with connect(kubeconfig, timeout=10) as own:
            api = CountingConflicts(own, own.policies.resource)
            apis.append(api)
            start.wait()
            try:
                for _ in range(rounds):
                    update_status(api, f"{namespace}/shared", increment(field), attempts=50)
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=writer, args=(f,)) for f in ("currentPower", "gpuCount")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    status = client.policies.get("shared", namespace=namespace)["status"]
    assert (status["currentPower"], status["gpuCount"]) == (rounds, rounds)
    assert sum(api.conflicts for api in apis) > 0, "the writers never actually raced"


def test_a_finalizer_added_while_the_spec_changes_keeps_both(client: KubeClient, namespace: str) -> None:
    stale = client.policies.create({
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"powerCapLimit": 1000, "selector": {}},
    })
    fresh = client.policies.get("p", namespace=namespace)
    fresh["spec"]["powerCapLimit"] = 1500
    client.policies.replace(fresh)

    def add_finalizer(obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"].setdefault("finalizers", []).append("climatik.io/node-frequencies")
        return obj

    assert update_object(client.policies, f"{namespace}/p", add_finalizer, current=stale).written
    stored = client.policies.get("p", namespace=namespace)
    assert stored["spec"]["powerCapLimit"] == 1500
    assert stored["metadata"]["finalizers"] == ["climatik.io/node-frequencies"]
    stored["metadata"]["finalizers"] = []
    client.policies.replace(stored)


def test_server_errors_map_to_the_project_exceptions(client: KubeClient, namespace: str) -> None:
    with pytest.raises(NotFoundError):
        client.policies.get("absent", namespace=namespace)
    with pytest.raises(InvalidError):
        client.policies.create({"metadata": {"name": "bad", "namespace": namespace}, "spec": {"powerCapLimit": -5}})
    assert update_status(client.policies, f"{namespace}/absent", increment("gpuCount")).object is None
