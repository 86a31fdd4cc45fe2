"""Benchmark of `climatik monitor` at cluster scale, the old path against the new one side by side: cycle time,
CPU time per cycle, Prometheus query time, API writes per steady cycle, resident memory and the pod cache's
bytes per pod, at 1000 nodes x 8 GPUs / 200 policies and 3000 x 8 / 600, projected to 10,000 nodes.

Starts a real kube-apiserver + etcd (hack/testenv.py), fills it with one Running pod per GPU and one
PowerCappingPolicy per 40 pods (label app=svc-<i>, all in one namespace), serves the fleet's fixed DCGM
readings from a few exporter endpoints, and has a real Prometheus scrape them every 5 s. Then, per scale, it runs
the real `climatik monitor` process (--interval=5s) against the same world: the old path (the code at
--baseline, run from its own tree: climatik/prom and climatik/monitor before issue 16), the new one (this
working tree), and the new one as one of --shards monitors that split the policies (`--shard`; the other
members are shard memberships in this process, which take their share of the policies and measure nothing, so
that the process measured does one shard's work: the busiest's, since hashing splits unevenly). After the first
cycle has written every status (of its own policies) and two more have passed, it watches two windows of steady
cycles:

* the timing window: the monitor's own counters, polled every 100 ms while a cycle runs, give each cycle's wall
  time and the query time. A look asks only those counters (`/metrics?name[]=...`, a few milliseconds of the
  monitor's time); the whole of /metrics costs a monitor of hundreds of policies tens of milliseconds a look, and
  polled whole every 100 ms its cycles measured up to a third longer. A tree that serves no such filter (an old
  baseline) answers whole: such a row is marked, and `--poll whole` polls every path whole, like for like;
* the CPU window: nobody polls (even a few counters would count as the monitor's own CPU time); /proc gives the
  CPU time, the apiserver's request counter the writes.

Run with `make bench`, or `python hack/bench/monitor/bench_monitor.py --scale 1000x8` (one scale).
Writes out/bench/monitor/results.txt and the monitors' logs there; everything else lives in a temporary
directory.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO / "tests"))  # support.memory: what a cache holds per object

import structlog  # noqa: E402
from cycles import CounterPoller, cut_cycles, query_seconds, sample_period, summary  # noqa: E402
from fleet import ExporterEndpoints, Layout  # noqa: E402
from procusage import ProcessUsage, process_usage  # noqa: E402
from promenv import PrometheusServer  # noqa: E402
from scrape import MonitorCounters, apiserver_writes, counters_url, fetch_text, parse_monitor  # noqa: E402
from simworld import ensure_namespace  # noqa: E402
from testenv import ControlPlane, start_with_crds  # noqa: E402
from variants import BASELINE, MonitorProcess, Variant, baseline, one_shard, working_tree  # noqa: E402
from world import HOT_SHARE_OF_LIMIT, cached_pod_bytes, create_world  # noqa: E402

from climatik.kube.client import POLICIES, KubeClient, connect  # noqa: E402
from climatik.kube.shards import ShardConfig, ShardMembership, owner_of  # noqa: E402
from climatik.monitor.app import SHARD_UNITS  # noqa: E402

NAMESPACE = "bench-monitor"
INTERVAL_S = 5.0
OUT = REPO / "out" / "bench" / "monitor"
# The apiserver's own heartbeat (its identity Lease in kube-system) is not the monitor's doing.
NOT_THE_MONITORS = frozenset({"leases"})


@dataclass(frozen=True)
class Row:
    layout: Layout
    variant: str
    cycle_s: tuple[float, float]
    period_s: float
    sample_s: tuple[float, float]
    #: Per query kind: seconds and queries per cycle.
    queries: dict[str, tuple[float, float]]
    reconciles: float
    writes: float
    status_updates: float
    other_writes: dict[str, int]
    cpu_s: float
    cpu_cycles: int
    rss_mib: float
    peak_mib: float
    cache_bytes: float
    poll_fetch_s: float
    #: Whether the timing window's looks rendered the whole of /metrics (asked to, or a tree without `name[]`).
    polled_whole: bool = False
    #: Sharded: the policies each member owns, smallest first (the measured monitor owns the last).
    shares: tuple[int, ...] = ()
    #: What went wrong, when the run could not measure every policy (the figures are then of failing cycles).
    note: str = ""

    @property
    def query_s(self) -> float:
        return sum(seconds for seconds, _ in self.queries.values())


@dataclass(frozen=True)
class Scale:
    """One layout with its world, exporters and Prometheus, shared by the variants' runs."""

    plane: ControlPlane
    client: KubeClient
    layout: Layout
    prometheus: PrometheusServer
    setup_s: float
    cache_bytes: tuple[float, float]


