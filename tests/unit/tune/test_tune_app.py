"""The tuner's wiring: it reads how many GPUs its node should have from the node's label (or does without), and
its probes follow the GPU library's health."""

from __future__ import annotations

import pynvml
from click.testing import CliRunner
from structlog.testing import capture_logs
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient
from support.nvml_zoo import FakeNvml
from tune_doubles import FakeGpuBackend

from climatik.api import GpuFrequency
from climatik.cli import cli
from climatik.kube.errors import ForbiddenError
from climatik.tune import app
from climatik.tune.applier import Applier
from climatik.tune.backends.nvml import NvmlGpuBackend
from climatik.tune.state import StateStore

NODE = "gpu-node-1"


def node_with(labels: dict[str, str]) -> tuple[FakeCluster, FakeKubeClient]:
    cluster = FakeCluster()
    client = FakeKubeClient(cluster)
    client.nodes.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": labels}})
    return cluster, client


def test_the_node_gpu_count_comes_from_its_label_and_is_read_again_only_when_old() -> None:
    _, client = node_with({"nvidia.com/gpu.count": "8", "nvidia.com/gpu.present": "true"})
    clock = FakeClock()
    count = app.node_gpu_count(client.nodes, NODE, clock=clock)

    first = count()
    current = client.nodes.get(NODE)
    current["metadata"]["labels"]["nvidia.com/gpu.count"] = "4"
    client.nodes.replace(current)
    cached = count()
    clock.advance(app.NODE_LABEL_TTL_S)

    assert (first, cached, count()) == (8, 8, 4)


def test_without_the_label_or_the_right_to_read_the_node_there_is_no_count() -> None:
    cluster, client = node_with({"kubernetes.io/hostname": NODE})
    clock = FakeClock()

    assert app.node_gpu_count(client.nodes, NODE, clock=clock)() is None
    cluster.fail_next(ForbiddenError("nodes is forbidden", status=403))
    with capture_logs() as logs:
        assert app.node_gpu_count(client.nodes, NODE, clock=clock)() is None
    assert [log["event"] for log in logs] == ["node_unreadable"]


def test_probes_follow_nvml_health() -> None:
    clock = FakeClock()
    nvml = FakeNvml.node("h100-sxm")
    nvml.fail_init(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)
    backend = NvmlGpuBackend(nvml=nvml, clock=clock, restart_after_s=300.0)
    applier = Applier(state=StateStore(None), clock=clock, gpu_backend=backend)
    ready, live = app.probes(backend)
    assert ready is not None and live is not None

    applier.apply([GpuFrequency(nvml.uuids()[0], 1500)])
    unready = ready()
    still_live = live()
    clock.advance(301)
    applier.apply([GpuFrequency(nvml.uuids()[0], 1500)])

    assert unready[0] is False and "RM has detected an NVML/RM version mismatch" in unready[1]
    assert still_live == (True, "ok")
    assert live()[0] is False and "new container" in live()[1]


def test_a_backend_without_health_adds_no_probe() -> None:
    assert app.probes(FakeGpuBackend([])) == (None, None)
    assert app.probes(None) == (None, None)


def test_the_guard_interval_comes_from_the_flag_or_the_environment_and_must_be_positive(mocker) -> None:  # type: ignore[no-untyped-def]
    build = mocker.patch("climatik.tune.app.build")
    base = ["tune", "--node-name", NODE]

    CliRunner().invoke(cli, [*base, "--guard-interval", "200ms"])
    from_flag = build.call_args.args[0]
    CliRunner().invoke(cli, base, env={"CLIMATIK_TUNE_GUARD_INTERVAL": "0.05",
                                       "CLIMATIK_TUNE_GUARD_IDLE_INTERVAL": "2s"})
    from_env = build.call_args.args[0]
    refused = CliRunner().invoke(cli, [*base, "--guard-interval", "0"])

    assert (from_flag.guard_interval, from_flag.guard_idle_interval) == (0.2, 1.0)
    assert (from_env.guard_interval, from_env.guard_idle_interval) == (0.05, 2.0)
    assert refused.exit_code == 2 and "--guard-interval" in refused.output
