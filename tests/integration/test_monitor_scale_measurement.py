"""Narrowed measurement against a real Prometheus and a real kube-apiserver: reading only the selected pods'
series (by name where they are few, by namespace where they fill it) gives every policy the same power as
reading every series, a GPU two pods share counts once, and a pod replaced on another node is found there.

The pods live in the API server and reach the monitor's code through a real informer with the pod trimming of
`climatik monitor`; a DCGM-format exporter, whose series the test rewrites, is scraped every second.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from climatik_procs import wait_for
from promenv import PrometheusServer
from simworld import create_running_pod, ensure_namespace

from climatik.api import PowerCappingPolicy
from climatik.kube.client import PODS, POLICIES, KubeClient, connect
from climatik.kube.informer import Informer
from climatik.kube.listwatch import ClientListerWatcher
from climatik.kube.store import POD_INDEXES
from climatik.monitor.core import measure, select_pods
from climatik.monitor.pods import PodTrimmer
from climatik.monitor.reconciler import BY_LABEL, DecodedPolicies, candidate_pods, index_by_label, sampling_scope
from climatik.prom import GpuSampler, GpuSnapshot, PromClient, PromSettings, dcgm_profile
from climatik.prom.scope import EVERYTHING, Scope

pytestmark = pytest.mark.integration

SMALL, FULL = "scale-small", "scale-full"  # a small workload among batch jobs; a namespace one workload fills
#: (namespace, pod, node, app) of every pod.
PODS_AT_START = [
    (SMALL, "llm-0", "node-a", "llm"), (SMALL, "llm-1", "node-b", "llm"),
    (SMALL, "llm-2", "node-b", "llm"), (SMALL, "llm-3", "node-b", "llm"),  # llm-2 and llm-3 time-slice GPU-b1
    *[(SMALL, f"batch-{i}", f"node-{'c' if i < 10 else 'd'}", "batch") for i in range(20)],
    (FULL, "train-0", "node-e", "train"), (FULL, "train-1", "node-e", "train"),
]
#: GPU UUID -> (node, watts, pods using it).
GPUS_AT_START: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "GPU-a0": ("node-a", 300.0, ("llm-0",)),
    "GPU-b0": ("node-b", 310.0, ("llm-1",)),
    "GPU-b1": ("node-b", 320.0, ("llm-2", "llm-3")),
    **{f"GPU-c{i}": ("node-c" if i < 10 else "node-d", 200.0 + i, (f"batch-{i}",)) for i in range(20)},
    "GPU-e0": ("node-e", 400.0, ("train-0",)),
    "GPU-e1": ("node-e", 410.0, ("train-1",)),
    "GPU-idle": ("node-f", 60.0, ()),
}
NAMESPACE_OF = {pod: namespace for namespace, pod, _, _ in PODS_AT_START}


class Exporter:
    """A dcgm-exporter stand-in whose GPUs (and the pods labelled on them) the test changes while it runs."""

    def __init__(self) -> None:
        self.gpus = dict(GPUS_AT_START)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def text(self) -> bytes:
        lines = []
        for metric, value in (("DCGM_FI_DEV_POWER_USAGE", None), ("DCGM_FI_DEV_SM_CLOCK", 1980.0)):
            for index, (uuid, (node, watts, pods)) in enumerate(sorted(self.gpus.items())):
                common = (f'gpu="{index}",UUID="{uuid}",pci_bus_id="00000000:{index:02X}:00.0",'
                          f'device="nvidia{index}",modelName="NVIDIA H100 80GB HBM3",Hostname="{node}",'
                          'DCGM_FI_DRIVER_VERSION="550.90.07"')
                for pod in pods or ("",):
                    namespace = NAMESPACE_OF[pod] if pod else ""
                    workload = f'container="{"main" if pod else ""}",namespace="{namespace}",pod="{pod}"'
                    lines.append(f"{metric}{{{common},{workload}}} {watts if value is None else value}")
        return ("\n".join(lines) + "\n").encode()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.text()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    found = Exporter()
    found.start()
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture(scope="module")
def prometheus(exporter: Exporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), [exporter.target])
    server.start()
    try:
        server.wait_for_series("DCGM_FI_DEV_POWER_USAGE", sum(len(g[2]) or 1 for g in GPUS_AT_START.values()))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(control_plane: Any) -> Iterator[KubeClient]:
    with connect(control_plane.kubeconfig) as found:
        for namespace in (SMALL, FULL):
            ensure_namespace(found, namespace)
        for namespace, name, node, app in PODS_AT_START:
            create_running_pod(found, namespace=namespace, name=name, node=node, labels={"app": app})
        for namespace, app in ((SMALL, "llm"), (FULL, "train")):
            found.create(POLICIES, {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
                                    "metadata": {"name": app, "namespace": namespace},
                                    "spec": {"powerCapLimit": 5000, "selector": {"matchLabels": {"app": app}}}})
        yield found


class Caches:
    """The monitor's pod and policy caches, filled by real informers from the API server."""

    def __init__(self, client: KubeClient) -> None:
        self.stop = threading.Event()
        self.pods = Informer(ClientListerWatcher(client, PODS), name="pods", transform=PodTrimmer(),
                             indexers={**POD_INDEXES, BY_LABEL: index_by_label})
        self.policies = Informer(ClientListerWatcher(client, POLICIES), name="powercappingpolicies")
        for informer in (self.pods, self.policies):
            informer.start(self.stop)
            assert informer.wait_for_sync(30)
        self.decoded = DecodedPolicies(self.policies.store)

    def power(self, snapshot: GpuSnapshot, key: str) -> tuple[float, int, list[str], bool]:
        """A policy's power, GPU count, nodes and completeness, measured as the monitor measures it."""
        found = self.decoded.get(key)
        assert found is not None and isinstance(found[1], PowerCappingPolicy)
        policy = found[1]
        namespace = policy.metadata.namespace or ""
        pods = select_pods(policy.spec.selector, candidate_pods(self.pods.store, namespace, policy.spec.selector))
        measured = measure(pods, snapshot)
        return measured.power, measured.gpu_count, [n.name for n in measured.nodes], measured.complete

    def close(self) -> None:
        self.stop.set()
        for informer in (self.pods, self.policies):
            informer.join(5)


