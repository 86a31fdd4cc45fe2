"""`climatik tune` as a real process against the real API server, driving simulated GPUs and a sysfs tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def tuner_args(control_plane, sim: SimCluster, sysfs: Path, tmp_path: Path) -> list[str]:  # type: ignore[no-untyped-def]
    return ["tune", f"--kubeconfig={control_plane.kubeconfig}", f"--node-name={NODE}", "--gpu-backend=sim",
            f"--sim-url={sim.urls[NODE]}", f"--sysfs-root={sysfs}", f"--state-file={tmp_path / 'state.json'}",
            "--metrics-port=0", "--resync=2"]


def tuner(control_plane, sim: SimCluster, sysfs: Path, tmp_path: Path) -> ClimatikProcess:  # type: ignore[no-untyped-def]
    return ClimatikProcess(tuner_args(control_plane, sim, sysfs, tmp_path), tmp_path / "tune.log").start()


def apply_spec(kubectl, gpus: list[dict[str, Any]], cpus: list[dict[str, Any]] | None = None,  # type: ignore[no-untyped-def]
               budgets: list[dict[str, Any]] | None = None) -> None:
    obj = {"apiVersion": "climatik.io/v1alpha1", "kind": "NodeFrequencies", "metadata": {"name": NODE},
           "spec": {"nodeName": NODE, "gpuFrequencies": gpus, "cpuFrequencies": cpus or [],
                    "powerBudgets": budgets or []}}
    result = kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    assert result.returncode == 0, result.stderr


def power_limits(sim: SimCluster) -> dict[str, float]:
    client = SimControlClient(sim.urls[NODE], session=requests.Session())
    return {gpu.uuid: gpu.power_limit_w for gpu in client.gpus()}


def locked_clocks(sim: SimCluster) -> dict[str, int | None]:
    client = SimControlClient(sim.urls[NODE], session=requests.Session())
    return {gpu.uuid: gpu.locked_clock_mhz for gpu in client.gpus()}


def scaling_max(sysfs: Path, cpu: int) -> int | None:
    """The file's value; None while the tuner is rewriting it (a plain file here, unlike a sysfs attribute)."""
    text = (sysfs / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_max_freq").read_text().strip()
    return int(text) if text else None


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


def test_a_budget_is_held_by_power_limits_reported_and_given_back_on_sigterm(
    control_plane, kubectl, node_object, sim: SimCluster, sysfs: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    gpu0, gpu1 = sorted(locked_clocks(sim))
    defaults = power_limits(sim)
    SimControlClient(sim.urls[NODE], session=requests.Session()).set_load(1.0, {"prefill": 1.0})
    apply_spec(kubectl, [])
    proc = tuner(control_plane, sim, sysfs, tmp_path)
    try:
        wait_for(lambda: status(kubectl).get("power"), timeout=40, what="the node's power reported",
                 diagnostics=proc.output)

        apply_spec(kubectl, [], budgets=[{"policy": "default/p", "watts": 800, "gpuIds": [gpu0, gpu1]}])
        applied = time.monotonic()
        wait_for(lambda: sum(power_limits(sim).values()) <= 800, timeout=5, interval=0.05,
                 what="the budget held by power limits", diagnostics=proc.output)
        held_after = time.monotonic() - applied
        assert held_after < 1.0, f"the budget took {held_after:.2f} s to be held"

        reported = wait_for(lambda: (s := status(kubectl)).get("budgets") and s, what="the budget's status",
                            diagnostics=proc.output)
        budget = reported["budgets"][0]
        assert (budget["policy"], budget["watts"], budget["lever"]) == ("default/p", 800, "PowerLimit")
        assert reported["observedGeneration"] == json.loads(kubectl("get", "nf", NODE, "-o", "json").stdout)[
            "metadata"]["generation"]
        assert budget["powerMean"] > 0 and reported["power"]["max"] >= reported["power"]["mean"] > 0
        assert all(200.0 <= limit <= 700.0 for limit in power_limits(sim).values())

        assert proc.terminate() == 0
        assert power_limits(sim) == defaults == {gpu0: 700.0, gpu1: 700.0}
        assert json.loads((tmp_path / "state.json").read_text())["devices"].get("gpuPowerLimit") in (None, {})
    finally:
        proc.stop_quietly()


def climatik(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("NODE_NAME", "KUBECONFIG")}
    return subprocess.run([sys.executable, "-m", "climatik", "--log-level=warning", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=env)


def test_probe_describes_the_simulated_node_and_changes_nothing(sim: SimCluster, sysfs: Path,
                                                                tmp_path: Path) -> None:
    gpu0, gpu1 = sorted(locked_clocks(sim))
    SimControlClient(sim.urls[NODE], session=requests.Session()).set_locked_clock(gpu1, 1005)
    before = locked_clocks(sim), [scaling_max(sysfs, cpu) for cpu in range(2)]
    common = ["tune", "--probe", "--gpu-backend=sim", f"--sim-url={sim.urls[NODE]}", f"--sysfs-root={sysfs}",
              f"--state-file={tmp_path / 'state.json'}"]

    as_json = climatik(*common, "--output=json")
    as_text = climatik(*common)

    assert as_json.returncode == 0 and as_text.returncode == 0, as_json.stderr + as_text.stderr
    found = json.loads(as_json.stdout)
    gpus = {gpu["uuid"]: gpu for gpu in found["gpu"]["gpus"]}
    assert set(gpus) == {gpu0, gpu1}
    assert (gpus[gpu0]["locked_clock_mhz"], gpus[gpu1]["locked_clock_mhz"]) == (None, 1005)
    assert all(gpu["steps"] and gpu["power_limit_w"] for gpu in gpus.values())
    assert [policy["cpus"] for policy in found["cpu"]["policies"]] == [[0], [1]]
    assert f"GPUs (sim, simulated node at {sim.urls[NODE]}): no versions reported" in as_text.stdout
    assert "CPUs (cpufreq): 2 policies over 2 CPUs; offline: none" in as_text.stdout
    assert (locked_clocks(sim), [scaling_max(sysfs, cpu) for cpu in range(2)]) == before
    assert not (tmp_path / "state.json").exists()


def test_a_baseline_is_what_a_released_gpu_returns_to(
    control_plane, kubectl, node_object, sim: SimCluster, sysfs: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    gpu0, _ = sorted(locked_clocks(sim))
    apply_spec(kubectl, [{"gpuId": gpu0, "targetFrequency": 1395}])
    proc = ClimatikProcess([*tuner_args(control_plane, sim, sysfs, tmp_path), "--gpu-baseline-clocks=210,1200"],
                           tmp_path / "tune.log").start()
    try:
        held = wait_for(lambda: (s := status(kubectl)).get("gpuFrequencies") and s["gpuFrequencies"][0], timeout=40,
                        what="the entry's status", diagnostics=proc.output)
        assert held["targetFrequency"] == 1200 and "baseline" in held["message"]
        assert locked_clocks(sim)[gpu0] == 1200
        apply_spec(kubectl, [])
        wait_for(lambda: "default_restored" in proc.output(), what="the GPU released", diagnostics=proc.output)
        assert locked_clocks(sim)[gpu0] == 1200, "back to the baseline, not unlocked"
    finally:
        proc.stop_quietly()


def test_readiness_follows_the_gpu_backend(
    control_plane, kubectl, node_object, sim: SimCluster, sysfs: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    gpu0, _ = sorted(locked_clocks(sim))
    apply_spec(kubectl, [{"gpuId": gpu0, "targetFrequency": 1200}])
    proc = tuner(control_plane, sim, sysfs, tmp_path)
    try:
        port = wait_for(lambda: metrics_port(proc), what="the probe port", diagnostics=proc.output)
        wait_for(lambda: readyz(port)[0] == 200, timeout=40, what="ready", diagnostics=proc.output)
        sim.stop()  # the simulated node's API goes away, as NVML does when the driver is unloaded
        apply_spec(kubectl, [{"gpuId": gpu0, "targetFrequency": 1005}])  # so the tuner must reach the GPUs
        _, text = wait_for(lambda: (answer := readyz(port))[0] == 503 and answer, timeout=40,
                           what="not ready", diagnostics=proc.output)
        assert "simulator" in text
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200, "still live"
        failed = wait_for(lambda: (s := status(kubectl)).get("gpuFrequencies") and s["gpuFrequencies"][0]["status"]
                          == "Failed" and s, what="the entry Failed", diagnostics=proc.output)
        assert failed["conditions"] and "simulator" in failed["gpuFrequencies"][0]["message"]
        writes = proc.output().count('"status_updated"')
        time.sleep(5)  # two resyncs or more
        assert proc.output().count('"status_updated"') <= writes + 1, "a lasting fault is written once, not in a loop"
    finally:
        proc.stop_quietly()


def metrics_port(proc: ClimatikProcess) -> int | None:
    for line in proc.output().splitlines():
        if '"process_started"' in line:
            return int(json.loads(line)["port"])
    return None


def readyz(port: int) -> tuple[int, str]:
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except requests.RequestException as error:
        return 0, str(error)
    return answer.status_code, answer.text