def wait_all_measured(client: KubeClient, layout: Layout, monitor: MonitorProcess, timeout: float,
                      owned: int | None = None) -> None:
    """Until every policy's status (or `owned` of them) counts its 40 GPUs (some cycle wrote them all)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        monitor.check()
        items = client.list(POLICIES).get("items") or []
        measured = [p for p in items if (p.get("status") or {}).get("gpuCount") == 40]
        if len(measured) >= (layout.policies if owned is None else owned):
            return
        time.sleep(2)
    raise TimeoutError(f"not every policy was measured within {timeout:.0f} s")


WHOLE_NOTE = "this tree serves no name[] filter: polled whole, its cycles carry the larger looks (--poll whole: alike)"


def trims_pods(variant: Variant) -> bool:
    """Whether the variant's pod cache keeps trimmed pods (climatik.monitor.pods) rather than whole ones."""
    return (variant.tree / "climatik" / "monitor" / "pods.py").exists()


class ShardPeers:
    """The other members of the measured monitor's shard group: memberships in this process that take their
    share of the policies (rounds only, no measuring), so that the monitor does exactly one shard's work.

    Hashing splits the policies (or namespaces) unevenly: at 1,000 nodes, 200 policies by namespace went 40 / 48 /
    52 / 60 to four members. The measured monitor takes the identity that owns the most (`measured`), since every
    shard must meet a per-shard target and the busiest is the one that might not."""

    def __init__(self, plane: ControlPlane, client: KubeClient, shards: int, layout: Layout,
                 by: str = "policy") -> None:
        unit = SHARD_UNITS[by]
        ensure_namespace(client, NAMESPACE)  # the shard Leases' (with --teams, no pod or policy is there)
        identities = [f"bench-shard-{i}" for i in range(shards)]
        owners = Counter(owner_of(unit(layout.policy_key(i)), identities) for i in range(layout.policies))
        self.measured = max(identities, key=lambda identity: (owners[identity], identity))
        #: Policies the measured monitor owns once every member has joined, and what the others own.
        self.owned = owners[self.measured]
        self.shares = tuple(sorted(owners[identity] for identity in identities))
        self._stop = threading.Event()
        others = [identity for identity in identities if identity != self.measured]
        self._clients = [connect(plane.kubeconfig, timeout=10) for _ in others]
        self._threads = [threading.Thread(target=ShardMembership(client, ShardConfig.of(
            namespace=NAMESPACE, group="climatik-monitor", identity=identity)).run, args=(self._stop,), daemon=True)
            for client, identity in zip(self._clients, others, strict=True)]

    def start(self) -> ShardPeers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        for client in self._clients:
            client.close()


