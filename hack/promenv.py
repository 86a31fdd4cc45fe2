"""A real Prometheus server (Debian package `prometheus`) scraping given targets, for tests, demo and benchmarks."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from testenv import free_port


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not start, or did not become ready."""


class PrometheusServer:
    """One Prometheus on a loopback port, scraping `targets` (host:port) every `scrape_interval` seconds.

    Targets are scraped with honor_labels, as a dcgm-exporter behind a ServiceMonitor is usually set up, so the
    workload's `pod` and `namespace` labels survive. Stopping and starting again keeps the port and the data;
    `pause()` and `resume()` stall it in between.
    """

    def __init__(self, workdir: Path, targets: Sequence[str], *, scrape_interval: float = 1.0,
                 extra_jobs: Sequence[dict[str, object]] = ()) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusError("prometheus is not installed (hack/ensure-prometheus.sh installs it)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.extra_jobs = list(extra_jobs)
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def scraping(cls, workdir: Path, targets: Sequence[str], *, series: str, count: int) -> Iterator[PrometheusServer]:
        """A started server that already holds `count` series of `series`; stopped on exit."""
        server = cls(workdir, targets)
        server.start()
        try:
            server.wait_for_series(series, count)
            yield server
        finally:
            server.stop()

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        interval = f"{int(self.scrape_interval * 1000)}ms"
        jobs = [{"job_name": "gpu", "honor_labels": True, "static_configs": [{"targets": self.targets}]},
                *self.extra_jobs]
        config.write_text(json.dumps({"global": {"scrape_interval": interval, "evaluation_interval": interval},
                                      "scrape_configs": jobs}))
        with (self.workdir / "prometheus.log").open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
                 "--storage.tsdb.retention.time=2h"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self._proc.returncode}: {self._tail()}")
            if self._ready():
                return
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not ready after {timeout}s: {self._tail()}")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts connections but answers nothing and scrapes nothing, as a
        Prometheus stuck in a long garbage collection or on a hung disk."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run on (SIGCONT)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)  # a paused server handles no SIGTERM
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def query(self, promql: str) -> list[dict[str, object]]:
        """The instant vector `promql` evaluates to now."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return list(json.load(response)["data"]["result"])

    def wait_for_series(self, promql: str, count: int, timeout: float = 60.0) -> None:
        """Wait until `promql` returns at least `count` series (the targets have been scraped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if len(self.query(promql)) >= count:
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise PrometheusError(f"{promql} did not reach {count} series in {timeout}s")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _tail(self) -> str:
        return "\n".join((self.workdir / "prometheus.log").read_text(errors="replace").splitlines()[-20:])
