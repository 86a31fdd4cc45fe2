"""Leader-elected controllers as real processes ride out an API outage: control is back within 5 s of the API.

`climatik monitor` and `climatik recommend` run with leader election under the local harness (hack/loopenv.py),
which restarts a process that exits, as the kubelet would, and gives each a stable identity, as a pod name is.
The kube-apiserver is stopped for 20 s, longer than the 15 s lease: each leader leads on for as long as nobody
else can hold its lease, then exits; its successor takes the same lease back at once when the API returns. A
leader-elected controller answers /readyz only while it leads with synced caches: that is "in control".

The figures (seconds from the apiserver's /readyz until each controller's) are printed; run with -s.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import testenv
from loopenv import ClimatikProcesses

from climatik.kube.client import NAMESPACES, connect

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0
CONTROL_GAP_LIMIT_S = 5.0
LEASE_NAMESPACE = "controllers-outage"
CONTROLLERS = ("monitor", "recommend")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testenv.ControlPlane]:
    plane = testenv.start_with_crds(tmp_path_factory.mktemp("controllers-outage"))
    try:
        with connect(plane.kubeconfig) as client:
            client.create(NAMESPACES, {"metadata": {"name": LEASE_NAMESPACE}})
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def controllers(plane: testenv.ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClimatikProcesses]:
    workdir = tmp_path_factory.mktemp("controllers")
    processes = ClimatikProcesses(workdir, plane.kubeconfig)
    elect = ["--leader-elect", f"--leader-election-namespace={LEASE_NAMESPACE}"]
    # Prometheus is not needed to lead: the monitor only reports it missing, per policy, and there are none.
    processes.start("monitor", ["monitor", f"--prometheus-url=http://127.0.0.1:{closed_port()}", "--interval=2s",
                                *elect, "--leader-election-identity=climatik-monitor-0"])
    processes.start("recommend", ["recommend", *elect, "--leader-election-identity=climatik-recommend-0"])
    try:
        yield processes
    finally:
        processes.stop()


def port_of(log: Path) -> int | None:
    """The port the controller's latest run serves on (each run logs process_started with it)."""
    port = None
    for line in log.read_text(errors="replace").splitlines():
        if '"process_started"' in line:
            port = int(json.loads(line)["port"])
    return port


def in_control(log: Path) -> bool:
    port = port_of(log)
    if port is None:
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def until_in_control(processes: ClimatikProcesses, since: float, timeout: float) -> dict[str, float]:
    """Seconds from `since` until each controller answered /readyz 200 (inf if it did not in `timeout`)."""
    back: dict[str, float] = {}
    while len(back) < len(CONTROLLERS) and time.monotonic() - since < timeout:
        for name in CONTROLLERS:
            if name not in back and in_control(processes.workdir / f"{name}.log"):
                back[name] = time.monotonic() - since
        time.sleep(0.05)
    return {name: back.get(name, float("inf")) for name in CONTROLLERS}


def test_leader_elected_controllers_are_in_control_within_5_s_of_the_api_returning(
    plane: testenv.ControlPlane, controllers: ClimatikProcesses
) -> None:
    started = time.monotonic()
    first = until_in_control(controllers, started, timeout=90)
    assert max(first.values()) < 90, f"the controllers never led: {first}"

    plane.apiserver.kill()
    time.sleep(OUTAGE_S)
    plane.apiserver.start(wait=False)
    while not plane.apiserver.ready():
        time.sleep(0.02)
    ready = time.monotonic()
    gaps = until_in_control(controllers, ready, timeout=60)
    controllers.check()

    report = "  ".join(f"{name} {gap:.2f} s" for name, gap in gaps.items())
    print(f"\nAPI down {OUTAGE_S:.0f} s; control back after the apiserver's /readyz: {report}; "
          f"restarts {controllers.restarts()}")
    assert max(gaps.values()) < CONTROL_GAP_LIMIT_S, f"{report}; logs in {controllers.workdir}"
