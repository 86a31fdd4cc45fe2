"""Benchmark of `climatik monitor` at cluster scale: cycle time, Prometheus query time, API writes per steady
cycle and resident memory, at 100 nodes x 8 GPUs / 20 policies and 1000 x 8 / 200.

Starts a real kube-apiserver + etcd (hack/testenv.py), fills it with one Running pod per GPU and one
PowerCappingPolicy per 40 pods (label app=svc-<i>, all in one namespace), serves the fleet's fixed DCGM
readings from a few exporter endpoints, has a real Prometheus scrape them every 5 s, and runs the real
`climatik monitor` process (--interval=5s). After the first cycle has written every status and two more have
passed, it watches a window of steady cycles: the monitor's own counters (polled every 100 ms) give the cycle
time and the query time, the apiserver's request counter the writes, /proc the memory and CPU time.

Run with `make bench`, or `python hack/bench/monitor/bench_monitor.py --scale 1000x8` (one scale).
Writes out/bench/monitor/results.txt and the monitor's logs there; everything else lives in a temporary
directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "hack"))

import structlog  # noqa: E402
from cycles import CounterPoller, cut_cycles, mean_gap, query_means, sample_period, summary  # noqa: E402
from fleet import ExporterEndpoints, Layout  # noqa: E402
from loopenv import ClimatikProcesses  # noqa: E402
from procusage import ProcessUsage, process_usage  # noqa: E402
from promenv import PrometheusServer  # noqa: E402
from scrape import MonitorCounters, apiserver_writes  # noqa: E402
from testenv import ControlPlane, start_with_crds  # noqa: E402
from world import create_world  # noqa: E402

from climatik.kube.client import (  # noqa: E402
    POLICIES,
    KubeClient,
    connect,
)

NAMESPACE = "bench-monitor"
INTERVAL_S = 5.0
OUT = REPO / "out" / "bench" / "monitor"
# The apiserver's own heartbeat (its identity Lease in kube-system) is not the monitor's doing.
NOT_THE_MONITORS = frozenset({"leases"})


@dataclass(frozen=True)
class Row:
    layout: Layout
    setup_s: float
    cycle_s: tuple[float, float]
    period_s: float
    sample_s: tuple[float, float]
    queries: dict[str, float]
    reconciles: float
    reconcile_s: float
    writes: float
    status_updates: float
    other_writes: dict[str, int]
    cpu_s: float
    rss_mib: float
    peak_mib: float
    poll_gap_s: float
    poll_fetch_s: float


class MonitorRun:
    """One monitor process against one layout, with its exporters and Prometheus."""

    def __init__(self, plane: ControlPlane, layout: Layout, workdir: Path, args: argparse.Namespace) -> None:
        self.plane = plane
        self.layout = layout
        self.workdir = workdir
        self.args = args
        self.name = f"monitor-{layout.nodes}x{layout.gpus_per_node}"
        self.processes = ClimatikProcesses(workdir, plane.kubeconfig)

    def start(self, stack: ExitStack, targets: list[str]) -> CounterPoller:
        prometheus = PrometheusServer(self.workdir / f"prometheus-{self.name}", targets, scrape_interval=INTERVAL_S)
        prometheus.start()
        stack.callback(prometheus.stop)
        prometheus.wait_for_series("DCGM_FI_DEV_POWER_USAGE", self.layout.gpus, timeout=120)
        self.processes.start(self.name, ["monitor", f"--prometheus-url={prometheus.url}",
                                         f"--interval={INTERVAL_S:g}s", f"--heartbeat={self.args.heartbeat}"])
        stack.callback(self._stop)
        port = self._port()
        poller = CounterPoller(f"http://127.0.0.1:{port}/metrics").start()
        stack.callback(poller.stop)
        return poller

    @property
    def pid(self) -> int:
        return self.processes.procs[self.name].pid

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def status_updates(self) -> int:
        return sum('"status_updated"' in line for line in self.log.read_text(errors="replace").splitlines())

    def _port(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.processes.check()
            for line in self.log.read_text(errors="replace").splitlines():
                if '"process_started"' in line:
                    return int(json.loads(line)["port"])
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} logged no process_started line in {timeout:.0f} s")

    def _stop(self) -> None:
        codes = self.processes.stop()
        OUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.log, OUT / self.log.name)
        if any(codes.values()):
            raise RuntimeError(f"{self.name} exited with {codes}; see {OUT / self.log.name}")


def wait_all_measured(client: KubeClient, layout: Layout, run: MonitorRun, timeout: float) -> None:
    """Until every policy's status counts its 40 GPUs (the first cycle wrote them all)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.processes.check()
        items = client.list(POLICIES, namespace=layout.namespace).get("items") or []
        measured = [p for p in items if (p.get("status") or {}).get("gpuCount") == 40]
        if len(measured) >= layout.policies:
            return
        time.sleep(2)
    raise TimeoutError(f"not every policy was measured within {timeout:.0f} s")


