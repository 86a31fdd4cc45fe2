"""`climatik tune` as a real process against the real API server, driving simulated GPUs and a sysfs tree."""

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

NODE = "tune-node-1"
CPU_MAX_KHZ = 3_500_000


@pytest.fixture
def sim() -> Iterator[SimCluster]:
    cluster = start_cluster(ClusterConfig(nodes=(NodeConfig(name=NODE, gpu_count=2),)), clock=SystemClock())
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    for cpu in range(2):
        freq = root / "devices/system/cpu" / f"cpu{cpu}" / "cpufreq"
        freq.mkdir(parents=True)
        for name, value in [("cpuinfo_max_freq", CPU_MAX_KHZ), ("cpuinfo_min_freq", 800_000),
                            ("scaling_max_freq", CPU_MAX_KHZ), ("scaling_min_freq", 800_000),
                            ("scaling_governor", "performance"), ("scaling_driver", "acpi-cpufreq")]:
            (freq / name).write_text(f"{value}\n")
    return root


@pytest.fixture
def node_object(kubectl) -> Iterator[None]:  # type: ignore[no-untyped-def]
    yield
    kubectl("delete", "nf", NODE, "--ignore-not-found")


def tuner(control_plane, sim: SimCluster, sysfs: Path, tmp_path: Path) -> ClimatikProcess:  # type: ignore[no-untyped-def]
    return ClimatikProcess(
        ["tune", f"--kubeconfig={control_plane.kubeconfig}", f"--node-name={NODE}", "--gpu-backend=sim",
         f"--sim-url={sim.urls[NODE]}", f"--sysfs-root={sysfs}", f"--state-file={tmp_path / 'state.json'}",
         "--metrics-port=0", "--resync=2"],
        tmp_path / "tune.log",
    ).start()


def apply_spec(kubectl, gpus: list[dict[str, Any]], cpus: list[dict[str, Any]] | None = None) -> None:  # type: ignore[no-untyped-def]
    obj = {"apiVersion": "climatik.io/v1alpha1", "kind": "NodeFrequencies", "metadata": {"name": NODE},
           "spec": {"nodeName": NODE, "gpuFrequencies": gpus, "cpuFrequencies": cpus or []}}
    result = kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    assert result.returncode == 0, result.stderr


def locked_clocks(sim: SimCluster) -> dict[str, int | None]:
    client = SimControlClient(sim.urls[NODE], session=requests.Session())
    return {gpu.uuid: gpu.locked_clock_mhz for gpu in client.gpus()}


def scaling_max(sysfs: Path, cpu: int) -> int:
    return int((sysfs / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_max_freq").read_text())


def status(kubectl) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    result = kubectl("get", "nf", NODE, "-o", "json")
    return json.loads(result.stdout).get("status", {}) if result.returncode == 0 else {}


def test_spec_is_applied_reported_and_restored_on_removal_and_sigterm(
    control_plane, kubectl, node_object, sim: SimCluster, sysfs: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    gpu0, gpu1 = sorted(locked_clocks(sim))
    apply_spec(kubectl, [{"gpuId": gpu0, "targetFrequency": 1200, "policy": "default/p"}],
               [{"cpuId": 1, "targetFrequency": 2000}])
    proc = tuner(control_plane, sim, sysfs, tmp_path)
    try:
        applied = wait_for(lambda: (s := status(kubectl)).get("appliedCount") == 2 and s, timeout=40,
                           what="both entries Applied", diagnostics=proc.output)
        assert applied["gpuFrequencies"][0] == {**applied["gpuFrequencies"][0], "gpuId": gpu0,
                                                 "status": "Applied", "targetFrequency": 1200}
        assert applied["gpuCount"] == 2 and applied["observedGeneration"] == 1
        assert {g["uuid"] for g in applied["inventory"]["gpus"]} == {gpu0, gpu1}
        assert locked_clocks(sim) == {gpu0: 1200, gpu1: None}
        assert scaling_max(sysfs, 1) == 2_000_000 and scaling_max(sysfs, 0) == CPU_MAX_KHZ

        apply_spec(kubectl, [{"gpuId": gpu1, "targetFrequency": 1000}])
        wait_for(lambda: locked_clocks(sim) == {gpu0: None, gpu1: 990},
                 what="gpu0 restored, gpu1 snapped down to a step", diagnostics=proc.output)
        wait_for(lambda: scaling_max(sysfs, 1) == CPU_MAX_KHZ, what="cpu1 restored")
        assert proc.terminate() == 0
        assert locked_clocks(sim) == {gpu0: None, gpu1: None}
    finally:
        proc.stop_quietly()


def test_a_restart_after_sigkill_restores_from_the_state_file(
    control_plane, kubectl, node_object, sim: SimCluster, sysfs: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    gpu0, _ = sorted(locked_clocks(sim))
    apply_spec(kubectl, [{"gpuId": gpu0, "targetFrequency": 900}], [{"cpuId": 0, "targetFrequency": 1500}])
    proc = tuner(control_plane, sim, sysfs, tmp_path)
    try:
        wait_for(lambda: locked_clocks(sim)[gpu0] == 900 and scaling_max(sysfs, 0) == 1_500_000,
                 timeout=40, what="targets applied", diagnostics=proc.output)
        proc.kill()
        assert locked_clocks(sim)[gpu0] == 900, "a killed tuner cannot restore anything"
        assert kubectl("delete", "nf", NODE).returncode == 0
        proc = tuner(control_plane, sim, sysfs, tmp_path)
        wait_for(lambda: locked_clocks(sim)[gpu0] is None and scaling_max(sysfs, 0) == CPU_MAX_KHZ,
                 timeout=40, what="defaults restored from the state file", diagnostics=proc.output)
    finally:
        proc.stop_quietly()


def test_dry_run_reports_and_touches_nothing(
    control_plane, kubectl, node_object, sim: SimCluster, sysfs: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    gpu0, _ = sorted(locked_clocks(sim))
    apply_spec(kubectl, [{"gpuId": gpu0, "targetFrequency": 900}])
    proc = tuner(control_plane, sim, sysfs, tmp_path)
    proc.proc.kill()  # type: ignore[union-attr]
    proc.proc.wait()  # type: ignore[union-attr]
    proc = ClimatikProcess([*proc.args, "--dry-run"], tmp_path / "dry.log").start()
    try:
        reported = wait_for(lambda: (s := status(kubectl)).get("gpuFrequencies") and s, timeout=40,
                            what="dry-run status", diagnostics=proc.output)
        entry = reported["gpuFrequencies"][0]
        assert entry["status"] == "Pending" and "dry-run" in entry["message"]
        assert locked_clocks(sim)[gpu0] is None
    finally:
        proc.stop_quietly()
