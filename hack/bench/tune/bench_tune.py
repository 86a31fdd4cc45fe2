"""Benchmark of `climatik tune`: latency from a NodeFrequencies spec write to the status saying Applied, the
tuner's resident memory and idle CPU, and the CPU its node guard costs.

Starts a real kube-apiserver + etcd (hack/testenv.py), one simulated node with 8 H100s (climatik.sim), and the
real `climatik tune --gpu-backend=sim --no-cpufreq` process for that node. Each change merge-patches the spec
(alternating each changed GPU between two supported clocks) and waits, on a watch of the object, for the first
status in which the new generation is observed and every changed entry reports that target as Applied. Two kinds
of change: one GPU of the eight, and all eight at once (one workload's uniform clock). Then the tuner is left
alone for 30 s and its CPU time measured. Last, a power budget over the eight loaded GPUs is written into the spec
and the tuner's CPU time measured while its guard ticks every 100 ms (the whole process, from /proc, with the
guard's ticks counted on its /metrics); then the guard's cost per tick is measured in process, on the sim backend
over HTTP and on the NVML backend over the device zoo's fake NVML (guardcost.py), split into the backend's calls
and the guard's own work.

Run with `make bench`, or `python hack/bench/tune/bench_tune.py --changes 50`.
Writes out/bench/tune/results.txt and the tuner's log there; everything else lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "hack"))

import requests  # noqa: E402
import structlog  # noqa: E402
from guardcost import nvml_cost, sim_cost  # noqa: E402
from guardcost import table as cost_table  # noqa: E402
from loopenv import ClimatikProcesses  # noqa: E402
from procusage import ProcessUsage, process_usage  # noqa: E402
from testenv import start_with_crds  # noqa: E402
from watcher import StatusWatcher  # noqa: E402

from climatik.clock import SystemClock  # noqa: E402
from climatik.kube.client import (  # noqa: E402
    NODE_FREQUENCIES,
    KubeClient,
    connect,
)
from climatik.sim.cluster import ClusterConfig, NodeConfig, SimCluster, start_cluster  # noqa: E402
from climatik.sim.server import SimControlClient  # noqa: E402

NODE = "tune-bench-node"
GPUS = 8
# Two supported H100 clocks (210 + k * 15 MHz), so the tuner applies them exactly as asked.
CLOCKS = (1410, 1200)
START_MHZ = 1980
#: The budget the guard keeps in the last part: 500 W per GPU, under what the loaded H100s draw.
BUDGET_W = GPUS * 500
GUARD_INTERVAL_S = 0.1
OUT = REPO / "out" / "bench" / "tune"


@dataclass(frozen=True)
class Latencies:
    label: str
    seconds: list[float]
    write_seconds: list[float]


@dataclass(frozen=True)
class Idle:
    seconds: float
    cpu_seconds: float
    status_writes: int
    usage: ProcessUsage


@dataclass(frozen=True)
class Guarded:
    seconds: float
    cpu_seconds: float
    ticks: int
    status_writes: int


class Bench:
    """The node object, its tuner and the watch on it."""

    def __init__(self, client: KubeClient, sim: SimCluster, tuner: ClimatikProcesses, log: Path) -> None:
        self.client = client
        self.sim = sim
        self.tuner = tuner
        self.log = log
        self.uuids = sim.node(NODE).uuids()
        self.targets = dict.fromkeys(self.uuids, START_MHZ)
        self.watcher: StatusWatcher | None = None

    def create(self) -> str:
        body = {"apiVersion": "climatik.io/v1alpha1", "kind": "NodeFrequencies", "metadata": {"name": NODE},
                "spec": {"nodeName": NODE, "gpuFrequencies": self._entries(), "cpuFrequencies": []}}
        return str(self.client.create(NODE_FREQUENCIES, body)["metadata"]["resourceVersion"])

    def change(self, gpus: Sequence[str], timeout: float) -> tuple[float, float]:
        """Flip `gpus` to the other clock; (seconds to Applied, seconds the write itself took)."""
        assert self.watcher is not None
        for uuid in gpus:
            self.targets[uuid] = CLOCKS[1] if self.targets[uuid] == CLOCKS[0] else CLOCKS[0]
        wanted = {uuid: self.targets[uuid] for uuid in gpus}
        started = time.monotonic()
        written = self.client.patch(NODE_FREQUENCIES, NODE, {"spec": {"gpuFrequencies": self._entries()}})
        wrote = time.monotonic()
        generation = int(written["metadata"]["generation"])
        arrived = self.watcher.wait_for(lambda obj: applied(obj, generation, wanted), timeout)
        return arrived - started, wrote - started

    def check_hardware(self) -> None:
        """The simulated GPUs are locked where the spec says: the status did not run ahead of the hardware."""
        locked = {r.uuid: r.locked_max_mhz for r in self.sim.node(NODE).readings()}
        wrong = {uuid: (locked[uuid], mhz) for uuid, mhz in self.targets.items() if locked[uuid] != mhz}
        if wrong:
            raise RuntimeError(f"simulated GPUs not at their targets (locked, target): {wrong}")

    def status_writes(self) -> int:
        return sum('"status_updated"' in line for line in self.log.read_text(errors="replace").splitlines())

    def _entries(self) -> list[dict[str, Any]]:
        return [{"gpuId": uuid, "targetFrequency": mhz} for uuid, mhz in self.targets.items()]


def applied(obj: Mapping[str, Any], generation: int, wanted: Mapping[str, int]) -> bool:
    status = obj.get("status") or {}
    if int(status.get("observedGeneration") or 0) < generation:
        return False
    entries = {e.get("gpuId"): e for e in status.get("gpuFrequencies") or []}
    return all(entries.get(uuid, {}).get("status") == "Applied"
               and entries.get(uuid, {}).get("targetFrequency") == mhz for uuid, mhz in wanted.items())


def run_changes(bench: Bench, label: str, pick: Any, count: int, args: argparse.Namespace) -> Latencies:
    seconds, writes = [], []
    for i in range(count):
        bench.tuner.check()
        latency, write = bench.change(pick(i), timeout=args.timeout)
        seconds.append(latency)
        writes.append(write)
        time.sleep(args.pause)
    bench.check_hardware()
    return Latencies(label, seconds, writes)


def measure_idle(bench: Bench, pid: int, seconds: float) -> Idle:
    time.sleep(3)  # let the reconcile that follows the tuner's own last status write finish
    bench.tuner.check()
    before, writes = process_usage(pid), bench.status_writes()
    time.sleep(seconds)
    bench.tuner.check()
    after = process_usage(pid)
    return Idle(seconds, after.cpu_seconds - before.cpu_seconds, bench.status_writes() - writes, after)


def measure_guard(bench: Bench, pid: int, seconds: float, timeout: float) -> Guarded:
    """The tuner's CPU while its guard keeps a budget over every loaded GPU."""
    assert bench.watcher is not None
    with requests.Session() as session:
        SimControlClient(bench.sim.urls[NODE], session=session).set_load(1.0, {"prefill": 0.5, "decode": 0.5})
    budget = {"policy": "bench/llm", "watts": BUDGET_W, "gpuIds": bench.uuids}
    written = bench.client.patch(NODE_FREQUENCIES, NODE, {"spec": {"powerBudgets": [budget]}})
    generation = int(written["metadata"]["generation"])
    bench.watcher.wait_for(lambda obj: int((obj.get("status") or {}).get("observedGeneration") or 0) >= generation
                           and bool((obj.get("status") or {}).get("budgets")), timeout)
    time.sleep(3)  # past the first second of readings, when the split settles
    bench.tuner.check()
    port = metrics_port(bench.log)
    before, ticks, writes = process_usage(pid), guard_ticks(port), bench.status_writes()
    time.sleep(seconds)
    bench.tuner.check()
    after = process_usage(pid)
    return Guarded(seconds, after.cpu_seconds - before.cpu_seconds, int(guard_ticks(port) - ticks),
                   bench.status_writes() - writes)