@dataclass(frozen=True)
class Marks:
    """Cumulative counters at one moment: apiserver writes, the monitor's usage and status_updated lines."""

    counters: MonitorCounters
    writes: Counter[str]
    usage: ProcessUsage
    updates: int


def mark(plane: ControlPlane, run: MonitorRun, counters: MonitorCounters) -> Marks:
    writes = apiserver_writes(plane.server, plane.token, plane.workdir / "certs" / "apiserver.crt")
    return Marks(counters, writes, process_usage(run.pid), run.status_updates())


def measure(plane: ControlPlane, client: KubeClient, layout: Layout, workdir: Path, args: argparse.Namespace) -> Row:
    _, setup_s = create_world(client, layout, threads=args.threads)
    run = MonitorRun(plane, layout, workdir, args)
    with ExitStack() as stack:
        exporters = ExporterEndpoints(layout, args.endpoints)
        exporters.start()
        stack.callback(exporters.stop)
        poller = run.start(stack, exporters.targets)
        wait_all_measured(client, layout, run, timeout=args.timeout)
        latest = poller.latest()
        settled = poller.wait_for_samples((latest.samples if latest else 0) + 2, timeout=args.timeout,
                                          alive=run.processes.check)
        before = mark(plane, run, settled)
        first = int(settled.samples) + 1
        end = poller.wait_for_samples(first + args.cycles, timeout=args.cycles * INTERVAL_S + args.timeout,
                                      alive=run.processes.check)
        after = mark(plane, run, end)
        looks = poller.looks()
    window = [look for look in looks if before.counters.at <= look.at <= after.counters.at]
    polling = (mean_gap(window), sum(poller.fetch_seconds) / max(1, len(poller.fetch_seconds)))
    return row(layout, setup_s=setup_s, looks=looks, span=(first, args.cycles), before=before, after=after,
               polling=polling)


def row(layout: Layout, *, setup_s: float, looks: list[MonitorCounters], span: tuple[int, int], before: Marks,
        after: Marks, polling: tuple[float, float]) -> Row:
    cycles = cut_cycles(looks, *span)
    steady = after.counters.samples - before.counters.samples
    writes = after.writes - before.writes
    own = sum(n for resource, n in writes.items() if resource.split("/")[0] not in NOT_THE_MONITORS)
    return Row(
        layout=layout, setup_s=setup_s, cycle_s=summary([c.total_s for c in cycles]),
        period_s=sample_period(looks, *span), poll_gap_s=polling[0], poll_fetch_s=polling[1],
        sample_s=summary([c.sample_s for c in cycles]), queries=query_means(before.counters, after.counters),
        reconciles=sum(c.reconciles for c in cycles) / len(cycles),
        reconcile_s=sum(c.reconcile_s for c in cycles) / len(cycles),
        writes=own / steady, status_updates=(after.updates - before.updates) / steady,
        other_writes={r: n for r, n in writes.items() if r.split("/")[0] in NOT_THE_MONITORS and n},
        cpu_s=(after.usage.cpu_seconds - before.usage.cpu_seconds) / steady,
        rss_mib=after.usage.rss_kib / 1024, peak_mib=after.usage.peak_rss_kib / 1024,
    )


