"""Benchmark of the controller runtime: informer memory and sync cost, and reconcile throughput.

1. Informer: starts a real kube-apiserver + etcd (hack/testenv.py), fills namespaces with 1k, 10k and 50k
   small ConfigMaps, then for each size runs a fresh Python process that lists and syncs an informer over that
   namespace, reporting the resident memory the cache added, the wall and CPU time to sync, and bytes per
   cached object.
2. Runner: a no-op reconciler fed distinct keys through the work queue at 1, 4 and 16 workers (no API).

Run with `make bench`, or `python hack/bench/informer/bench_informer.py --sizes 1000 --keys 20000`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

import structlog  # noqa: E402
import testenv  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from climatik.kube.client import (  # noqa: E402
    NAMESPACES,
    KubeClient,
    connect,
)
from climatik.kube.controller import Controller  # noqa: E402
from climatik.kube.errors import AlreadyExistsError  # noqa: E402
from climatik.kube.metrics import RuntimeMetrics  # noqa: E402
from climatik.kube.workqueue import WorkQueue  # noqa: E402

# Runs in a fresh interpreter per size, so that each measurement starts from the same baseline.
SYNC_PROBE = r"""
import json, sys, threading, time
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from climatik.kube.client import connect
from climatik.kube.informer import Informer
from climatik.kube.listwatch import ClientListerWatcher
from climatik.kube.store import strip_managed_fields
from climatik.kube.client import CONFIG_MAPS

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

kubeconfig, namespace, mode = sys.argv[1:4]
client = connect(kubeconfig, timeout=120)
client.list(CONFIG_MAPS, namespace=namespace, limit=1)  # warm up the connection and imports
before = rss_kib()
cpu0, wall0 = time.process_time(), time.perf_counter()
transform = strip_managed_fields if mode == "stripped" else None
informer = Informer(ClientListerWatcher(client, CONFIG_MAPS, namespace=namespace), name="bench", transform=transform)
stop = threading.Event()
informer.start(stop)
informer.wait_for_sync()
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
after = rss_kib()
print(json.dumps({"objects": len(informer.store), "rss_kib": after - before, "total_rss_kib": after,
                  "wall_s": wall, "cpu_s": cpu}))
stop.set()
informer.join(5)
"""


# Cached as served, or with metadata.managedFields dropped by the informer's transform (what every informer a
# controller builds through climatik.kube.process.Wiring does by default).
MODES = {"served": "served", "stripped": "no managedFields"}


def kubeconfig_for(plane: object, directory: Path) -> Path:
    """The control plane's kubeconfig, trusting its CA rather than skipping TLS verification."""
    config = json.loads(plane.kubeconfig.read_text())  # type: ignore[attr-defined]
    cluster = config["clusters"][0]["cluster"]
    cluster.pop("insecure-skip-tls-verify", None)
    cluster["certificate-authority"] = str(plane.workdir / "certs" / "apiserver.crt")  # type: ignore[attr-defined]
    path = directory / "kubeconfig-verified"
    path.write_text(json.dumps(config))
    return path


def fill(client: KubeClient, namespace: str, count: int) -> float:
    """Create `count` small ConfigMaps in `namespace` (16 in parallel); seconds taken."""
    with contextlib.suppress(AlreadyExistsError):
        client.create(NAMESPACES, {"metadata": {"name": namespace}})

    def create(i: int) -> None:
        body = {"metadata": {"name": f"cm-{i:06d}", "namespace": namespace, "labels": {"bench": "informer"}},
                "data": {"index": str(i), "payload": "x" * 64}}
        with contextlib.suppress(AlreadyExistsError):
            client.config_maps.create(body)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, range(count), chunksize=64))
    return time.perf_counter() - started


