"""The node guard of a real `climatik tune` process under faults, against the real API server and simulated GPUs:
a tuner killed in the middle of a budget, and the API server gone while a burst arrives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from climatik_procs import ClimatikProcess, wait_for

from climatik.clock import SystemClock
from climatik.sim.cluster import ClusterConfig, NodeConfig, SimCluster, start_cluster
from climatik.sim.server import SimControlClient

pytestmark = pytest.mark.integration

NODE = "guard-node-1"
POLICY = "default/llm"
PREFILL = {"prefill": 1.0}


@pytest.fixture
def sim() -> Iterator[SimCluster]:
    cluster = start_cluster(ClusterConfig(nodes=(NodeConfig(name=NODE, gpu_count=2),)), clock=SystemClock())
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def gpus(sim: SimCluster) -> SimControlClient:
    return SimControlClient(sim.urls[NODE], session=requests.Session())


@pytest.fixture
def node_object(kubectl) -> Iterator[None]:  # type: ignore[no-untyped-def]
    yield
    kubectl("delete", "nf", NODE, "--ignore-not-found")


def tuner(kubeconfig: Path, sim: SimCluster, tmp_path: Path, log: str = "tune.log") -> ClimatikProcess:
    return ClimatikProcess(["tune", f"--kubeconfig={kubeconfig}", f"--node-name={NODE}", "--gpu-backend=sim",
                            f"--sim-url={sim.urls[NODE]}", "--no-cpufreq", f"--state-file={tmp_path / 'state.json'}",
                            "--metrics-port=0", "--resync=2"], tmp_path / log).start()


def apply_budgets(kubectl, budgets: list[tuple[int, list[str]]]) -> None:  # type: ignore[no-untyped-def]
    obj = {"apiVersion": "climatik.io/v1alpha1", "kind": "NodeFrequencies", "metadata": {"name": NODE},
           "spec": {"nodeName": NODE, "powerBudgets": [{"policy": POLICY, "watts": watts, "gpuIds": uuids}
                                                       for watts, uuids in budgets]}}
    result = kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    assert result.returncode == 0, result.stderr


def limits(gpus: SimControlClient) -> dict[str, float]:
    return {gpu.uuid: gpu.power_limit_w for gpu in gpus.gpus()}


def draws(gpus: SimControlClient) -> float:
    return sum(gpu.power_w for gpu in gpus.gpus())


def status(kubectl) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    result = kubectl("get", "nf", NODE, "-o", "json")
    return json.loads(result.stdout).get("status", {}) if result.returncode == 0 else {}


def test_a_tuner_killed_mid_budget_keeps_it_after_a_restart_and_gives_back_what_was_taken_away(
    control_plane, kubectl, node_object, sim: SimCluster, gpus: SimControlClient,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    gpu0, gpu1 = sorted(limits(gpus))
    gpus.set_load(1.0, PREFILL)
    apply_budgets(kubectl, [(800, [gpu0, gpu1])])
    proc = tuner(control_plane.kubeconfig, sim, tmp_path)
    try:
        wait_for(lambda: sum(limits(gpus).values()) <= 800, timeout=40, what="the budget held",
                 diagnostics=proc.output)
        proc.kill()
        left = limits(gpus)
        assert sum(left.values()) <= 800, "the firmware keeps the limits of a killed tuner"

        apply_budgets(kubectl, [(350, [gpu0])])  # meanwhile the budget moved off GPU 1
        proc = tuner(control_plane.kubeconfig, sim, tmp_path, "restarted.log")
        wait_for(lambda: (now := limits(gpus))[gpu1] == 700.0 and now[gpu0] <= 350, timeout=40,
                 what="GPU 1's original back and GPU 0 held", diagnostics=proc.output)
        wait_for(lambda: draws(gpus) <= 350 + 700, what="the power under the budget", diagnostics=proc.output)

        assert kubectl("delete", "nf", NODE).returncode == 0
        wait_for(lambda: limits(gpus) == {gpu0: 700.0, gpu1: 700.0}, what="every original back",
                 diagnostics=proc.output)
        assert proc.terminate() == 0
    finally:
        proc.stop_quietly()


def test_a_burst_is_held_while_the_api_server_is_down(
    control_plane, kubectl, node_object, sim: SimCluster, gpus: SimControlClient,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    gpu0, gpu1 = sorted(limits(gpus))
    gpus.set_load(1.0, PREFILL, uuid=gpu0)
    gpus.set_load(0.0, {"idle": 1.0}, uuid=gpu1)
    apply_budgets(kubectl, [(900, [gpu0, gpu1])])
    apiserver = control_plane.add_apiserver()  # the tuner's own, so that the tests' API server stays up
    proc = tuner(apiserver.kubeconfig, sim, tmp_path)
    try:
        wait_for(lambda: (s := status(kubectl)).get("budgets") and s["budgets"][0]["met"], timeout=40,
                 what="the budget met and reported", diagnostics=proc.output)
        quiet = limits(gpus)
        assert quiet[gpu0] > quiet[gpu1], "the split follows demand: the busy GPU has the larger limit"
        apiserver.kill()

        gpus.set_load(1.0, PREFILL, uuid=gpu1)  # the burst, with no API server to tell anyone
        wait_for(lambda: limits(gpus)[gpu1] > quiet[gpu1] + 50, what="the split moved to the burst",
                 diagnostics=proc.output)
        assert sum(limits(gpus).values()) <= 900
        wait_for(lambda: draws(gpus) <= 900 * 1.02, what="the burst held under the budget",
                 diagnostics=proc.output)
        assert proc.running(), "the tuner rides out the API server's absence"

        apiserver.start()
        wait_for(lambda: (s := status(kubectl)).get("budgets") and s["budgets"][0]["powerMax"] > 800, timeout=40,
                 what="the burst reported once the API server is back", diagnostics=proc.output)
    finally:
        proc.stop_quietly()
        if apiserver.running:
            apiserver.stop()
