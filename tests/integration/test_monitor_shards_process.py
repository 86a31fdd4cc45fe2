"""`climatik monitor --shard` as real processes: two monitors split the policies (each writes the status of its own
only), and when one is killed the other measures them all within 20 s; sharded by namespace, every policy of a
namespace is measured by one of them. Real API server, real Prometheus scraping a simulated DCGM exporter."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from climatik_procs import ClimatikProcess, wait_for
from promenv import PrometheusServer
from simworld import create_node, create_pods, ensure_namespace

from climatik.clock import SystemClock
from climatik.kube.client import POLICIES, KubeClient, connect
from climatik.kube.shards import owner_of
from climatik.sim.cluster import ClusterConfig, GpuConfig, NodeConfig, SimCluster, start_cluster
from climatik.sim.node import PodRef
from climatik.sim.physics import Phase, PhaseMix
from climatik.sim.traces import ConstantParams

pytestmark = pytest.mark.integration

NS = "monitor-shards-it"
LEASES_NS = "climatik-shards-it"
POLICIES_N = 8
DECODE = ConstantParams(utilisation=0.6, mix=PhaseMix.only(Phase.DECODE))


@pytest.fixture(scope="module")
def sim() -> Iterator[SimCluster]:
    node = NodeConfig(name="shard-node", gpu_count=2, workload=DECODE,
                      gpus={i: GpuConfig(pods=(PodRef(NS, f"svc-{i}", "main"),)) for i in range(2)})
    with start_cluster(ClusterConfig(nodes=(node,)), clock=SystemClock()) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def prometheus(sim: SimCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer.scraping(tmp_path_factory.mktemp("prometheus"),
                                   [url.removeprefix("http://") for url in sim.urls.values()],
                                   series="DCGM_FI_DEV_POWER_USAGE", count=2) as server:
        yield server


@pytest.fixture(scope="module")
def client(control_plane, sim: SimCluster) -> Iterator[KubeClient]:  # type: ignore[no-untyped-def]
    with connect(control_plane.kubeconfig) as client:
        create_node(client, "shard-node", 2)
        create_pods(client, [(NS, f"svc-{i}", "shard-node", {"app": "svc"}) for i in range(2)])
        ensure_namespace(client, LEASES_NS)
        for i in range(POLICIES_N):
            client.create(POLICIES, {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
                                     "metadata": {"name": f"cap-{i}", "namespace": NS},
                                     "spec": {"powerCapLimit": 5000, "selector": {"matchLabels": {"app": "svc"}}}})
        yield client


def sharded_monitor(control_plane, prometheus: PrometheusServer, identity: str, log: Path,  # type: ignore[no-untyped-def]
                    *options: str) -> ClimatikProcess:
    return ClimatikProcess(
        ["monitor", f"--kubeconfig={control_plane.kubeconfig}", f"--prometheus-url={prometheus.url}",
         "--interval=1s", "--heartbeat=2s", "--metrics-port=0", "--shard",
         f"--leader-election-namespace={LEASES_NS}", f"--leader-election-identity={identity}", *options],
        log).start()


def port(proc: ClimatikProcess) -> int | None:
    for line in proc.output().splitlines():
        if '"process_started"' in line:
            return int(json.loads(line)["port"])
    return None


def statuses_written(proc: ClimatikProcess, *, since_line: int = 0) -> set[str]:
    """The policies whose status the monitor wrote, from its log (from line `since_line` on)."""
    return {json.loads(line)["key"] for line in proc.output().splitlines()[since_line:] if '"status_updated"' in line}


def lines(proc: ClimatikProcess) -> int:
    return len(proc.output().splitlines())


def owned(proc: ClimatikProcess) -> int | None:
    """The policies the monitor says it owns (climatik_shard_owned_keys), None until it serves /metrics."""
    found = port(proc)
    if found is None:
        return None
    try:
        text = requests.get(f"http://127.0.0.1:{found}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    for line in text.splitlines():
        if line.startswith("climatik_shard_owned_keys{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def updated(client: KubeClient) -> dict[str, dt.datetime]:
    items = client.list(POLICIES, namespace=NS).get("items") or []
    return {p["metadata"]["name"]: dt.datetime.fromisoformat(p["status"]["lastUpdated"].replace("Z", "+00:00"))
            for p in items if (p.get("status") or {}).get("lastUpdated")}


def test_sharded_monitors_split_the_policies_and_a_survivor_takes_them_all(  # type: ignore[no-untyped-def]
        control_plane, prometheus: PrometheusServer, client: KubeClient, tmp_path: Path) -> None:
    a = sharded_monitor(control_plane, prometheus, "monitor-a", tmp_path / "a.log")
    b = sharded_monitor(control_plane, prometheus, "monitor-b", tmp_path / "b.log")
    try:
        keys = [f"{NS}/cap-{i}" for i in range(POLICIES_N)]
        # The monitors measure every policy of the cluster (other tests' too), each the ones hashed to it.
        everyone = [f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                    for p in client.list(POLICIES).get("items") or []]
        share = sum(1 for key in everyone if owner_of(key, ["monitor-a", "monitor-b"]) == "monitor-a")
        assert 0 < sum(1 for key in keys if owner_of(key, ["monitor-a", "monitor-b"]) == "monitor-a") < POLICIES_N
        wait_for(lambda: owned(a) == share and owned(b) == len(everyone) - share, timeout=60,
                 what="both monitors own their share", diagnostics=lambda: a.output()[-3000:] + b.output()[-3000:])
        split_at = lines(a), lines(b)
        wait_for(lambda: len(updated(client)) == POLICIES_N, timeout=60, what="every policy measured")
        time.sleep(4)  # two heartbeats more: every policy's status is written again, by its owner only
        mine = statuses_written(a, since_line=split_at[0]) & set(keys)
        theirs = statuses_written(b, since_line=split_at[1]) & set(keys)
        assert mine == {key for key in keys if owner_of(key, ["monitor-a", "monitor-b"]) == "monitor-a"}
        assert theirs == set(keys) - mine

        b.kill()
        killed = dt.datetime.now(dt.UTC)
        started = time.monotonic()
        wait_for(lambda: owned(a) == len(everyone), timeout=30, what="the survivor owns every policy",
                 diagnostics=lambda: a.output()[-3000:])
        taken_over = time.monotonic() - started
        assert taken_over < 20, f"owned again {taken_over:.1f} s after the kill"
        # Every policy, the killed monitor's included, is measured again (the heartbeat is 2 s).
        wait_for(lambda: all(when > killed for when in updated(client).values()) or None, timeout=15,
                 what="every policy measured after the kill", diagnostics=lambda: str(updated(client)))
        assert a.running()
        assert [line for line in a.output().splitlines() if '"level": "error"' in line] == []
    finally:
        a.stop_quietly()
        b.stop_quietly()


def test_monitors_sharded_by_namespace_keep_each_namespace_on_one_replica(  # type: ignore[no-untyped-def]
        control_plane, prometheus: PrometheusServer, client: KubeClient, tmp_path: Path) -> None:
    namespaces = [f"{NS}-team-{i}" for i in range(6)]
    members = ["monitor-ns-a", "monitor-ns-b"]
    assert len({owner_of(namespace, members) for namespace in namespaces}) == 2, "both replicas get namespaces"
    for namespace in namespaces:
        ensure_namespace(client, namespace)
        for name in ("serve", "train"):
            client.create(POLICIES, {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
                                     "metadata": {"name": name, "namespace": namespace},
                                     "spec": {"powerCapLimit": 5000, "selector": {"matchLabels": {"app": name}}}})
    a, b = (sharded_monitor(control_plane, prometheus, identity, tmp_path / f"{identity}.log", "--shard-by=namespace")
            for identity in members)
    try:
        everyone = len(client.list(POLICIES).get("items") or [])
        wait_for(lambda: (owned(a) or 0) + (owned(b) or 0) == everyone and bool(owned(a)) and bool(owned(b)),
                 timeout=60, what="both monitors own their namespaces",
                 diagnostics=lambda: a.output()[-3000:] + b.output()[-3000:])
        keys = {f"{namespace}/{name}": namespace for namespace in namespaces for name in ("serve", "train")}
        wait_for(lambda: set(keys) <= statuses_written(a) | statuses_written(b), timeout=60,
                 what="every policy's status written", diagnostics=lambda: a.output()[-3000:] + b.output()[-3000:])
        for proc, identity in ((a, members[0]), (b, members[1])):
            assert statuses_written(proc) & set(keys) == {
                key for key, namespace in keys.items() if owner_of(namespace, members) == identity}
    finally:
        a.stop_quietly()
        b.stop_quietly()