def run_variant(scale: Scale, variant: Variant, workdir: Path, args: argparse.Namespace) -> Row:
    layout = scale.layout
    name = f"monitor-{variant.name}-{layout.nodes}x{layout.gpus_per_node}"
    peers = ShardPeers(scale.plane, scale.client, variant.shards, layout, variant.shard_by) \
        if variant.shards else None
    shares = peers.shares if peers is not None else ()
    sharded = ["--shard", f"--leader-election-namespace={NAMESPACE}",
               f"--leader-election-identity={peers.measured}"] if peers is not None else []
    if variant.shard_by != "policy":
        sharded.append(f"--shard-by={variant.shard_by}")  # an old tree knows no --shard-by
    monitor = MonitorProcess(variant, workdir / f"{name.replace('/', '-of-')}.log", scale.plane.kubeconfig,
                             [f"--prometheus-url={scale.prometheus.url}", f"--interval={INTERVAL_S:g}s",
                              f"--heartbeat={args.heartbeat}", *sharded])
    if peers is not None:
        peers.start()
    monitor.start()
    try:
        whole = f"http://127.0.0.1:{monitor.port()}/metrics"
        url = whole if args.poll == "whole" else counters_url(whole)
        try:
            wait_all_measured(scale.client, layout, monitor, timeout=args.timeout,
                              owned=peers.owned if peers is not None else None)
        except TimeoutError as exc:
            # No steady cycles to time: only the unpolled window, with the sampler's own mean duration.
            cpu = cpu_window(scale, monitor, url, args)
            return failed_row(scale, variant, cpu, process_usage(monitor.pid), f"{exc}; {_failures(monitor)}",
                              shares=shares)
        poller = CounterPoller(url, rest=(layout.policies, INTERVAL_S)).start()
        try:
            settled = poller.wait_for_samples(_samples(url) + 2, timeout=args.timeout, alive=monitor.check)
            first = int(settled.samples) + 1
            end = poller.wait_for_samples(first + args.cycles, timeout=args.cycles * INTERVAL_S + args.timeout,
                                          alive=monitor.check)
        finally:
            poller.stop()
        looks = poller.looks()
        cycles = cut_cycles(looks, first, args.cycles)
        cpu = cpu_window(scale, monitor, url, args)
        usage = process_usage(monitor.pid)
    finally:
        code = monitor.stop()
        if peers is not None:
            peers.stop()
        OUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(monitor.log, OUT / monitor.log.name)
    if code:
        raise RuntimeError(f"{name} exited with {code}; see {OUT / monitor.log.name}")
    return Row(
        layout=layout, variant=variant.name, cycle_s=summary([c.total_s for c in cycles]),
        period_s=sample_period(looks, first, args.cycles), sample_s=summary([c.sample_s for c in cycles]),
        queries=query_seconds(settled, end), reconciles=sum(c.reconciles for c in cycles) / len(cycles),
        writes=cpu.writes, status_updates=cpu.updates, other_writes=cpu.other_writes, cpu_s=cpu.cpu_s,
        cpu_cycles=cpu.cycles, rss_mib=usage.rss_kib / 1024, peak_mib=usage.peak_rss_kib / 1024,
        cache_bytes=scale.cache_bytes[1 if trims_pods(variant) else 0],
        poll_fetch_s=sum(poller.fetch_seconds) / max(1, len(poller.fetch_seconds)), polled_whole=poller.whole,
        shares=shares,
        note="" if args.poll == "whole" or not poller.whole else WHOLE_NOTE,
    )


def failed_row(scale: Scale, variant: Variant, cpu: CpuWindow, usage: ProcessUsage, note: str, *,
               shares: tuple[int, ...] = ()) -> Row:
    """A run whose first cycle never measured every policy: its figures are of the cycles it managed."""
    before, after = cpu.counters
    samples = max(1.0, after.samples - before.samples)
    sample_s = (after.sample_seconds - before.sample_seconds) / samples
    return Row(
        layout=scale.layout, variant=variant.name, cycle_s=(sample_s, sample_s),
        period_s=(after.at - before.at) / samples, sample_s=(sample_s, sample_s), queries=query_seconds(before, after),
        reconciles=(after.reconciles - before.reconciles) / samples, writes=cpu.writes, status_updates=cpu.updates,
        other_writes=cpu.other_writes, cpu_s=cpu.cpu_s, cpu_cycles=cpu.cycles, rss_mib=usage.rss_kib / 1024,
        peak_mib=usage.peak_rss_kib / 1024, cache_bytes=scale.cache_bytes[1 if trims_pods(variant) else 0],
        poll_fetch_s=0.0, note=note, shares=shares,
    )


