"""The HTTP face of one simulated node: dcgm-exporter's /metrics and a small JSON control API.

GET    /metrics                          Prometheus text, as dcgm-exporter serves it
GET    /healthz                          "ok"
GET    /sim/gpus                         {"node", "time_s", "gpus": [GpuInfo...]}
POST   /sim/gpus/<uuid>/locked-clock     {"max": MHz}   lock the SM clock's upper bound
DELETE /sim/gpus/<uuid>/locked-clock                    unlock (back to the default clock)
POST   /sim/gpus/<uuid>/power-limit      {"watts": W}   change the board power limit
POST   /sim/load                         {"uuid"?, "utilisation", "mix"}  fixed load from now on
"""

from __future__ import annotations

import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from climatik.sim.control import GpuInfo, parse_load, parse_positive
from climatik.sim.exporter import ExporterOptions, render_metrics
from climatik.sim.node import SimNode

_GPU_PATH = re.compile(r"^/sim/gpus/(?P<uuid>[^/]+)/(?P<what>locked-clock|power-limit)$")
_MAX_BODY_BYTES = 64 * 1024


class _Request(BaseHTTPRequestHandler):
    """Serves one request against the node and options its server was built with."""

    server: _Server

    def do_GET(self) -> None:
        node = self.server.node
        if self.path == "/metrics":
            body = render_metrics(node.name, node.readings(), self.server.options)
            self._send(HTTPStatus.OK, body.encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif self.path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif self.path == "/sim/gpus":
            gpus = [GpuInfo.from_reading(reading).to_json() for reading in node.readings()]
            self._json(HTTPStatus.OK, {"node": node.name, "time_s": node.now_s, "gpus": gpus})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:
        try:
            body = self._read_json()
            if self.path == "/sim/load":
                uuid, load = parse_load(body)
                for target in [uuid] if uuid is not None else self.server.node.uuids():
                    self.server.node.set_load(target, load)
                self._json(HTTPStatus.OK, {"utilisation": load.utilisation, "mix": load.mix.to_mapping()})
                return
            match = _GPU_PATH.match(self.path)
            if match is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
            elif match["what"] == "locked-clock":
                snapped = self.server.node.set_locked_clock(match["uuid"], parse_positive(body, "max"))
                self._json(HTTPStatus.OK, {"uuid": match["uuid"], "locked_clock_mhz": snapped})
            else:
                watts = parse_positive(body, "watts")
                self.server.node.set_power_limit(match["uuid"], watts)
                self._json(HTTPStatus.OK, {"uuid": match["uuid"], "power_limit_w": watts})
        except KeyError as error:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no GPU {error.args[0]}"})
        except ValueError as error:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})

    def do_DELETE(self) -> None:
        match = _GPU_PATH.match(self.path)
        if match is None or match["what"] != "locked-clock":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
            return
        try:
            self.server.node.reset_locked_clock(match["uuid"])
        except KeyError:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no GPU {match['uuid']}"})
            return
        self._json(HTTPStatus.OK, {"uuid": match["uuid"], "locked_clock_mhz": None})

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log.debug("request_served", detail=format % args)

    def _read_json(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY_BYTES:
            raise ValueError("body too large")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"body is not JSON: {error}") from None

    def _json(self, status: HTTPStatus, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], node: SimNode, options: ExporterOptions) -> None:
        super().__init__(address, _Request)
        self.node = node
        self.options = options
        self.log = structlog.get_logger(__name__).bind(node=node.name)


class NodeServer:
    """Serves one node's exporter and control API on `host:port` (0 picks a free port) from a thread."""

    def __init__(
        self, node: SimNode, *, options: ExporterOptions | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._server = _Server((host, port), node, options or ExporterOptions())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:40123 (metrics at /metrics)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        """Begin serving in a daemon thread."""
        # A short poll keeps stop() quick; the loop is idle between polls.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sim-exporter-{self._server.node.name}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
