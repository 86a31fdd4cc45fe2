"""The monitors the benchmark compares: the code at a baseline commit (the old path, run from its own tree, so
that nothing of it lives on in the shipped code) and the working tree (the new path).

Each runs as a real `climatik monitor` process from its tree: `python -m climatik` puts the working directory
first on the import path, ahead of the editable install, so the tree it starts in is the code it runs (checked
before each run).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
#: The last commit before the monitor's reads were narrowed and aggregated (issue 16): the old path.
BASELINE = "09bd653cefa289aef8168686c183935ab060b0c4"


@dataclass(frozen=True)
class Variant:
    """A name for the tables, the tree the monitor runs from, and where that tree came from."""

    name: str
    tree: Path
    source: str
    #: Members of the monitors' shard group (the measured monitor included); 0 runs it unsharded.
    shards: int = 0
    #: What moves between shards as one (`climatik monitor --shard-by`).
    shard_by: str = "policy"


def baseline(ref: str, workdir: Path) -> Variant:
    """The package `climatik/` as it was at `ref`, unpacked under `workdir`."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"], check=True,
                            capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, "climatik"], check=True,
                             capture_output=True).stdout
    tree = workdir / f"baseline-{commit[:12]}"
    tree.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return Variant("old", tree, f"git {commit[:12]}")


def working_tree() -> Variant:
    return Variant("new", REPO, "working tree")


def one_shard(shards: int, of: Variant | None = None, *, by: str = "policy") -> Variant:
    """The working tree (or `of`'s tree) as one of `shards` monitors that split the policies (the others are
    memberships run by the benchmark: they take their share of the policies without measuring them), each policy
    or (`by` namespace) each namespace moving as one."""
    if of is None:
        if by == "namespace":
            return Variant(f"1/{shards} ns", REPO, f"working tree, --shard --shard-by=namespace, one of {shards} "
                           "shard members", shards=shards, shard_by=by)
        return Variant(f"1/{shards}", REPO, f"working tree, --shard, one of {shards} shard members", shards=shards)
    if by == "namespace":
        return Variant(f"{of.name} 1/{shards} ns", of.tree, f"{of.source}, --shard --shard-by=namespace, one of "
                       f"{shards} shard members", shards=shards, shard_by=by)
    return Variant(f"{of.name} 1/{shards}", of.tree, f"{of.source}, --shard, one of {shards} shard members",
                   shards=shards)


class MonitorProcess:
    """One `climatik monitor` run from a variant's tree, logging JSON lines to `log`."""

    def __init__(self, variant: Variant, log: Path, kubeconfig: Path, args: Sequence[str]) -> None:
        self.variant = variant
        self.log = log
        self._command = [sys.executable, "-m", "climatik", "--log-format=json", "monitor", *args,
                         f"--kubeconfig={kubeconfig}", "--metrics-port=0"]
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(variant.tree)}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        found = subprocess.run([sys.executable, "-c", "import climatik; print(climatik.__file__)"],
                               cwd=self.variant.tree, env=self._env, check=True, capture_output=True,
                               text=True).stdout.strip()
        if not Path(found).resolve().is_relative_to(self.variant.tree.resolve()):
            raise RuntimeError(f"{self.variant.name}: climatik imports from {found}, not from {self.variant.tree}")
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(self._command, cwd=self.variant.tree, env=self._env, stdout=out,
                                          stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    def check(self) -> None:
        """Fail if the monitor died."""
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"monitor ({self.variant.name}) exited with {self._proc.returncode}; see {self.log}")

    def port(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            for line in self.log.read_text(errors="replace").splitlines():
                if '"process_started"' in line:
                    return int(json.loads(line)["port"])
            time.sleep(0.2)
        raise TimeoutError(f"monitor ({self.variant.name}) logged no process_started line in {timeout:.0f} s")

    def status_updates(self) -> int:
        return sum('"status_updated"' in line for line in self.log.read_text(errors="replace").splitlines())

    def stop(self) -> int:
        if self._proc is None:
            return 0
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        try:
            return self._proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait()