def _failures(monitor: MonitorProcess) -> str:
    """What the monitor's log says went wrong: failed samples by reason, and why statuses lack data."""
    text = monitor.log.read_text(errors="replace")
    failed = Counter(line.split('"reason": "')[1].split('"')[0] for line in text.splitlines()
                     if '"prometheus_query_failed"' in line and '"reason": "' in line)
    stale = sum('"reason": "NoFreshData"' in line for line in text.splitlines())
    return f"failed samples {dict(failed) or 'none'}, {stale} status writes without fresh data"


@dataclass(frozen=True)
class CpuWindow:
    cycles: int
    cpu_s: float
    writes: float
    updates: float
    other_writes: dict[str, int]
    counters: tuple[MonitorCounters, MonitorCounters]


def cpu_window(scale: Scale, monitor: MonitorProcess, url: str, args: argparse.Namespace) -> CpuWindow:
    """CPU time and API writes per cycle over about `--cpu-cycles` cycles that nobody polls."""
    plane = scale.plane
    certs = plane.workdir / "certs" / "apiserver.crt"
    before = (_counters(url), apiserver_writes(plane.server, plane.token, certs), process_usage(monitor.pid),
              monitor.status_updates())
    time.sleep(args.cpu_cycles * INTERVAL_S)
    while _samples(url) <= before[0].samples:  # at least one sample, however slow
        monitor.check()
        time.sleep(1)
    monitor.check()
    after = (_counters(url), apiserver_writes(plane.server, plane.token, certs), process_usage(monitor.pid),
             monitor.status_updates())
    cycles = int(after[0].samples - before[0].samples)
    writes: Counter[str] = after[1] - before[1]
    own = sum(n for resource, n in writes.items() if resource.split("/")[0] not in NOT_THE_MONITORS)
    return CpuWindow(cycles=cycles, cpu_s=(after[2].cpu_seconds - before[2].cpu_seconds) / max(1, cycles),
                     writes=own / max(1, cycles), updates=(after[3] - before[3]) / max(1, cycles),
                     other_writes={r: n for r, n in writes.items() if r.split("/")[0] in NOT_THE_MONITORS and n},
                     counters=(before[0], after[0]))


def _counters(url: str, attempts: int = 6) -> MonitorCounters:
    """One look at the monitor's counters; a monitor busy decoding a large answer may be slow to serve it."""
    for attempt in range(attempts):
        try:
            return parse_monitor(fetch_text(url), time.monotonic())
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def _samples(url: str) -> int:
    return int(_counters(url).samples)


def measure_scale(plane: ControlPlane, client: KubeClient, layout: Layout, *, variants: list[Variant],
                  workdir: Path, args: argparse.Namespace) -> list[Row]:
    _, setup_s = create_world(client, layout, threads=args.threads, hot=args.hot)
    with ExitStack() as stack:
        exporters = ExporterEndpoints(layout, args.endpoints)
        exporters.start()
        stack.callback(exporters.stop)
        prometheus = PrometheusServer(workdir / f"prometheus-{layout.nodes}x{layout.gpus_per_node}",
                                      exporters.targets, scrape_interval=INTERVAL_S)
        prometheus.start()
        stack.callback(prometheus.stop)
        prometheus.wait_for_series("DCGM_FI_DEV_POWER_USAGE", layout.gpus, timeout=120)
        scale = Scale(plane, client, layout, prometheus, setup_s, cached_pod_bytes(client, layout))
        return [run_variant(scale, variant, workdir, args) for variant in variants]