def metrics_port(log: Path) -> int:
    for line in log.read_text(errors="replace").splitlines():
        if '"process_started"' in line:
            return int(json.loads(line)["port"])
    raise RuntimeError(f"the tuner did not say which port it serves /metrics on; see {log}")


def guard_ticks(port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("climatik_tune_guard_ticks_total{"))


def start_tuner(stack: ExitStack, workdir: Path, kubeconfig: Path, sim: SimCluster) -> ClimatikProcesses:
    tuner = ClimatikProcesses(workdir, kubeconfig)
    tuner.start("tune", ["tune", f"--node-name={NODE}", "--gpu-backend=sim", f"--sim-url={sim.urls[NODE]}",
                         "--no-cpufreq", f"--state-file={workdir / 'tuner-state.json'}"])

    def stop() -> None:
        codes = tuner.stop()
        OUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(workdir / "tune.log", OUT / "tune.log")
        if any(codes.values()):
            raise RuntimeError(f"climatik tune exited with {codes}; see {OUT / 'tune.log'}")

    stack.callback(stop)
    return tuner


def run(workdir: Path, args: argparse.Namespace) -> tuple[list[Latencies], Idle, Guarded]:
    with ExitStack() as stack:
        plane = start_with_crds(workdir / "control-plane")
        stack.callback(plane.stop)
        sim = start_cluster(ClusterConfig(nodes=(NodeConfig(name=NODE, gpu_count=GPUS),)), clock=SystemClock())
        stack.callback(sim.stop)
        client = stack.enter_context(connect(plane.kubeconfig))
        tuner = start_tuner(stack, workdir, plane.kubeconfig, sim)
        bench = Bench(client, sim, tuner, workdir / "tune.log")
        version = bench.create()
        bench.watcher = StatusWatcher(client, NODE, version).start()
        stack.callback(bench.watcher.stop)
        # The first apply includes the tuner's start-up (informer sync, inventory); it is not a change.
        bench.watcher.wait_for(lambda obj: applied(obj, 1, bench.targets), timeout=args.timeout + 60)
        runs = [
            run_changes(bench, "1 of 8 GPUs", lambda i: [bench.uuids[i % GPUS]], args.changes, args),
            run_changes(bench, "all 8 GPUs", lambda i: bench.uuids, args.changes, args),
        ]
        idle = measure_idle(bench, tuner.procs["tune"].pid, args.idle)
        guarded = measure_guard(bench, tuner.procs["tune"].pid, args.guard, args.timeout)
    return runs, idle, guarded


