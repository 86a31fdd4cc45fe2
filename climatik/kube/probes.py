"""The process's one HTTP port: /metrics (Prometheus text format), /healthz and /readyz.

A stdlib `ThreadingHTTPServer` in a daemon thread; port 0 picks a free port, and `port` tells which.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

#: A probe answers (healthy, explanation).
Probe = Callable[[], tuple[bool, str]]


class ProbeServer:
    """Serves metrics from `registry` and the answers of the `live` and `ready` probes."""

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
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
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