def table(rows: list[Row], variants: list[Variant], args: argparse.Namespace) -> list[str]:
    header = (f"{'nodes':>5} {'gpus':>5} {'policies':>8} {'path':>4} | {'cycle s med / max':>17} |"
              f" {'CPU s/cycle':>11} | {'prom query s':>12} | {'sample s':>11} | {'writes/cycle':>12} |"
              f" {'RSS MiB':>13} | {'pod cache B/pod':>15}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.layout.nodes:>5} {r.layout.gpus:>5} {r.layout.policies:>8} {r.variant:>4} | {_pair(r.cycle_s):>17} |"
            f" {r.cpu_s:>11.2f} | {r.query_s:>12.3f} | {_pair(r.sample_s):>11} | {r.writes:>12.2f} |"
            f" {r.rss_mib:>4.0f} (pk {r.peak_mib:>4.0f}) | {r.cache_bytes:>15.0f}{' *' if r.note else ''}")
    lines += [f"  * {r.layout.nodes}x{r.layout.gpus_per_node} {r.variant}: {r.note}" for r in rows if r.note]
    lines += ["", *projection(rows), "", *targets(rows), ""]
    lines.append("Paths: " + "; ".join(f"{v.name} = {v.source} ({v.tree})" for v in variants))
    hot = (f"; {args.hot:.0%} of the policies hot (drawing {HOT_SHARE_OF_LIMIT:.1%} of their limit, inside the"
           " release band: the monitor reads their GPUs' clocks every cycle)" if args.hot else
           "; every policy draws about 55 % of its limit (under its release level: the monitor reads no clock)")
    lines.append(f"Layout: the policies and their pods in {args.teams} namespace(s){hot}.")
    lines.append(f"Windows: {args.cycles} timed cycles and about {args.cpu_cycles} unpolled cycles per run, after the"
                 f" first cycle wrote every status and two more passed; monitor --interval={INTERVAL_S:g}s"
                 f" --heartbeat={args.heartbeat}; Prometheus scrape interval {INTERVAL_S:g} s; the timing window's"
                 f" looks ask {'the whole of /metrics' if args.poll == 'whole' else 'the counters by name'}.")
    for r in rows:
        queries = ", ".join(f"{name} {seconds:.3f} s in {count:.0f}" for name, (seconds, count)
                            in sorted(r.queries.items()))
        owns = (f" owns {r.shares[-1]} of {r.layout.policies} policies, the most of its group"
                f" ({' / '.join(map(str, r.shares))});" if r.shares else "")
        lines.append(f"  {r.layout.nodes}x{r.layout.gpus_per_node} {r.variant}:{owns} queries per cycle by kind:"
                     f" {queries}; period {r.period_s:.2f} s; {r.reconciles:.0f} reconciles/cycle;"
                     f" {r.status_updates:.2f} status_updated lines/cycle; CPU over {r.cpu_cycles} cycles;"
                     f" /metrics{' (whole)' if r.polled_whole else ' (counters)'} answered in"
                     f" {r.poll_fetch_s * 1000:.0f} ms; not counted (the apiserver's own"
                     f" writes): {r.other_writes or 'none'}")
    lines.extend(ASSUMPTIONS.splitlines())
    return lines


