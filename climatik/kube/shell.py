"""The process shell every subcommand runs in.

A subcommand builds its client, informers and controllers, hands them to a `ProcessShell`, and returns
`shell.run()` as its exit code. The shell:

* serves /metrics, /healthz and /readyz (ready once every informer has synced and, when elected, the
  lease is held);
* starts the informers, then (once leading, if elected) waits for their caches and starts the controllers;
* on SIGTERM or SIGINT stops taking work, lets reconciles in flight finish within `grace_period`, stops the
  informers, releases the lease and runs the shutdown hooks (e.g. restoring hardware defaults), then
  returns 0; a second signal exits at once;
* when the lease is lost, stops at once and returns 1, so the process exits non-zero and is restarted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from climatik.kube.informer import Informer
from climatik.kube.leader import LeaderElector
from climatik.kube.probes import ProbeServer
from climatik.kube.runner import Controller

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
        host: str = "0.0.0.0",
        port: int = 8080,
        grace_period: float = 25.0,
        shutdown_hooks: Sequence[Callable[[], None]] = (),
        handle_signals: bool = True,
        exit_now: Callable[[int], Any] = os._exit,
    ) -> None:
        self.name = name
        self._informers = list(informers)
        self._controllers = list(controllers)
        self._elector = elector
        self._grace = grace_period
        self._hooks = list(shutdown_hooks)
        self._handle_signals = handle_signals
        self._exit_now = exit_now
        self._stop = threading.Event()
        self._informer_stop = threading.Event()
        self._elector_stop = threading.Event()
        self._lease_lost = threading.Event()
        self._signals = 0
        self._serving = threading.Event()
        self._probes = ProbeServer(registry=registry, ready=self.ready, host=host, port=port)

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
        return True, "ok"

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
        elector = self._elector
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
        self._signals += 1
        if self._signals > 1:
            log.warning("process_exiting_now", process=self.name, signal=signum)
            self._exit_now(128 + signum)
            return
        log.info("stop_requested", process=self.name, signal=signum)
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