def measure_sync(kubeconfig: Path, namespace: str, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", SYNC_PROBE, str(kubeconfig), namespace, mode],
        check=True, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_informer(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="climatik-bench-") as tmp:
        plane = testenv.ControlPlane(Path(tmp) / "plane")
        plane.start()
        try:
            kubeconfig = kubeconfig_for(plane, Path(tmp))
            with connect(kubeconfig, timeout=60, pool_size=32) as client:
                rows = []
                for size in sizes:
                    namespace = f"bench-{size}"
                    fill_s = fill(client, namespace, size)
                    for mode in MODES:
                        rows.append((size, mode, fill_s, measure_sync(kubeconfig, namespace, mode)))
        finally:
            plane.stop()
    print("\nInformer: list + sync of small ConfigMaps from a real kube-apiserver (fresh process per size)")
    print(f"{'objects':>8} {'objects as':>16} {'cache RSS MiB':>14} {'bytes/object':>13} {'sync wall s':>12}"
          f" {'sync CPU s':>11} {'objects/s':>10} {'(create s)':>11}")
    for size, mode, fill_s, r in rows:
        per_object = r["rss_kib"] * 1024 / max(1, r["objects"])
        rate = r["objects"] / r["wall_s"] if r["wall_s"] else 0.0
        print(f"{int(r['objects']):>8} {MODES[mode]:>16} {r['rss_kib'] / 1024:>14.1f} {per_object:>13.0f}"
              f" {r['wall_s']:>12.2f} {r['cpu_s']:>11.2f} {rate:>10.0f} {fill_s:>11.1f}")
        if r["objects"] != size:
            print(f"  warning: expected {size} objects in the cache", file=sys.stderr)
    print("\nBytes per cached object, as served and without managedFields (the controllers' default):")
    for size in sorted({row[0] for row in rows}):
        per = {mode: r["rss_kib"] * 1024 / max(1, r["objects"]) for s, mode, _, r in rows if s == size}
        saved = 1 - per["stripped"] / per["served"] if per.get("served") else 0.0
        print(f"{size:>8} objects: {per['served']:7.0f} -> {per['stripped']:7.0f} bytes/object ({saved:.0%} less)")


def throughput(workers: int, keys: int) -> float:
    """Keys per second through queue + runner with a no-op reconciler."""
    done = threading.Semaphore(0)

    def reconcile(key: str) -> None:
        done.release()

    # With metrics, as every controller runs.
    metrics = RuntimeMetrics(CollectorRegistry())
    queue = WorkQueue(name=f"bench-{workers}", metrics=metrics)
    controller = Controller(name="bench", reconcile=reconcile, queue=queue, workers=workers, metrics=metrics)
    controller.start()
    started = time.perf_counter()
    for i in range(keys):
        queue.add(f"ns/obj-{i}")
    for _ in range(keys):
        done.acquire()
    elapsed = time.perf_counter() - started
    controller.stop(grace=5)
    return keys / elapsed


def bench_runner(worker_counts: list[int], keys: int, repeats: int = 5) -> None:
    print(f"\nRunner: no-op reconciler, {keys} distinct keys through the work queue (metrics on),"
          f" median and best of {repeats} runs")
    print(f"{'workers':>8} {'median keys/s':>14} {'best keys/s':>12}")
    for workers in worker_counts:
        rates = sorted(throughput(workers, keys) for _ in range(repeats))
        print(f"{workers:>8} {statistics.median(rates):>14.0f} {rates[-1]:>12.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,50000", help="object counts for the informer benchmark")
    parser.add_argument("--workers", default="1,4,16", help="worker counts for the runner benchmark")
    parser.add_argument("--keys", type=int, default=50000, help="keys per runner measurement")
    parser.add_argument("--skip-informer", action="store_true", help="only the runner (needs no API server)")
    args = parser.parse_args()
    # Only warnings and worse: the benchmark prints its own table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    if not args.skip_informer:
        bench_informer([int(s) for s in args.sizes.split(",") if s])
    bench_runner([int(w) for w in args.workers.split(",") if w], args.keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