def table(runs: list[Latencies], idle: Idle, guarded: Guarded, args: argparse.Namespace) -> list[str]:
    lines = [f"{'change':<12} | {'changes':>7} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7} |"
             f" {'spec write p50 ms':>17}"]
    for r in runs:
        ms = sorted(s * 1000 for s in r.seconds)
        lines.append(f"{r.label:<12} | {len(ms):>7} | {statistics.median(ms):>7.1f} | {percentile(ms, 99):>7.1f} |"
                     f" {ms[-1]:>7.1f} | {statistics.median(r.write_seconds) * 1000:>17.1f}")
    lines.append("")
    lines.append(f"{'tuner RSS MiB':>13} | {'peak MiB':>8} | {'idle CPU s / ' + f'{idle.seconds:g} s':>16} |"
                 f" {'idle CPU %':>10} | {'status writes while idle':>24}")
    lines.append(f"{idle.usage.rss_kib / 1024:>13.1f} | {idle.usage.peak_rss_kib / 1024:>8.1f} |"
                 f" {idle.cpu_seconds:>16.2f} | {100 * idle.cpu_seconds / idle.seconds:>10.2f} |"
                 f" {idle.status_writes:>24}")
    lines.append("")
    per_tick = 1000 * guarded.cpu_seconds / max(guarded.ticks, 1)
    lines.append(f"{'guarded: CPU s / ' + f'{guarded.seconds:g} s':>22} | {'CPU %':>6} | {'ticks':>5} |"
                 f" {'ms CPU per tick':>15} | {'status writes':>13}")
    lines.append(f"{guarded.cpu_seconds:>22.2f} | {100 * guarded.cpu_seconds / guarded.seconds:>6.2f} |"
                 f" {guarded.ticks:>5} | {per_tick:>15.2f} | {guarded.status_writes:>13}")
    lines.append("")
    lines.extend(NOTES.format(pause=args.pause * 1000, idle=idle.seconds, guard=guarded.seconds,
                              budget=BUDGET_W).splitlines())
    return lines


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


NOTES = """\
Latency: from just before the spec's merge patch is sent to the arrival, on a watch of the object, of the first
status that observes the new generation and reports each changed GPU's new target as Applied; it includes the
patch round trip ('spec write'), the tuner's watch, its reconcile (simulated NVML calls over loopback HTTP,
reading the clocks back) and its status write. {pause:.0f} ms pause between changes. GPUs alternate between
1410 and 1200 MHz, both supported steps, so no snapping is involved.
Idle: user + system CPU time of the tuner over {idle:g} s with no change (default --resync=30s, so about one
resync of the hardware falls in the window); RSS = VmRSS, peak = VmHWM, at the end.
Guarded: the whole tuner process (user + system CPU) over {guard:g} s while its guard keeps a {budget} W budget
over the 8 GPUs under a prefill/decode load, ticking every 100 ms on the sim backend (one GET of the simulated
node per tick); per tick = the process's CPU over the ticks counted on its /metrics, so it also carries the
watch, the resync and the HTTP client. The in-process table below separates the guard's own work.
Other processes may share the machine's CPUs; run on an idle machine for stable figures."""


COST_NOTES = """\
In backend: CPU inside the backend's calls (sim: the HTTP request and its JSON; NVML: the zoo fake's Python in
place of libnvidia-ml's C calls); guard own: stepping the budget, deciding writes, bookkeeping. Target: under 2 %
of one core at 8 GPUs and 100 ms."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=200, help="spec changes per kind of change")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between changes")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds the idle CPU is measured over")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one change may take")
    parser.add_argument("--guard", type=float, default=30.0, help="seconds the guarded tuner's CPU is measured over")
    parser.add_argument("--ticks", type=int, default=300, help="guard ticks per backend, measured in process")
    args = parser.parse_args(argv)
    # Only warnings and worse from in-process parts (the simulator, the client): the benchmark prints a table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="climatik-bench-tune-") as tmp:
        runs, idle, guarded = run(Path(tmp), args)
    costs = [sim_cost(GPUS, ticks=args.ticks, interval=GUARD_INTERVAL_S),
             nvml_cost(GPUS, ticks=args.ticks, interval=GUARD_INTERVAL_S)]
    lines = ["Tuner: NodeFrequencies spec write -> status Applied, real kube-apiserver, simulated GPUs, real"
             " `climatik tune`", "", *table(runs, idle, guarded, args), "",
             *cost_table(costs, gpus=GPUS, interval=GUARD_INTERVAL_S), "", *COST_NOTES.splitlines(),
             f"Ran in {time.monotonic() - started:.0f} s"]
    print("\n".join(lines))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
