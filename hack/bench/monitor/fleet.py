"""A steady simulated GPU fleet for the monitor benchmark: fixed readings, one pod per GPU, and a few exporter
endpoints that each serve many nodes' DCGM text.

One HTTP server per node would put a thousand listeners in the benchmark process; dcgm-exporter's format does
not care which endpoint a series comes from (the `Hostname` label names the node), so each endpoint serves the
concatenated metrics of a slice of the nodes. Readings never change, so the text is rendered once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from climatik.sim import H100, ExporterOptions, GpuState, PodRef, render_metrics
from climatik.sim.node import gpu_uuid

PODS_PER_POLICY = 40
SM_CLOCK_MHZ = 1755


@dataclass(frozen=True)
class Layout:
    """Which pod runs on which GPU: GPU number g (node g // gpus_per_node) runs pod `svc-<p>-<k>` of policy
    p = g // PODS_PER_POLICY, labelled app=svc-<p>, in the policy's namespace (`namespace`, or with `teams`,
    `<namespace>-t<p mod teams>`). A smaller layout is a prefix of a larger one."""

    nodes: int
    gpus_per_node: int
    namespace: str
    #: Namespaces the policies are spread over, round robin (1: every pod and policy in `namespace`).
    teams: int = 1

    def __post_init__(self) -> None:
        if self.gpus % PODS_PER_POLICY:
            raise ValueError(f"{self.gpus} GPUs do not split into policies of {PODS_PER_POLICY} pods")

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def policies(self) -> int:
        return self.gpus // PODS_PER_POLICY

    def node_name(self, node: int) -> str:
        return f"gpu-node-{node:04d}"

    def pod_name(self, gpu: int) -> str:
        return f"svc-{gpu // PODS_PER_POLICY}-{gpu % PODS_PER_POLICY}"

    def app(self, policy: int) -> str:
        return f"svc-{policy}"

    def namespace_of(self, policy: int) -> str:
        return self.namespace if self.teams == 1 else f"{self.namespace}-t{policy % self.teams}"

    def namespaces(self) -> list[str]:
        return sorted({self.namespace_of(p) for p in range(self.policies)})

    def policy_key(self, policy: int) -> str:
        return f"{self.namespace_of(policy)}/cap-{self.app(policy)}"

    def pods(self) -> list[tuple[str, str, str, dict[str, str]]]:
        """(namespace, pod name, node name, labels) of every pod."""
        return [(self.namespace_of(g // PODS_PER_POLICY), self.pod_name(g), self.node_name(g // self.gpus_per_node),
                 {"app": self.app(g // PODS_PER_POLICY)}) for g in range(self.gpus)]


def power_of(gpu: int) -> float:
    """A fixed, GPU-specific draw between 250 and 400 W."""
    return 250.0 + (gpu * 37) % 150


def node_readings(layout: Layout, node: int) -> list[GpuState]:
    readings = []
    for index in range(layout.gpus_per_node):
        gpu = node * layout.gpus_per_node + index
        power = power_of(gpu)
        readings.append(GpuState(
            uuid=gpu_uuid(layout.node_name(node), index), index=index, profile=H100, sm_clock_mhz=SM_CLOCK_MHZ,
            mem_clock_mhz=H100.mem_clock_mhz, target_mhz=SM_CLOCK_MHZ, locked_max_mhz=None, utilisation=0.8,
            power_w=power, instant_power_w=power, energy_mj=int(power * 3_600_000), power_limit_w=H100.power_limit_w,
            pods=(PodRef(layout.namespace_of(gpu // PODS_PER_POLICY), layout.pod_name(gpu), "main"),)))
    return readings


def render_slice(layout: Layout, nodes: Sequence[int]) -> bytes:
    """The text of one endpoint: every listed node, one # HELP/# TYPE block per node as dcgm-exporter writes."""
    options = ExporterOptions()
    parts = [render_metrics(layout.node_name(n), node_readings(layout, n), options) for n in nodes]
    return _merge_families(parts).encode()


def _merge_families(parts: Sequence[str]) -> str:
    """Concatenated exporter bodies repeat each metric's HELP/TYPE lines, which the text format forbids;
    keep the first and group every family's samples under it."""
    families: dict[str, list[str]] = {}
    headers: dict[str, list[str]] = {}
    for part in parts:
        for line in part.splitlines():
            if line.startswith("#"):
                name = line.split()[2]
                headers.setdefault(name, [])
                if len(headers[name]) < 2:
                    headers[name].append(line)
            elif line:
                families.setdefault(line.split("{", 1)[0], []).append(line)
    return "".join("\n".join([*headers.get(name, []), *lines]) + "\n" for name, lines in families.items())


class ExporterEndpoints:
    """`count` HTTP servers on loopback, each serving the fixed metrics of an equal slice of the nodes."""

    def __init__(self, layout: Layout, count: int) -> None:
        per = -(-layout.nodes // count)
        self._bodies = [render_slice(layout, range(i * per, min(layout.nodes, (i + 1) * per)))
                        for i in range(count) if i * per < layout.nodes]
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []

    @property
    def targets(self) -> list[str]:
        """host:port of each endpoint, for a Prometheus static config."""
        return [f"127.0.0.1:{server.server_address[1]}" for server in self._servers]

    @property
    def body_bytes(self) -> int:
        return sum(len(body) for body in self._bodies)

    def start(self) -> None:
        for body in self._bodies:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(body))
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, name="bench-exporter", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)
        self._servers, self._threads = [], []


def _handler(body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # Prometheus scrapes every few seconds; the benchmark prints its own table.

    return Handler