@pytest.fixture(scope="module")
def caches(client: KubeClient) -> Iterator[Caches]:
    found = Caches(client)
    try:
        yield found
    finally:
        found.close()


@pytest.fixture(scope="module")
def sampler(prometheus: PrometheusServer) -> Iterator[GpuSampler]:
    prom = PromClient(PromSettings(url=prometheus.url))
    try:
        yield GpuSampler(prom, dcgm_profile(), max_sample_age_s=30)
    finally:
        prom.close()


def test_the_narrowed_read_gives_every_policy_what_the_full_read_gives(caches: Caches, sampler: GpuSampler) -> None:
    scope, served, *_ = sampling_scope(caches.decoded, caches.pods.store)
    narrowed = sampler.fetch_gpu_samples(scope=scope)
    everything = sampler.fetch_gpu_samples(narrowed.query_time, EVERYTHING)

    assert {f"{SMALL}/llm", f"{FULL}/train"} <= served
    assert (scope.namespaces[SMALL], scope.namespaces[FULL]) == ({"llm-0", "llm-1", "llm-2", "llm-3"}, None)
    assert len(narrowed.gpus) == 5 < len(everything.gpus) == len(GPUS_AT_START)
    for key in (f"{SMALL}/llm", f"{FULL}/train"):
        assert caches.power(narrowed, key) == caches.power(everything, key)
    # GPU-b1 is used by llm-2 and llm-3 and counted once: 300 + 310 + 320.
    assert caches.power(narrowed, f"{SMALL}/llm") == (930.0, 3, ["node-a", "node-b"], True)
    assert caches.power(narrowed, f"{FULL}/train") == (810.0, 2, ["node-e"], True)


