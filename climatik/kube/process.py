"""The process every subcommand runs in: its client, registry and runtime metrics, the probes server, and the
shell that starts, leads and stops informers and controllers.

A subcommand builds a `Wiring` (client, registry, runtime metrics and builders for informers, queues,
controllers and the leader elector), hands its informers and controllers to a `ProcessShell`, and returns
`shell.run()` as its exit code. The shell:

* serves /metrics, /healthz and /readyz on one port (/metrics?name[]=<sample name>&... only the samples named,
  as the Prometheus client's own server does: rendering every per-policy series takes a large monitor tens of
  milliseconds, a few counters well under one; ready once every informer has synced and, when elected,
  the lease is held, and the optional `ready_check` agrees; live unless the optional `live` probe says not, e.g.
  the tuner's GPU library needing a fresh container);
* starts the informers, then (once leading, if elected) waits for their caches and starts the controllers;
* on SIGTERM or SIGINT stops taking work, lets reconciles in flight finish within `grace_period`, stops the
  informers, releases the lease and runs the shutdown hooks (e.g. restoring hardware defaults), then
  returns 0; a second signal exits at once;
* when the lease is lost, stops at once and returns 1, so the process exits non-zero and is restarted (a
  leader cut off from the API server leads on until its lease could have passed to another: see
  `climatik.kube.leader`; restarted under the same identity, it takes its lease back at once).
* when sharded (climatik.kube.shards) instead of elected, runs the membership's rounds, is ready while the
  replica may act on its keys, and leaves the group (deletes its shard Lease) once the controllers have stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from climatik.clock import Clock
from climatik.kube.client import KubeClient, Resource, connect
from climatik.kube.controller import Controller, Reconcile
from climatik.kube.informer import Informer
from climatik.kube.leader import LeaderElector, LeaseConfig
from climatik.kube.listwatch import ClientListerWatcher
from climatik.kube.metrics import RuntimeMetrics
from climatik.kube.reflector import Transform
from climatik.kube.shards import ShardConfig, ShardMembership, ShardMetrics
from climatik.kube.store import IndexFunc, strip_managed_fields
from climatik.kube.workqueue import WorkQueue


@dataclass(frozen=True)
class CommonSettings:
    """Settings shared by all subcommands.

    The default leader-election identity (host name and pid) changes when the process restarts, so a restarted
    leader waits out its own lease; a stable identity that names one live process at a time (the pod name, which
    the manifests pass as POD_NAME) lets it take the lease back at once.
    """

    kubeconfig: str | None = None
    metrics_port: int = 8080
    metrics_host: str = "0.0.0.0"
    grace_period: float = 25.0
    leader_elect: bool = False
    #: Split the keys with the other replicas of the component over shard Leases (climatik.kube.shards).
    shard: bool = False
    leader_election_namespace: str = "climatik-system"
    leader_election_identity: str = field(default_factory=lambda: f"{socket.gethostname()}_{os.getpid()}")
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class Wiring:
    """One process's client, registry and runtime metrics, and builders that hand them to each part."""

    def __init__(self, settings: CommonSettings, *, clock: Clock, client: KubeClient | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.client = client or connect(settings.kubeconfig)
        self.registry = CollectorRegistry()
        self.metrics = RuntimeMetrics(self.registry)

    def informer(self, resource: Resource, *, name: str, field_selector: str = "", label_selector: str = "",
                 indexers: Mapping[str, IndexFunc] | None = None, resync_period: float = 0.0,
                 transform: Transform | None = strip_managed_fields) -> Informer:
        """An informer over `resource`. Its cache holds objects without metadata.managedFields (server-side
        apply bookkeeping no controller reads, about half of a small object's memory); a PUT of an object
        without them leaves the server's untouched. `transform=None` caches objects as served."""
        lister_watcher = ClientListerWatcher(self.client, resource, field_selector=field_selector,
                                             label_selector=label_selector)
        return Informer(lister_watcher, name=name, clock=self.clock, indexers=indexers,
                        resync_period=resync_period, metrics=self.metrics, transform=transform)

    def queue(self, name: str) -> WorkQueue:
        return WorkQueue(name=name, clock=self.clock, metrics=self.metrics)

    def controller(self, name: str, reconcile: Reconcile, queue: WorkQueue, *, workers: int = 1) -> Controller:
        return Controller(name=name, reconcile=reconcile, queue=queue, workers=workers, clock=self.clock,
                          metrics=self.metrics)

    def elector(self, lease_name: str) -> LeaderElector | None:
        """The lease contender when leader election is on, else None."""
        s = self.settings
        if not s.leader_elect:
            return None
        config = LeaseConfig(namespace=s.leader_election_namespace, name=lease_name,
                             identity=s.leader_election_identity, lease_duration=s.lease_duration,
                             renew_deadline=s.renew_deadline, retry_period=s.retry_period)
        return LeaderElector(self.client, config, clock=self.clock, metrics=self.metrics)

    def shards(self, group: str, keys: Callable[[], Iterable[str]],
               unit: Callable[[str], str] | None = None) -> ShardMembership | None:
        """This replica's membership of the component's shard group when sharding is on, else None. `keys`
        lists the keys the component knows (its cache); `unit` maps a key to what is hashed (ShardMembership)."""
        s = self.settings
        if not s.shard:
            return None
        config = ShardConfig.of(namespace=s.leader_election_namespace, group=group,
                                identity=s.leader_election_identity, lease_duration=s.lease_duration,
                                renew_deadline=s.renew_deadline, retry_period=s.retry_period)
        return ShardMembership(self.client, config, keys=keys, clock=self.clock,
                               metrics=ShardMetrics(self.registry), unit=unit)


#: A probe answers (healthy, explanation).
Probe = Callable[[], tuple[bool, str]]


class ProbeServer:
    """Serves metrics from `registry` (all of them, or with `name[]` parameters only the samples named, e.g.
    `name[]=climatik_controller_reconcile_total`) and the answers of the `live` and `ready` probes."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        ready: Probe,
        live: Probe = lambda: (True, "ok"),
        host: str = "0.0.0.0",
        port: int = 8080,
    ) -> None:
        self._registry = registry
        self._probes = {"/healthz": live, "/livez": live, "/readyz": ready}
        self._host = host
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        if self._server is None:
            raise RuntimeError("the probe server is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        server = ThreadingHTTPServer((self._host, self._requested_port), self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="probe-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        registry, probes = self._registry, self._probes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/metrics":
                    names = parse_qs(query).get("name[]")
                    chosen = registry.restricted_registry(names) if names else registry
                    self._reply(200, generate_latest(chosen), CONTENT_TYPE_LATEST)
                elif path in probes:
                    healthy, text = probes[path]()
                    self._reply(200 if healthy else 503, (text or "ok").encode() + b"\n", "text/plain")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the log

        return Handler


log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_LEASE_LOST = 1

# How often the main thread rechecks readiness while waiting to start the controllers.
_POLL_S = 0.05


class ProcessShell:
    """Runs informers and controllers (optionally under leader election) until told to stop."""

    def __init__(
        self,
        *,
        name: str,
        registry: CollectorRegistry,
        informers: Sequence[Informer],
        controllers: Sequence[Controller],
        elector: LeaderElector | None = None,
        shards: ShardMembership | None = None,
        host: str = "0.0.0.0",
        port: int = 8080,
        grace_period: float = 25.0,
        shutdown_hooks: Sequence[Callable[[], None]] = (),
        handle_signals: bool = True,
        exit_now: Callable[[int], Any] = os._exit,
        ready_check: Probe | None = None,
        live: Probe | None = None,
    ) -> None:
        self.name = name
        self._informers = list(informers)
        self._controllers = list(controllers)
        self._elector = elector
        self._shards = shards
        if elector is not None and shards is not None:
            raise ValueError("a process either leads alone or shares its keys with shards, not both")
        self._grace = grace_period
        self._hooks = list(shutdown_hooks)
        self._handle_signals = handle_signals
        self._exit_now = exit_now
        self._stop = threading.Event()
        self._informer_stop = threading.Event()
        self._elector_stop = threading.Event()
        self._lease_lost = threading.Event()
        self._signals = 0
        self._last_signal = 0
        self._serving = threading.Event()
        self._ready_check = ready_check
        self._probes = ProbeServer(registry=registry, ready=self._probe_ready, live=live or (lambda: (True, "ok")),
                                   host=host, port=port)

    @property
    def port(self) -> int:
        """The bound HTTP port (once `run` has started serving; see `wait_serving`)."""
        return self._probes.port

    def wait_serving(self, timeout: float | None = None) -> int:
        """Block until the HTTP port is bound (e.g. when `run` is in another thread); the port."""
        if not self._serving.wait(timeout):
            raise TimeoutError(f"{self.name} is not serving yet")
        return self.port

    def ready(self) -> tuple[bool, str]:
        if self._stop.is_set():
            return False, "shutting down"
        waiting = [i.name for i in self._informers if not i.has_synced()]
        if waiting:
            return False, "caches not synced: " + ", ".join(waiting)
        if self._elector is not None and not self._elector.is_leader():
            return False, "not the leader"
        if self._shards is not None:
            return self._shards.active()
        return True, "ok"

    def _probe_ready(self) -> tuple[bool, str]:
        # The extra check gates only what /readyz answers, never the start of the controllers: a component whose
        # hardware is unwell still reconciles (and restores) what it can.
        ready = self.ready()
        if not ready[0] or self._ready_check is None:
            return ready
        return self._ready_check()

    def request_stop(self) -> None:
        """Begin an orderly stop (what the first SIGTERM does)."""
        self._stop.set()

    def run(self) -> int:
        """Serve until stopped; the exit code for the process."""
        previous = self._install_signals()
        self._probes.start()
        self._serving.set()
        log.info("process_started", process=self.name, port=self.port)
        elector_thread = self._start_elector()
        try:
            for informer in self._informers:
                informer.start(self._informer_stop)
            if self._await_start_conditions():
                for controller in self._controllers:
                    controller.start()
                log.info("controllers_started", process=self.name)
                self._wait_for_stop()
            return self._shut_down(elector_thread)
        finally:
            self._restore_signals(previous)

    # -- phases --------------------------------------------------------------------------------------------

    def _start_elector(self) -> threading.Thread | None:
        shards, elector = self._shards, self._elector
        if shards is not None:
            thread = threading.Thread(target=shards.run, args=(self._elector_stop,), name="shard-membership",
                                      daemon=True)
            thread.start()
            return thread
        if elector is None:
            return None

        def lead() -> None:
            elector.run(self._elector_stop, on_started_leading=lambda: None, on_stopped_leading=self._lost)

        thread = threading.Thread(target=lead, name="leader-election", daemon=True)
        thread.start()
        return thread

    def _wait_for_stop(self) -> None:
        # Python runs signal handlers in the main thread, but the kernel may deliver the signal to any thread;
        # a main thread blocked without a timeout would then not notice until something else woke it.
        while not self._stop.wait(_POLL_S * 4):
            pass

    def _lost(self) -> None:
        if not self._elector_stop.is_set():
            self._lease_lost.set()
            self._stop.set()

    def _await_start_conditions(self) -> bool:
        """Wait for the lease (if elected) and synced caches; False if stopped first."""
        while not self._stop.is_set():
            if self.ready()[0]:
                return True
            self._stop.wait(_POLL_S)
        return False

    def _shut_down(self, elector_thread: threading.Thread | None) -> int:
        lost = self._lease_lost.is_set()
        grace = 0.0 if lost else self._grace
        if self._signals:
            log.info("stop_requested", process=self.name, signal=self._last_signal)
        log.info("process_stopping", process=self.name, grace_period=grace, lease_lost=lost)
        deadline = time.monotonic() + grace  # one grace period for all controllers together
        for controller in self._controllers:
            controller.stop(max(0.0, deadline - time.monotonic()))
        self._informer_stop.set()
        for informer in self._informers:
            informer.join(2.0)
        self._elector_stop.set()
        if elector_thread is not None:
            elector_thread.join(5.0)
        for hook in self._hooks:
            try:
                hook()
            except Exception:
                log.exception("shutdown_hook_failed", process=self.name)
        self._probes.stop()
        code = EXIT_LEASE_LOST if lost else EXIT_OK
        log.info("process_stopped", process=self.name, exit_code=code)
        return code

    # -- signals -------------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # A handler runs between two bytecodes of the main thread, maybe while that thread holds the log's lock:
        # it must not log (that deadlocks). The first signal is logged by the main thread as it stops.
        self._signals += 1
        self._last_signal = signum
        if self._signals > 1:
            with contextlib.suppress(OSError):
                os.write(2, f"{self.name}: second signal {signum}, exiting now\n".encode())
            self._exit_now(128 + signum)
            return
        self.request_stop()

    def _install_signals(self) -> dict[int, Any]:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