def table(rows: list[Row], args: argparse.Namespace) -> list[str]:
    lines = [f"{'nodes':>5} {'gpus':>5} {'policies':>8} | {'cycle s':>11} | {'period s':>8} | {'sample s':>11} |"
             f" {'prom query s':>12} | {'reconciles':>10} | {'writes/steady cycle':>19} | {'CPU s/cycle':>11} |"
             f" {'monitor RSS MiB':>15}"]
    for r in rows:
        lines.append(
            f"{r.layout.nodes:>5} {r.layout.gpus:>5} {r.layout.policies:>8} | {_pair(r.cycle_s):>11} |"
            f" {r.period_s:>8.2f} | {_pair(r.sample_s):>11} | {sum(r.queries.values()):>12.3f} |"
            f" {r.reconciles:>10.0f} | {r.writes:>19.2f} | {r.cpu_s:>11.2f} |"
            f" {r.rss_mib:>4.0f} (peak {r.peak_mib:.0f})")
    lines.append("")
    lines.append(f"Steady window: {args.cycles} cycles per scale, after the first cycle wrote every status and two more"
                 f" passed; monitor --interval={INTERVAL_S:g}s --heartbeat={args.heartbeat}; Prometheus scrape"
                 f" interval {INTERVAL_S:g} s.")
    for r in rows:
        queries = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in sorted(r.queries.items()))
        lines.append(f"  {r.layout.nodes}x{r.layout.gpus_per_node}: pods and policies created in {r.setup_s:.0f} s;"
                     f" mean per query: {queries}; reconcile time summed over workers {r.reconcile_s:.2f} s/cycle;"
                     f" status_updated log lines {r.status_updates:.2f}/cycle; /metrics polled every"
                     f" {r.poll_gap_s * 1000:.0f} ms ({r.poll_fetch_s * 1000:.0f} ms per answer); not counted"
                     f" (the apiserver's own writes): {r.other_writes or 'none'}")
    lines.extend(ASSUMPTIONS.format(heartbeat_cost=rows[-1].layout.policies * INTERVAL_S / 60.0,
                                    policies=rows[-1].layout.policies).splitlines())
    return lines


def _pair(values: tuple[float, float]) -> str:
    return f"{values[0]:.2f} / {values[1]:.2f}"


ASSUMPTIONS = """\
Columns: 'cycle s' and 'sample s' are median / max over the window. cycle = one Prometheus sample (the
sampler's reconcile: queries, snapshot, queueing every policy) plus the policy reconciles it queued, until the
last one ends (to within the polling of the monitor's /metrics). 'period s' = mean time from one sample to
the next (the sampler comes back --interval after its own reconcile ends). 'prom query s' = mean HTTP time of the
power query plus the SM clock query (climatik_prom_query_duration_seconds). 'reconciles' = policy reconciles
per cycle. 'writes/steady cycle' = write requests (POST/PUT/PATCH/DELETE/APPLY) the kube-apiserver counted
in the window (apiserver_request_total), divided by the cycles in it. 'CPU s/cycle' = the monitor's user +
system time per cycle; 'monitor RSS' = VmRSS at the end of the window (VmHWM as peak).
Assumptions: one namespace holds every pod and policy (each policy's selector is evaluated against all its
pods: the worst case); every GPU runs one pod; readings are constant, so the cluster is steady and no policy
needs capping; no leader election (it would add one Lease renewal every retry period). The heartbeat is set
beyond the window so that steady cycles show only what changes cause; with the default --heartbeat=60s each
policy is rewritten once a minute, {heartbeat_cost:.1f} writes per 5 s cycle on average at {policies} policies.
Other processes may share the machine's CPUs; run on an idle machine for stable figures."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="100x8,1000x8",
                        help="comma-separated NODESxGPUS layouts, smallest first (policies = GPUs / 40)")
    parser.add_argument("--cycles", type=int, default=10, help="steady cycles measured per scale")
    parser.add_argument("--endpoints", type=int, default=10, help="exporter endpoints serving the nodes")
    parser.add_argument("--threads", type=int, default=8, help="threads creating pods")
    parser.add_argument("--heartbeat", default="10m", help="the monitor's --heartbeat")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for the first cycle")
    args = parser.parse_args(argv)
    # Only warnings and worse from in-process parts (the simulator, the client): the benchmark prints a table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    layouts = [Layout(nodes=int(n), gpus_per_node=int(g), namespace=NAMESPACE)
               for n, g in (s.split("x") for s in args.scale.split(",") if s)]
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="climatik-bench-monitor-") as tmp:
        plane = start_with_crds(Path(tmp) / "control-plane")
        try:
            with connect(plane.kubeconfig, timeout=60, pool_size=args.threads * 2) as client:
                for layout in sorted(layouts, key=lambda lay: lay.gpus):
                    rows.append(measure(plane, client, layout, Path(tmp), args))
        finally:
            plane.stop()
    lines = ["Monitor at scale: simulated DCGM exporters, real Prometheus and kube-apiserver, real"
             " `climatik monitor`", "", *table(rows, args), f"Ran in {time.monotonic() - started:.0f} s"]
    print("\n".join(lines))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
