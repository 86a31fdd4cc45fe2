"""The Climatik controllers as real processes on one machine, supervised as the kubelet supervises containers: a
process that exits is started again after a back-off. Faults are injected here: a controller killed (a crash),
and kept down until revived. Used by the local loop (hack/loopenv.py), the integration tests of the controllers
and the benchmarks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests


@dataclass
class _Supervised:
    """One controller under supervision: how to start it, its current process and its restart history."""

    argv: list[str]
    proc: subprocess.Popen[bytes]
    started: float
    delay: float
    restarts: list[float] = field(default_factory=list)  # when (monotonic) each restart happened
    exited_at: float | None = None  # set while it waits out its back-off
    kept_down: bool = False  # killed on purpose, not to be restarted until revived


class ClimatikProcesses:
    """monitor, recommend, and one tune per node, each a real `climatik` process logging to workdir.

    As the kubelet does for a container, a process that exits is started again with the same arguments after a
    back-off (`restart_delay`, doubled after each quick exit up to `max_restart_delay`, back to the start once
    a process ran `healthy_after` seconds); the exit and the restart are logged on stderr and in the process's
    log, and the run goes on. `check()` fails only on a crash loop. Leader-elected controllers are given a
    stable identity (as a pod name is), so a restarted one takes its own lease back at once. `kill()` is a
    crash (SIGKILL: nothing is cleaned up), optionally kept down until `revive()`, as a node that went away.
    """

    def __init__(self, workdir: Path, kubeconfig: Path, *, restart_delay: float = 1.0,
                 max_restart_delay: float = 10.0, healthy_after: float = 60.0, crash_loop: int = 5) -> None:
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # the current process of each controller
        self._restart_delay = restart_delay
        self._max_restart_delay = max_restart_delay
        self._healthy_after = healthy_after
        self._crash_loop = crash_loop
        self._supervised: dict[str, _Supervised] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self, name: str, args: Sequence[str]) -> None:
        argv = [sys.executable, "-m", "climatik", "--log-format=json", *args, f"--kubeconfig={self.kubeconfig}",
                "--metrics-port=0"]
        with self._lock:
            proc = self._spawn(name, argv)
            self._supervised[name] = _Supervised(argv, proc, time.monotonic(), self._restart_delay)
            self.procs[name] = proc
            if self._supervisor is None:
                self._supervisor = threading.Thread(target=self._supervise, name="loopenv-supervisor",
                                                    daemon=True)
                self._supervisor.start()

    def kill(self, name: str, *, keep_down: bool = False) -> None:
        """SIGKILL the controller's process and wait for it; it is restarted as after any exit, unless
        `keep_down`, in which case it stays down until `revive(name)`."""
        with self._lock:
            s = self._supervised[name]
            s.kept_down = keep_down
            s.proc.kill()
            s.proc.wait()
        self._note(name, "killed" + (", kept down" if keep_down else ""))

    def revive(self, name: str) -> None:
        """Start a controller that was killed and kept down, now."""
        with self._lock:
            s = self._supervised[name]
            if not s.kept_down:
                raise RuntimeError(f"climatik {name} was not kept down")
            s.kept_down, s.exited_at, s.started = False, None, time.monotonic()
            s.proc = self.procs[name] = self._spawn(name, s.argv)
        self._note(name, "revived")

    def metrics_url(self, name: str) -> str | None:
        """Where the controller's current run serves /metrics, /readyz (from its log); None before it said."""
        port = None
        with (self.workdir / f"{name}.log").open(errors="replace") as log:
            for line in log:
                if '"process_started"' in line:
                    port = int(json.loads(line)["port"])
        return None if port is None else f"http://127.0.0.1:{port}"

    def ready(self, name: str) -> bool:
        """Whether the controller's current run answers /readyz (a leader-elected one: leads with synced caches)."""
        return self._get(name, "/readyz") is not None

    def metric(self, name: str, family: str, **labels: str) -> float | None:
        """The value of one series on the controller's /metrics; None if it does not serve it (yet)."""
        text = self._get(name, "/metrics") or ""
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        for line in text.splitlines():
            match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
            if match and match[1] == family and ",".join(sorted((match[2] or "").split(","))) == wanted:
                return float(match[3])
        return None

    def _get(self, name: str, path: str) -> str | None:
        url = self.metrics_url(name)
        if url is None or self.procs[name].poll() is not None:
            return None
        try:
            answer = requests.get(url + path, timeout=2)
        except requests.RequestException:
            return None
        return answer.text if answer.status_code == 200 else None

    def restarts(self) -> dict[str, int]:
        """How many times each controller was restarted."""
        with self._lock:
            return {name: len(s.restarts) for name, s in self._supervised.items()}

    def check(self) -> None:
        """Fail if a controller is crash-looping: `crash_loop` restarts within five minutes."""
        now = time.monotonic()
        with self._lock:
            for name, s in self._supervised.items():
                recent = [t for t in s.restarts if now - t < 300.0]
                if len(recent) >= self._crash_loop:
                    raise RuntimeError(f"climatik {name} is crash-looping ({len(recent)} restarts in 5 min); "
                                       f"see {self.workdir / name}.log")

    def stop(self) -> dict[str, int]:
        """SIGTERM everything (tuners restore defaults) and wait; exit codes by name (of the last run of each)."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (self.workdir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def _supervise(self) -> None:
        while not self._stopping.wait(0.1):
            with self._lock:
                for name, s in self._supervised.items():
                    self._tend(name, s)

    def _tend(self, name: str, s: _Supervised) -> None:
        code = s.proc.poll()
        if code is None or self._stopping.is_set() or s.kept_down:
            return
        now = time.monotonic()
        if s.exited_at is None:
            s.exited_at = now
            if now - s.started >= self._healthy_after:
                s.delay = self._restart_delay
            self._note(name, f"exited with {code} after {now - s.started:.1f} s; restarting in {s.delay:.1f} s")
            return
        if now - s.exited_at < s.delay:
            return
        s.delay = min(self._max_restart_delay, s.delay * 2)
        s.proc = self.procs[name] = self._spawn(name, s.argv)
        s.started, s.exited_at = now, None
        s.restarts.append(now)
        self._note(name, f"restarted (restart {len(s.restarts)})")

    def _note(self, name: str, what: str) -> None:
        line = f"loopenv: climatik {name} {what}"
        print(line, file=sys.stderr, flush=True)
        with (self.workdir / f"{name}.log").open("a") as log:
            log.write(json.dumps({"event": "loopenv_supervisor", "process": name, "message": what}) + "\n")
