"""`climatik tune --probe` on the device zoo: it says what the tuner would see on a node (GPUs, clocks, power,
MIG, persistence, cpufreq policies) and changes nothing, not even through the kernel model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pynvml
import pytest
from click.testing import CliRunner
from support.nvml_zoo import ZOO, FakeNvml, GpuModel, device
from support.sysfs_zoo import acpi_cpufreq_shared, intel_pstate

from climatik.cli import cli
from climatik.tune import probe
from climatik.tune.backends.cpufreq import CpufreqBackend
from climatik.tune.backends.nvml import NvmlGpuBackend


@pytest.mark.parametrize("row", ZOO, ids=lambda row: row.key)
def test_the_probe_describes_every_zoo_gpu_and_changes_nothing(row: GpuModel, tmp_path: Path) -> None:
    nvml = FakeNvml.node(row.key, count=2)
    nvml.load(1)
    tree = acpi_cpufreq_shared(tmp_path, cpus=4, shared=2, offline=[3])
    before = tree.snapshot()

    with tree.kernel():
        found = probe.collect(gpu=NvmlGpuBackend(nvml=nvml), cpu=CpufreqBackend(root=tmp_path), sys_admin=True)
    text = probe.render_text(found)

    assert nvml.writes() == [] and tree.writes == [] and tree.snapshot() == before
    assert "GPUs (nvml): NVML 12.555.42.06, driver 555.42.06, CUDA 12.5" in text
    for uuid in nvml.uuids():
        assert uuid in text
    assert row.name in text
    gpu = found.gpu.gpus[0] if found.gpu else None
    assert gpu is not None and gpu.power_limit_w == row.power_default_w
    assert (gpu.min_power_limit_w, gpu.max_power_limit_w) == (row.power_min_w, row.power_max_w)
    assert gpu.persistence_mode is True
    if row.mig_enabled:
        assert gpu.mig_mode == "enabled" and gpu.mig_devices == len(row.mig_instances)
        assert not gpu.lockable and "may lock clocks: no: MIG mode is enabled" in text
    else:
        assert (gpu.min_clock_mhz, gpu.max_clock_mhz, gpu.steps) == (min(row.top_steps), row.max_sm_mhz,
                                                                     len(row.top_steps))
        assert gpu.lockable and "may lock clocks: yes" in text
        assert gpu.mig_mode == ("disabled" if row.mig_capable else "not supported")
    assert (gpu.instant_power_w is not None) is row.instant_power_field
    assert "CPUs (cpufreq): 2 policies over 4 CPUs; offline: 3" in text
    assert "policy 0 (CPUs 0-1): acpi-cpufreq, governor schedutil, hardware 1200-2401 MHz" in text


def test_the_probe_of_an_l4_and_an_h100_reads_as_people_read_it(tmp_path: Path) -> None:
    nvml = FakeNvml([device("l4", 0), device("h100-sxm", 1)])
    nvml.load(1)
    tree = intel_pstate(tmp_path, cpus=2)

    text = probe.render_text(probe.collect(gpu=NvmlGpuBackend(nvml=nvml), cpu=CpufreqBackend(root=tmp_path),
                                           sys_admin=True))

    l4, h100 = nvml.uuids()
    assert f"  GPU 0 {l4} NVIDIA L4\n    MIG not supported; persistence mode on\n" in text
    assert ("    clocks: 210-2040 MHz in 123 steps of 15 MHz (memory clocks 6251, 405 MHz); default 2040 MHz; now SM "
            "210 MHz, memory 405 MHz\n") in text
    assert "    power limit 72 W (default 72 W, range 40-72 W); drawing 16 W (instantaneous 16 W)\n" in text
    assert f"  GPU 1 {h100} NVIDIA H100 80GB HBM3\n    MIG disabled; persistence mode on\n" in text
    assert tree.writes == []


def test_without_cap_sys_admin_the_probe_says_no_gpu_can_be_locked() -> None:
    nvml = FakeNvml.node("h100-sxm")

    found = probe.collect(gpu=NvmlGpuBackend(nvml=nvml), cpu=None, sys_admin=False)

    assert not found.gpu.gpus[0].lockable if found.gpu else False
    assert "may lock clocks: no: this process lacks CAP_SYS_ADMIN" in probe.render_text(found)


def test_a_node_whose_runtime_hides_the_gpus_is_described_as_such() -> None:
    text = probe.render_text(probe.collect(gpu=NvmlGpuBackend(nvml=FakeNvml([])), cpu=None, sys_admin=True))

    assert "cannot see the GPUs: NVML sees no GPUs on this node" in text
    assert "NVIDIA_VISIBLE_DEVICES" in text


def test_a_node_without_nvml_is_described_not_crashing() -> None:
    nvml = FakeNvml.node("l4")
    nvml.fail_init(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    text = probe.render_text(probe.collect(gpu=NvmlGpuBackend(nvml=nvml), cpu=None, sys_admin=True))

    assert "cannot see the GPUs: NVML cannot start: NVML Shared Library Not Found" in text


@pytest.mark.parametrize(("capabilities", "expected"), [("000001ffffffffff", True), ("00000000a80425fb", False)])
def test_cap_sys_admin_is_read_from_the_process_status(tmp_path: Path, capabilities: str, expected: bool) -> None:
    status = tmp_path / "status"
    status.write_text(f"Name:\tclimatik\nCapInh:\t0000000000000000\nCapEff:\t{capabilities}\n")

    assert probe.has_sys_admin(status) is expected
    assert probe.has_sys_admin(tmp_path / "missing") is None


def test_the_command_prints_json_without_a_node_name_or_a_cluster(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml([device("a100-sxm4-80gb-mig", 0), device("a100-sxm4-80gb", 1)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)  # what `import pynvml` finds, as in production
    monkeypatch.delenv("NODE_NAME", raising=False)
    tree = intel_pstate(tmp_path / "sys", cpus=2, offline=[1])

    with tree.kernel():
        result = CliRunner().invoke(cli, ["--log-level=warning", "tune", "--probe", "--output", "json",
                                          f"--sysfs-root={tmp_path / 'sys'}",
                                          f"--state-file={tmp_path / 'state.json'}"])

    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert [gpu["mig_mode"] for gpu in found["gpu"]["gpus"]] == ["enabled", "disabled"]
    assert [gpu["lockable"] for gpu in found["gpu"]["gpus"]] == [False, found["sys_admin"] is not False]
    assert found["cpu"]["offline"] == [1]
    assert [policy["cpus"] for policy in found["cpu"]["policies"]] == [[0], [1]]
    assert nvml.writes() == [] and tree.writes == []
    assert not nvml.session_open
    assert not (tmp_path / "state.json").exists()


def test_the_command_still_needs_a_node_name_to_run() -> None:
    result = CliRunner().invoke(cli, ["tune", "--gpu-backend=none", "--no-cpufreq"], env={"NODE_NAME": ""})

    assert result.exit_code == 2
    assert "--node-name (or NODE_NAME) is required unless --probe" in result.output
