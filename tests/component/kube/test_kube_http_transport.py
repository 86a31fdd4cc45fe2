"""The client's HTTP layer against a scripted local server: the traps of real watch streams and error bodies.

A stdlib HTTP server plays the API server: it sends chunked watch bodies with blank keep-alive lines, goes
silent mid-stream (a hung socket), answers 410 and 409 with Status bodies, 502 with HTML, and 429/503 with a
Retry-After (in the header, or only in the Status body's details, as a starting kube-apiserver does).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from climatik.kube.client import CONFIG_MAPS, KubeClient, connect
from climatik.kube.errors import ConflictError, GoneError, UnavailableError

TOKEN = "test-token"


def event(kind: str, name: str, rv: str) -> bytes:
    obj = {"kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[tuple[str, str, dict[str, str], bytes]]
    hang: threading.Event


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._note(b"")
        if self.path.startswith("/api/v1/namespaces/starting/"):
            self._json(503, {"kind": "Status", "code": 503, "reason": "ServiceUnavailable",
                             "message": "the request has been made before all known HTTP paths have been installed",
                             "details": {"retryAfterSeconds": 5}})
        elif "watch=true" not in self.path:
            self._json(200, {"kind": "ConfigMapList", "metadata": {"resourceVersion": "5"}, "items": []})
        elif "resourceVersion=1&" in self.path or self.path.endswith("resourceVersion=1"):
            self._json(410, {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})
        else:
            self._stream()

    def do_DELETE(self) -> None:
        self._note(self.rfile.read(int(self.headers["Content-Length"])))
        self._json(429, {"kind": "Status", "code": 429, "reason": "TooManyRequests", "message": "slow down"},
                   headers={"Retry-After": "3"})

    def do_PUT(self) -> None:
        self._note(self.rfile.read(int(self.headers["Content-Length"])))
        self._json(409, {"kind": "Status", "code": 409, "reason": "Conflict", "message": "modified"})

    def do_PATCH(self) -> None:
        self._note(self.rfile.read(int(self.headers["Content-Length"])))
        body = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in (b"\n", event("ADDED", "a", "6"), b"\n\n", event("BOOKMARK", "", "7")[:20],
                      event("BOOKMARK", "", "7")[20:]):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.server.hang.wait(10)  # then say nothing more: a hung connection

    def _json(self, code: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _note(self, body: bytes) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.requests.append((self.command, self.path, headers, body))

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server(("127.0.0.1", 0), Handler)
    server.requests = []
    server.hang = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.hang.set()
    server.shutdown()
    server.server_close()


def kubeconfig(tmp_path: Path, port: int) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "u"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def client(server: Server, tmp_path: Path) -> Iterator[KubeClient]:
    with connect(kubeconfig(tmp_path, server.server_address[1]), timeout=2) as client:
        yield client


def test_a_watch_survives_blank_lines_and_split_events_then_a_hung_socket_times_out(client: KubeClient) -> None:
    stream = client.watch(CONFIG_MAPS, namespace="ns", resource_version="5", timeout_seconds=60, read_timeout=0.5)
    seen = []
    began = time.monotonic()
    with pytest.raises(UnavailableError):
        for ev in stream:
            seen.append((ev.type, ev.object["metadata"]["resourceVersion"]))
    assert seen == [("ADDED", "6"), ("BOOKMARK", "7")]
    assert time.monotonic() - began < 5


def test_watch_requests_ask_for_bookmarks_a_server_timeout_and_carry_the_token(
    client: KubeClient, server: Server
) -> None:
    stream = client.watch(CONFIG_MAPS, namespace="ns", resource_version="5", timeout_seconds=321, read_timeout=0.3)
    with pytest.raises(UnavailableError):
        list(stream)
    _, path, headers, _ = server.requests[-1]
    assert path.startswith("/api/v1/namespaces/ns/configmaps?")
    for part in ("watch=true", "resourceVersion=5", "timeoutSeconds=321", "allowWatchBookmarks=true"):
        assert part in path
    assert headers["authorization"] == f"Bearer {TOKEN}"


def test_closing_a_watch_from_another_thread_ends_it_quietly(client: KubeClient) -> None:
    stream = client.watch(CONFIG_MAPS, namespace="ns", resource_version="5", timeout_seconds=60, read_timeout=30)
    threading.Timer(0.2, stream.close).start()
    began = time.monotonic()
    events = list(stream)
    assert len(events) == 2
    assert time.monotonic() - began < 5


def test_a_watch_from_a_compacted_version_is_gone(client: KubeClient) -> None:
    with pytest.raises(GoneError):
        client.watch(CONFIG_MAPS, namespace="ns", resource_version="1", timeout_seconds=60, read_timeout=5)


def test_error_bodies_become_project_errors(client: KubeClient, server: Server) -> None:
    body = {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "3"}}
    with pytest.raises(ConflictError, match="modified"):
        client.config_maps.replace(body)
    with pytest.raises(UnavailableError, match="Bad Gateway"):
        client.config_maps.patch("a", {"data": {"x": "1"}}, namespace="ns")
    method, _, headers, sent = server.requests[-1]
    assert (method, headers["content-type"]) == ("PATCH", "application/merge-patch+json")
    assert json.loads(sent) == {"data": {"x": "1"}}


def test_an_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with connect(kubeconfig(tmp_path, port), timeout=1, connect_timeout=0.5) as client, \
            pytest.raises(UnavailableError):
        client.config_maps.get("a", namespace="ns")


def test_a_retry_after_travels_with_the_error_from_the_header_or_the_status_details(client: KubeClient) -> None:
    with pytest.raises(UnavailableError, match="slow down") as throttled:
        client.config_maps.delete("a", namespace="ns")
    assert throttled.value.retry_after == 3.0
    with pytest.raises(UnavailableError, match="HTTP paths") as starting:
        client.list(CONFIG_MAPS, namespace="starting")
    assert starting.value.retry_after == 5.0
    with pytest.raises(ConflictError) as conflict:
        client.config_maps.replace({"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "3"}})
    assert conflict.value.retry_after is None