def test_clocks_are_read_for_the_pods_asked_only_and_added_as_the_sample_would_have_read_them(
        caches: Caches, sampler: GpuSampler) -> None:
    scope = sampling_scope(caches.decoded, caches.pods.store).scope

    power_only = sampler.fetch_gpu_samples(scope=scope, clock_scope=Scope())
    added = sampler.add_clocks(power_only, Scope.of_pods({SMALL: {"llm-0"}}))
    together = sampler.fetch_gpu_samples(power_only.query_time, scope)

    assert all(r.sm_clock_mhz is None for r in power_only.gpus.values()) and "sm_clock" not in power_only.durations
    assert {k for k, r in added.gpus.items() if r.sm_clock_mhz is not None} == {"GPU-a0"}, "llm-0's GPU only"
    assert added.gpus["GPU-a0"] == together.gpus["GPU-a0"] and together.gpus["GPU-a0"].sm_clock_mhz == 1980.0
    assert added.gpus.keys() == together.gpus.keys() and not added.problems


def test_a_pod_replaced_on_another_node_is_measured_there(client: KubeClient, caches: Caches, exporter: Exporter,
                                                          prometheus: PrometheusServer, sampler: GpuSampler) -> None:
    # llm-1 is terminating on node-b (without a kubelet it stays so); its replacement llm-1-x runs on node-g.
    client.delete(PODS, "llm-1", namespace=SMALL)
    create_running_pod(client, namespace=SMALL, name="llm-1-x", node="node-g", labels={"app": "llm"})
    NAMESPACE_OF["llm-1-x"] = SMALL
    gpus = dict(exporter.gpus)
    gpus["GPU-b0"] = ("node-b", 310.0, ())
    gpus["GPU-g0"] = ("node-g", 350.0, ("llm-1-x",))
    exporter.gpus = gpus
    wait_for(lambda: prometheus.query('DCGM_FI_DEV_POWER_USAGE{pod="llm-1-x"}'), timeout=30,
             what="the replacement's GPU scraped")
    wait_for(lambda: not prometheus.query('DCGM_FI_DEV_POWER_USAGE{pod="llm-1"}'), timeout=30,
             what="the old pod's series gone")
    wait_for(lambda: caches.pods.store.get(f"{SMALL}/llm-1-x") and _terminating(caches, f"{SMALL}/llm-1"),
             timeout=30, what="the pod cache caught up")

    scope = sampling_scope(caches.decoded, caches.pods.store).scope
    snapshot = sampler.fetch_gpu_samples(scope=scope)

    assert scope.namespaces[SMALL] == {"llm-0", "llm-1-x", "llm-2", "llm-3"}
    assert caches.power(snapshot, f"{SMALL}/llm") == (970.0, 3, ["node-a", "node-b", "node-g"], True)
    assert caches.power(snapshot, f"{SMALL}/llm") == caches.power(
        sampler.fetch_gpu_samples(snapshot.query_time, EVERYTHING), f"{SMALL}/llm")


def _terminating(caches: Caches, key: str) -> bool:
    pod = caches.pods.store.get(key)
    return pod is None or bool(pod["metadata"].get("deletionTimestamp"))


def test_a_namespace_without_policies_is_never_read(caches: Caches, sampler: GpuSampler,
                                                    prometheus: PrometheusServer) -> None:
    scope = sampling_scope(caches.decoded, caches.pods.store).scope

    snapshot = sampler.fetch_gpu_samples(scope=scope)

    assert not any(pod.name.startswith("batch-") for pod in snapshot.pod_gpus)
    assert "GPU-idle" not in snapshot.gpus
    assert isinstance(scope, Scope) and not scope.everything