def projection(rows: list[Row]) -> list[str]:
    """Each figure at 10,000 nodes, on the straight line through the two largest measured scales."""
    lines = ["Projected to 10000 nodes x 8 GPUs / 2000 policies (per process: 1/N is one of N shards), from the"
             " slope between the two largest scales:"]
    for variant in dict.fromkeys(r.variant for r in rows):
        mine = sorted((r for r in rows if r.variant == variant), key=lambda r: r.layout.nodes)
        if len(mine) < 2:
            lines.append(f"  {variant}: needs two scales")
            continue
        a, b = mine[-2], mine[-1]
        figures = {"cycle median s": (a.cycle_s[0], b.cycle_s[0]), "CPU s/cycle": (a.cpu_s, b.cpu_s),
                   "prom query s": (a.query_s, b.query_s), "RSS MiB": (a.rss_mib, b.rss_mib)}
        parts = [f"{name} {_line(a.layout.nodes, b.layout.nodes, va, vb, 10_000):.2f}"
                 for name, (va, vb) in figures.items()]
        lines.append(f"  {variant}: " + ", ".join(parts) + f", pod cache {b.cache_bytes:.0f} B/pod (flat)")
    return lines


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets at 1000 x 8 / 200 policies, met or not, for the new path; and the projection of one
    shard's cycle to 10,000 nodes."""
    lines = []
    new = [r for r in rows if r.variant == "new" and r.layout.nodes == 1000]
    if not new:
        lines.append("Targets: judged at 1000 x 8 only (not measured in this run).")
    else:
        r = new[0]
        checks = [("cycle median under 1 s", r.cycle_s[0], r.cycle_s[0] < 1.0),
                  ("CPU under 0.5 s per cycle", r.cpu_s, r.cpu_s < 0.5),
                  ("pod cache under 2 KB per pod", r.cache_bytes, r.cache_bytes < 2048)]
        lines.append("Targets (new path, 1000 x 8 / 200 policies): " + "; ".join(
            f"{what}: {value:.2f} {'met' if ok else 'MISSED'}" for what, value, ok in checks))
    for r in (r for r in rows if "/" in r.variant and r.layout.nodes == 1000):
        lines.append(f"The same as one shard ({r.variant}): cycle median {r.cycle_s[0]:.2f} s "
                     f"{'met' if r.cycle_s[0] < 1.0 else 'MISSED'}; CPU {r.cpu_s:.2f} s per cycle "
                     f"{'met' if r.cpu_s < 0.5 else 'MISSED'}")
    for variant in dict.fromkeys(r.variant for r in rows if "/" in r.variant):
        mine = sorted((r for r in rows if r.variant == variant), key=lambda r: r.layout.nodes)
        if len(mine) < 2:
            continue
        a, b = mine[-2], mine[-1]
        cycle = _line(a.layout.nodes, b.layout.nodes, a.cycle_s[0], b.cycle_s[0], 10_000)
        shards = int(variant.split("/")[1].split()[0])  # "1/4" or "1/4 ns"
        lines.append(f"Target (10000 x 8 / 2000 policies, under 2 s per shard with at most 4 shards): one of {shards}"
                     f" shards ({variant}) projects to {cycle:.2f} s median"
                     f" {'met' if cycle < 2.0 and shards <= 4 else 'MISSED'}")
    return lines


def _line(x1: float, x2: float, y1: float, y2: float, x: float) -> float:
    return y2 + (y2 - y1) / (x2 - x1) * (x - x2)


def _pair(values: tuple[float, float]) -> str:
    return f"{values[0]:.2f} / {values[1]:.2f}"


