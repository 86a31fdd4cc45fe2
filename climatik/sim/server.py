"""The HTTP face of one simulated node: dcgm-exporter's /metrics and a small JSON control API, its JSON
shapes, and a client of that API for tests and local harnesses.

GET    /metrics                          Prometheus text, as dcgm-exporter serves it
GET    /healthz                          "ok"
GET    /sim/gpus                         {"node", "time_s", "gpus": [GpuInfo...]}
POST   /sim/gpus/<uuid>/locked-clock     {"max": MHz}   lock the SM clock's upper bound
DELETE /sim/gpus/<uuid>/locked-clock                    unlock (back to the default clock)
POST   /sim/gpus/<uuid>/power-limit      {"watts": W}   change the board power limit (400 outside its range)
DELETE /sim/gpus/<uuid>/power-limit                     back to the default power limit
POST   /sim/load                         {"uuid"?, "utilisation", "mix"}  fixed load from now on
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
import structlog

from climatik.sim.exporter import ExporterOptions, render_metrics
from climatik.sim.node import GpuState, SimNode
from climatik.sim.physics import Load, PhaseMix


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as GET /sim/gpus lists it: inventory plus the clock state the tuner cares about."""

    uuid: str
    index: int
    model: str
    min_clock_mhz: int
    max_clock_mhz: int
    default_clock_mhz: int
    supported_clocks_mhz: tuple[int, ...]
    mem_clock_mhz: int
    power_limit_w: float
    current_clock_mhz: int
    locked_clock_mhz: int | None
    power_w: float
    utilisation: float
    instant_power_w: float = 0.0
    min_power_limit_w: float = 0.0
    max_power_limit_w: float = 0.0
    default_power_limit_w: float = 0.0

    @classmethod
    def from_reading(cls, reading: GpuState) -> GpuInfo:
        """Describe a node's reading."""
        profile = reading.profile
        return cls(
            uuid=reading.uuid,
            index=reading.index,
            model=profile.model_name,
            min_clock_mhz=profile.min_sm_mhz,
            max_clock_mhz=profile.max_sm_mhz,
            default_clock_mhz=profile.default_sm_mhz,
            supported_clocks_mhz=profile.supported_clocks(),
            mem_clock_mhz=reading.mem_clock_mhz,
            power_limit_w=reading.power_limit_w,
            current_clock_mhz=reading.sm_clock_mhz,
            locked_clock_mhz=reading.locked_max_mhz,
            power_w=round(reading.power_w, 3),
            utilisation=reading.utilisation,
            instant_power_w=round(reading.instant_power_w, 3),
            min_power_limit_w=profile.power_limit_range[0],
            max_power_limit_w=profile.power_limit_range[1],
            default_power_limit_w=profile.default_power_limit_w,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GpuInfo:
        """Parse one entry of GET /sim/gpus."""
        locked = data.get("locked_clock_mhz")
        return cls(
            uuid=str(data["uuid"]),
            index=int(data["index"]),
            model=str(data["model"]),
            min_clock_mhz=int(data["min_clock_mhz"]),
            max_clock_mhz=int(data["max_clock_mhz"]),
            default_clock_mhz=int(data["default_clock_mhz"]),
            supported_clocks_mhz=tuple(int(mhz) for mhz in data["supported_clocks_mhz"]),
            mem_clock_mhz=int(data["mem_clock_mhz"]),
            power_limit_w=float(data["power_limit_w"]),
            current_clock_mhz=int(data["current_clock_mhz"]),
            locked_clock_mhz=None if locked is None else int(locked),
            power_w=float(data["power_w"]),
            utilisation=float(data["utilisation"]),
            instant_power_w=float(data.get("instant_power_w", data["power_w"])),
            min_power_limit_w=float(data.get("min_power_limit_w", 0.0)),
            max_power_limit_w=float(data.get("max_power_limit_w", 0.0)),
            default_power_limit_w=float(data.get("default_power_limit_w", 0.0)),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object for this GPU."""
        return {
            "uuid": self.uuid,
            "index": self.index,
            "model": self.model,
            "min_clock_mhz": self.min_clock_mhz,
            "max_clock_mhz": self.max_clock_mhz,
            "default_clock_mhz": self.default_clock_mhz,
            "supported_clocks_mhz": list(self.supported_clocks_mhz),
            "mem_clock_mhz": self.mem_clock_mhz,
            "power_limit_w": self.power_limit_w,
            "current_clock_mhz": self.current_clock_mhz,
            "locked_clock_mhz": self.locked_clock_mhz,
            "power_w": self.power_w,
            "utilisation": self.utilisation,
            "instant_power_w": self.instant_power_w,
            "min_power_limit_w": self.min_power_limit_w,
            "max_power_limit_w": self.max_power_limit_w,
            "default_power_limit_w": self.default_power_limit_w,
        }


def parse_positive(data: object, key: str) -> float:
    """`data[key]` as a finite positive number, or ValueError with a message fit for a 400 answer."""
    if not isinstance(data, dict) or key not in data:
        raise ValueError(f"body must be a JSON object with {key!r}")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key!r} must be a positive number, got {value!r}")
    return float(value)


def parse_load(data: object) -> tuple[str | None, Load]:
    """The body of POST /sim/load: {"uuid": optional, "utilisation": 0..1, "mix": {"prefill": 0.3, ...}}."""
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    uuid = data.get("uuid")
    if uuid is not None and not isinstance(uuid, str):
        raise ValueError("'uuid' must be a string")
    utilisation = data.get("utilisation")
    if isinstance(utilisation, bool) or not isinstance(utilisation, int | float):
        raise ValueError("'utilisation' must be a number within 0..1")
    mix = data.get("mix", {"idle": 1.0} if utilisation == 0 else None)
    if not isinstance(mix, dict) or not all(isinstance(v, int | float) for v in mix.values()):
        raise ValueError("'mix' must map phase names to fractions")
    return uuid, Load(float(utilisation), PhaseMix.from_mapping(mix))


_GPU_PATH = re.compile(r"^/sim/gpus/(?P<uuid>[^/]+)/(?P<what>locked-clock|power-limit)$")
_MAX_BODY_BYTES = 64 * 1024


class _Request(BaseHTTPRequestHandler):
    """Serves one request against the node and options its server was built with. Connections are kept alive
    (every answer carries its length), as a tuner's guard asks every 100 ms."""

    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the client's delayed ACK
    # of the headers, about 40 ms per request on a kept-alive connection.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.opened(self.connection)

    def finish(self) -> None:
        self.server.closed(self.connection)
        super().finish()

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
        if match is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
            return
        node, uuid = self.server.node, match["uuid"]
        try:
            if match["what"] == "locked-clock":
                node.reset_locked_clock(uuid)
                self._json(HTTPStatus.OK, {"uuid": uuid, "locked_clock_mhz": None})
            else:
                node.reset_power_limit(uuid)
                reading = next(r for r in node.readings() if r.uuid == uuid)
                self._json(HTTPStatus.OK, {"uuid": uuid, "power_limit_w": reading.power_limit_w})
        except KeyError:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no GPU {uuid}"})

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log.debug("request_served", detail=format % args)

    def _read_json(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY_BYTES:
            self.close_connection = True  # the body is left unread: the connection cannot serve another request
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
        self._connections: set[socket.socket] = set()
        self._guard = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that goes away while its connection is kept alive (a tuner killed) is no error."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            self.log.debug("sim_client_gone", client=str(client_address), error=str(error))
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]

    def opened(self, connection: socket.socket) -> None:
        with self._guard:
            self._connections.add(connection)

    def closed(self, connection: socket.socket) -> None:
        with self._guard:
            self._connections.discard(connection)

    def drop_connections(self) -> None:
        """End every kept-alive connection, so that a stopped node answers no one."""
        with self._guard:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


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
        self._server.drop_connections()


class SimControlClient:
    """Talks to one node's /sim API; raises requests.HTTPError on an error answer."""

    def __init__(self, base_url: str, *, session: requests.Session, timeout_s: float = 5.0) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._timeout_s = timeout_s

    def gpus(self) -> list[GpuInfo]:
        """The node's GPUs with their inventory and current clocks."""
        answer = self._session.get(f"{self._base}/sim/gpus", timeout=self._timeout_s)
        answer.raise_for_status()
        return [GpuInfo.from_json(entry) for entry in answer.json()["gpus"]]

    def set_locked_clock(self, uuid: str, max_mhz: int) -> int:
        """Lock a GPU's SM clock upper bound; returns the bound as snapped to a supported step."""
        answer = self._session.post(
            f"{self._base}/sim/gpus/{uuid}/locked-clock", json={"max": max_mhz}, timeout=self._timeout_s
        )
        answer.raise_for_status()
        return int(answer.json()["locked_clock_mhz"])

    def reset_locked_clock(self, uuid: str) -> None:
        """Unlock a GPU's SM clock."""
        answer = self._session.delete(f"{self._base}/sim/gpus/{uuid}/locked-clock", timeout=self._timeout_s)
        answer.raise_for_status()

    def set_power_limit(self, uuid: str, watts: float) -> None:
        """Change a GPU's board power limit (HTTP 400 outside the board's range)."""
        answer = self._session.post(
            f"{self._base}/sim/gpus/{uuid}/power-limit", json={"watts": watts}, timeout=self._timeout_s
        )
        answer.raise_for_status()

    def reset_power_limit(self, uuid: str) -> None:
        """Return a GPU to its default board power limit."""
        answer = self._session.delete(f"{self._base}/sim/gpus/{uuid}/power-limit", timeout=self._timeout_s)
        answer.raise_for_status()

    def set_load(self, utilisation: float, mix: Mapping[str, float], *, uuid: str | None = None) -> None:
        """Run a fixed load from now on, on one GPU or (uuid None) on all of them."""
        body: dict[str, object] = {"utilisation": utilisation, "mix": dict(mix)}
        if uuid is not None:
            body["uuid"] = uuid
        answer = self._session.post(f"{self._base}/sim/load", json=body, timeout=self._timeout_s)
        answer.raise_for_status()
