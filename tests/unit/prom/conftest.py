"""A stub Prometheus for the prom tests: a real HTTP server on 127.0.0.1 answering canned JSON.

Answers are chosen by a substring of the query, so that one server can answer a power query and an SM clock
query differently. Every request is recorded (path, query parameters, headers) for the tests to inspect.
"""

from __future__ import annotations

import json
import math
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from climatik.prom import PromClient, PromSettings

EVAL_TIME = 1_750_000_000.0


#: A series as a scrape left it: labels (metric name excluded), value, and optionally how many seconds before
#: the evaluation time it was scraped (5 when left out).
Row = tuple[Mapping[str, str], float] | tuple[Mapping[str, str], float, float]


@dataclass
class Canned:
    status: int
    body: bytes
    content_type: str = "application/json"
    delay_s: float = 0.0


@dataclass
class Recorded:
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class StubPrometheus:
    """What the stub answers and what it was asked."""

    url: str = ""
    eval_time: float = EVAL_TIME
    routes: list[tuple[str, Canned]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def answer(self, body: object, *, status: int = 200, when: str = "", delay_s: float = 0.0) -> None:
        """Answer queries containing `when` (every query when empty) with `body` (JSON-encoded unless bytes)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        content_type = "application/json" if not isinstance(body, bytes) else "text/plain"
        self.routes.insert(0, (when, Canned(status, raw, content_type, delay_s)))

    def answer_vector(self, samples: Sequence[tuple[Mapping[str, str], float | str]], *, when: str = "") -> None:
        """Answer with a plain instant vector, every sample stamped with the evaluation time."""
        self.answer(vector(samples, self.eval_time), when=when)

    def answer_series(self, metric: str, rows: Sequence[Row]) -> None:
        """Answer queries for `metric` as Prometheus answers a value-and-scrape-time query over `rows`."""
        self.answer(sampled_vector(metric, rows, self.eval_time), when=metric)

    def pick(self, query: str) -> Canned:
        for when, canned in self.routes:
            if when in query:
                return canned
        return Canned(404, b'{"status":"error","errorType":"not_found","error":"no canned answer"}')

    def queries(self) -> list[str]:
        return [r.params.get("query", "") for r in self.requests]


def vector(samples: Sequence[tuple[Mapping[str, str], float | str]], eval_time: float = EVAL_TIME) -> dict[str, Any]:
    """A successful instant-vector answer."""
    result = [{"metric": dict(labels), "value": [eval_time, _fmt(v)]} for labels, v in samples]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def sampled_vector(metric: str, rows: Sequence[Row], eval_time: float = EVAL_TIME) -> dict[str, Any]:
    """The answer Prometheus gives to `with_sample_times(metric)`: each row once with its value (metric name
    kept) and once with its scrape time (metric name dropped by timestamp())."""
    samples: list[tuple[Mapping[str, str], float | str]] = []
    for labels, value, *_ in rows:
        samples.append(({"__name__": metric, **labels, "climatik_field": "value"}, value))
    for labels, _, *age in rows:
        samples.append(({**labels, "climatik_field": "timestamp"}, eval_time - (age[0] if age else 5.0)))
    return vector(samples, eval_time)


def _fmt(value: float | str) -> str:
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _handler(stub: StubPrometheus) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            stub.requests.append(Recorded(parts.path, params, dict(self.headers.items())))
            canned = stub.pick(params.get("query", ""))
            if canned.delay_s:
                stub.released.wait(canned.delay_s)
            try:
                self.send_response(canned.status)
                self.send_header("Content-Type", canned.content_type)
                self.send_header("Content-Length", str(len(canned.body)))
                self.end_headers()
                self.wfile.write(canned.body)
            except OSError:
                pass  # the client gave up (a timeout test); nothing to answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def serve(stub: StubPrometheus, tls: ssl.SSLContext | None = None) -> Iterator[StubPrometheus]:
    """Run `stub` on an ephemeral port until the generator is closed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    stub.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="stub-prometheus", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def prom() -> Iterator[StubPrometheus]:
    yield from serve(StubPrometheus())


@pytest.fixture
def client(prom: StubPrometheus) -> Iterator[PromClient]:
    c = PromClient(PromSettings(url=prom.url, connect_timeout_s=2, read_timeout_s=2))
    try:
        yield c
    finally:
        c.close()


@dataclass(frozen=True)
class TlsStub:
    """A stub served over HTTPS with a self-signed certificate for 127.0.0.1, and that certificate."""

    prom: StubPrometheus
    ca_file: str


@pytest.fixture
def tls_prom(tmp_path: Path) -> Iterator[TlsStub]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for stub in serve(StubPrometheus(), tls=context):
        yield TlsStub(stub, str(cert))