ASSUMPTIONS = """\
Columns: 'cycle s' = one Prometheus sample (the sampler's reconcile: queries, snapshot, queueing every policy)
plus the policy reconciles it queued, until the last one ends, median / max over the timed window (to within the
100 ms polling, which runs only while a cycle does). 'CPU s/cycle' = the monitor's user + system time per cycle
in the unpolled window. 'prom query s' = HTTP time per cycle of all the cycle's queries, summed
(climatik_prom_query_duration_seconds: the old path's power and SM clock queries; the new path's time query, the
pod label lookups, and the values and scrape-time queries of the power and of the SM clocks it reads, whose reads
overlap, so the sum can exceed 'sample s').
'sample s' = the sampler's reconcile, queries and mapping included. 'writes/cycle' = write requests the
kube-apiserver counted in the unpolled window (apiserver_request_total) per cycle. 'RSS' = VmRSS at the end
(VmHWM as peak). 'pod cache B/pod' = memory per pod of the objects the pod informer keeps, from one paged list
of the namespace (strings and parts the pods share counted once): whole pods on the old path, trimmed pods
(climatik.monitor.pods) on the new one.
Assumptions: with --teams 1 (the default) one namespace holds every pod and policy (each policy's selector is
evaluated against all its pods: the worst case; every pod is selected, so the new path reads the namespace whole
and saves nothing by narrowing, and a shard reads it whole too); with --teams K the policies and their pods are
spread round robin over K namespaces (a shard reads whole the namespaces where it owns most pods, by name the rest);
every GPU runs one pod; readings are constant, so the cluster is steady and no policy needs capping; every policy
draws about 55 % of its limit, under its release level, so the new monitor reads no SM clock after its first
cycle, unless --hot puts a share of the policies inside their release band; no leader election. The heartbeat is
set beyond the windows so that steady cycles show only what changes cause. Both paths share the machine with
Prometheus, the kube-apiserver and the exporters (and whatever else runs); run on an idle machine for stable
figures."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="1000x8,3000x8",
                        help="comma-separated NODESxGPUS layouts, smallest first (policies = GPUs / 40)")
    parser.add_argument("--baseline", default=BASELINE, help="git commit of the old path")
    parser.add_argument("--paths", default="old,new,shard",
                        help="which paths to run: old, new, shard (new as one of --shards), ns-shard (the same, "
                             "sharded by namespace), old-shard (old as one), old-ns-shard (old as one by namespace)")
    parser.add_argument("--shards", type=int, default=4, help="shard members of the shard path")
    parser.add_argument("--teams", type=int, default=1,
                        help="namespaces the policies are spread over (1: all in one, the worst case for narrowing)")
    parser.add_argument("--cycles", type=int, default=10, help="timed steady cycles per run")
    parser.add_argument("--cpu-cycles", type=int, default=10, help="unpolled steady cycles per run (about)")
    parser.add_argument("--endpoints", type=int, default=10, help="exporter endpoints serving the nodes")
    parser.add_argument("--threads", type=int, default=8, help="threads creating pods")
    parser.add_argument("--heartbeat", default="10m", help="the monitors' --heartbeat")
    parser.add_argument("--poll", choices=("counters", "whole"), default="counters",
                        help="what the timing window's looks ask: the benchmark's counters by name, or the whole"
                             " of /metrics (as a tree without name[] answers anyway)")
    parser.add_argument("--hot", type=float, default=0.0,
                        help="share of the policies near their limits (inside the release band), whose clocks the"
                             " monitor reads every cycle; the others draw about 55 %% of theirs")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the first cycle")
    args = parser.parse_args(argv)
    # Only warnings and worse from in-process parts (the client): the benchmark prints a table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    layouts = [Layout(nodes=int(n), gpus_per_node=int(g), namespace=NAMESPACE, teams=args.teams)
               for n, g in (s.split("x") for s in args.scale.split(",") if s)]
    wanted = [p.strip() for p in args.paths.split(",") if p.strip()]
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="climatik-bench-monitor-") as tmp:
        old = baseline(args.baseline, Path(tmp)) if {"old", "old-shard", "old-ns-shard"} & set(wanted) else None
        paths = {"old": old, "new": working_tree(), "shard": one_shard(args.shards),
                 "ns-shard": one_shard(args.shards, by="namespace"),
                 "old-shard": one_shard(args.shards, old) if old is not None else None,
                 "old-ns-shard": one_shard(args.shards, old, by="namespace") if old is not None else None}
        variants = [variant for p in wanted if (variant := paths.get(p)) is not None]
        plane = start_with_crds(Path(tmp) / "control-plane")
        try:
            with connect(plane.kubeconfig, timeout=60, pool_size=args.threads * 2) as client:
                for layout in sorted(layouts, key=lambda lay: lay.gpus):
                    rows += measure_scale(plane, client, layout, variants=variants, workdir=Path(tmp), args=args)
                    print("\n".join(table(rows, variants, args)[:len(rows) + 2]), flush=True)
        finally:
            plane.stop()
    lines = ["Monitor at scale, old path against new: simulated DCGM exporters, real Prometheus and kube-apiserver,"
             " real `climatik monitor`", "", *table(rows, variants, args), f"Ran in {time.monotonic() - started:.0f} s"]
    print("\n".join(lines))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
