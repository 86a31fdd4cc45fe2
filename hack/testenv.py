"""A real test control plane: etcd and kube-apiserver built by hack/build-testenv.sh, on free loopback ports.

Used by the integration tests (a session-scoped fixture), the benchmarks, `make demo` and by hand through
`make testenv`, which starts one, prints its kubeconfig path and keeps it running until interrupted.
There is no controller-manager, scheduler or kubelet: Nodes and Pods are plain API objects.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
ADMIN_TOKEN = "climatik-testenv-admin-token"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_binaries() -> Path:
    """Build (or find cached) etcd, kube-apiserver and kubectl; return the directory holding them."""
    out = subprocess.run(
        [str(HACK / "build-testenv.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip().splitlines()
    return Path(out[-1])


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or did not become ready."""


class ApiServer:
    """One kube-apiserver process of a control plane; several may serve the same etcd, each on its own port,
    with its own serving certificate and kubeconfig (the admin token and service-account key are shared)."""

    def __init__(self, plane: ControlPlane, name: str, port: int) -> None:
        self.plane = plane
        self.name = name
        self.port = port
        self.server = f"https://127.0.0.1:{port}"
        suffix = "" if name == "apiserver" else f"-{name}"
        # The first one keeps the historical paths (certs/, kube-apiserver.log, kubeconfig) others rely on.
        self.cert_dir = plane.workdir / f"certs{suffix}"
        self.logname = f"kube-apiserver{suffix}.log"
        self.kubeconfig = plane.workdir / f"kubeconfig{suffix}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = False  # a restart keeps the port: clients hold its URL

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, wait: bool = True) -> None:
        """Start the process against the running etcd; with `wait`, return once /readyz answers ok.

        A port found free can be handed to another process's connection before the apiserver binds it; a first
        start that finds its port taken moves to another free one (at most three tries)."""
        first, self._started = not self._started, True
        for attempt in range(3):
            self.plane.write_kubeconfig(self.kubeconfig, self.server, self.cert_dir / "apiserver.crt")
            with (self.plane.workdir / self.logname).open("ab") as log:
                self._proc = subprocess.Popen(self._args(), stdout=log, stderr=subprocess.STDOUT)
            if not wait:
                return
            try:
                self.wait_ready()
            except ControlPlaneError as exc:
                if not first or attempt == 2 or "address already in use" not in str(exc):
                    raise
                self.port = free_port()
                self.server = f"https://127.0.0.1:{self.port}"
                continue
            return

    def wait_ready(self, timeout: float | None = None) -> None:
        assert self._proc is not None, "not started"
        self.plane.wait_ready(self._proc, self.ready, self.name, self.logname, timeout)

    def ready(self) -> bool:
        """True when /readyz answers ok to the admin identity."""
        try:
            request = urllib.request.Request(self.server + "/readyz",
                                             headers={"Authorization": f"Bearer {self.plane.token}"})
            with urllib.request.urlopen(request, context=_insecure_tls(), timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the process dies mid-request, as in a crash; etcd keeps all the data."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM and wait (a graceful shutdown), killing it if it takes longer than `timeout`."""
        _terminate(self._proc, timeout)
        self._proc = None

    def _args(self) -> list[str]:
        plane = self.plane
        key = plane.workdir / "sa.key"
        return [
            str(plane.binaries / "kube-apiserver"),
            f"--etcd-servers={plane.etcd_url}", f"--cert-dir={self.cert_dir}",
            f"--secure-port={self.port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true", "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            f"--token-auth-file={plane.workdir / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={key}", f"--service-account-signing-key-file={key}",
            "--v=0",
        ]


class ControlPlane:
    """etcd plus kube-apiserver with an admin token, RBAC and a kubeconfig, all under one work directory.

    `add_apiserver()` starts more apiservers on the same etcd (writes through one are seen by watchers of
    another), so that a test can stop one while the cluster keeps changing.
    """

    def __init__(self, workdir: Path, binaries: Path | None = None, ready_timeout: float = 120.0) -> None:
        self.workdir = workdir.resolve()
        self.binaries = binaries or ensure_binaries()
        self.ready_timeout = ready_timeout
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self.token = ADMIN_TOKEN
        self.apiserver = ApiServer(self, "apiserver", free_port())
        self.apiservers = [self.apiserver]
        self._etcd: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.apiserver.port

    @property
    def server(self) -> str:
        return self.apiserver.server

    @property
    def kubeconfig(self) -> Path:
        return self.apiserver.kubeconfig

    @property
    def kubectl(self) -> list[str]:
        """argv prefix of a kubectl of the server's minor version, pointed at this control plane."""
        return [str(self.binaries / "kubectl"), f"--kubeconfig={self.kubeconfig}"]

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_credentials()
        self._start_etcd()
        self.start_apiserver()

    def stop(self) -> None:
        for apiserver in self.apiservers:
            apiserver.stop()
        _terminate(self._etcd, 15.0)
        self._etcd = None

    def add_apiserver(self, name: str | None = None, *, wait: bool = True) -> ApiServer:
        """Start one more apiserver on this control plane's etcd; its kubeconfig is `ApiServer.kubeconfig`."""
        apiserver = ApiServer(self, name or f"apiserver{len(self.apiservers) + 1}", free_port())
        self.apiservers.append(apiserver)
        apiserver.start(wait=wait)
        return apiserver

    def kill_apiserver(self) -> None:
        """SIGKILL the (first) apiserver only; etcd keeps running with all the data."""
        self.apiserver.kill()

    def start_apiserver(self, *, wait: bool = True) -> None:
        """Start the (first) apiserver on its port against the running etcd and wait until it is ready."""
        self.apiserver.start(wait=wait)

    def compact_etcd(self) -> int:
        """Compact etcd's history at its current revision, so older resourceVersions answer 410 Gone."""
        status = self._etcd_post("/v3/kv/range", {"key": "AA==", "limit": 1})
        revision = int(status["header"]["revision"])
        self._etcd_post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def apply(self, *paths: Path) -> None:
        """kubectl apply each path: a directory with a kustomization with -k, anything else with -f."""
        for path in paths:
            flag = "-k" if (path / "kustomization.yaml").exists() else "-f"
            subprocess.run([*self.kubectl, "apply", "--server-side", flag, str(path)], check=True,
                           stdout=subprocess.DEVNULL)

    def wait_for_resources(self, group_version: str, plurals: set[str], timeout: float = 60.0) -> None:
        """Wait until discovery of group_version lists every plural (CRDs are served only then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = {r["name"] for r in self.get_json(f"/apis/{group_version}")["resources"]}
                if plurals <= found:
                    return
            except (urllib.error.URLError, KeyError):
                pass
            time.sleep(0.2)
        raise ControlPlaneError(f"discovery of {group_version} did not list {sorted(plurals)} in {timeout}s")

    def get_json(self, path: str) -> dict:  # type: ignore[type-arg]
        request = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, context=_insecure_tls(), timeout=10) as response:
            return json.load(response)  # type: ignore[no-any-return]

    def version(self) -> str:
        return str(self.get_json("/version")["gitVersion"])

    def write_kubeconfig(self, path: Path, server: str, ca: Path) -> None:
        """A kubeconfig for the admin identity at `server`, trusting `ca` (written by the apiserver on start)."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "testenv",
            "clusters": [{"name": "testenv", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": "admin"}}],
        }, indent=2))

    def wait_ready(self, proc: subprocess.Popen[bytes], probe: Callable[[], bool], name: str, logname: str,
                   timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{self._tail(logname)}")
            if probe():
                return
            time.sleep(0.1)
        raise ControlPlaneError(f"{name} not ready after {self.ready_timeout}s:\n{self._tail(logname)}")

    # -- internals -------------------------------------------------------------------------------------------

    def _write_credentials(self) -> None:
        (self.workdir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        key = self.workdir / "sa.key"
        if not key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _start_etcd(self) -> None:
        with (self.workdir / "etcd.log").open("ab") as log:
            self._etcd = self._popen_etcd(log)
        self.wait_ready(self._etcd, self._etcd_ready, "etcd", "etcd.log")

    def _popen_etcd(self, log: typing.IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([
            str(self.binaries / "etcd"), f"--data-dir={self.workdir / 'etcd'}", "--name=testenv",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-cluster=testenv=http://127.0.0.1:{self.etcd_peer_port}",
            "--unsafe-no-fsync", "--log-level=warn",
        ], stdout=log, stderr=subprocess.STDOUT)

    def _tail(self, logname: str) -> str:
        lines = (self.workdir / logname).read_text(errors="replace").splitlines()
        return "\n".join(lines[-30:])

    def _etcd_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _etcd_post(self, path: str, body: dict) -> dict:  # type: ignore[type-arg]
        request = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)  # type: ignore[no-any-return]


def _insecure_tls() -> ssl.SSLContext:
    # Readiness probes only: they run before the apiserver has written the CA a kubeconfig would trust.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_with_crds(workdir: Path) -> ControlPlane:
    """Start a control plane and install Climatik's CRDs, waiting until they are served."""
    plane = ControlPlane(workdir)
    plane.start()
    try:
        plane.apply(REPO / "manifests" / "crd")
        plane.wait_for_resources("climatik.io/v1alpha1", {"powercappingpolicies", "nodefrequencies", "powerdomains"})
    except BaseException:
        plane.stop()
        raise
    return plane


def main() -> int:
    """Run a control plane by hand until interrupted (make testenv)."""
    workdir = Path(os.environ.get("TESTENV_DIR", REPO / "out" / "testenv"))
    shutil.rmtree(workdir, ignore_errors=True)
    plane = start_with_crds(workdir)
    print(f"kube-apiserver {plane.version()} at {plane.server}")
    print(f"export KUBECONFIG={plane.kubeconfig}")
    print(f"kubectl: {plane.kubectl[0]}")
    print("Ctrl-C stops it.", flush=True)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        signal.sigwait(stop_signals)
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
