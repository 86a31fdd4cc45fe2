"""A stub Prometheus for the prom tests: a real HTTP server on 127.0.0.1 answering canned JSON.

Answers are chosen by a substring of the query, so that one server can answer a power query and an SM clock
query differently. Every request (GET, or a POSTed form) is recorded (path, query parameters, headers) for the
tests to inspect.

`answer_series` stores a metric's series as a scrape left them, answers the values their labels take
(`/api/v1/label/<name>/values`), and answers the query shapes the sampler sends
(climatik.prom.sampler) the way Prometheus evaluates them: values aggregated with `max by (...)`, the distinct
scrape times per target from `count_values`, the scrape time of each series from `timestamp()`, restricted to
the targets an `instance` matcher names. Other matchers (a scope's namespaces and pods) are not applied: the
real Prometheus in the integration tests checks those.
"""

from __future__ import annotations

import json
import math
import re
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
    #: Seconds the body may wait, after the headers are sent, for `body_released` (values answers only).
    body_delay_s: float = 0.0


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
    routes: list[tuple[str, Canned | Emulated]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    body_released: threading.Event = field(default_factory=threading.Event)

    def answer(self, body: object, *, status: int = 200, when: str = "", delay_s: float = 0.0) -> None:
        """Answer queries containing `when` (every query when empty) with `body` (JSON-encoded unless bytes)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        content_type = "application/json" if not isinstance(body, bytes) else "text/plain"
        self.routes.insert(0, (when, Canned(status, raw, content_type, delay_s)))

    def answer_vector(self, samples: Sequence[tuple[Mapping[str, str], float | str]], *, when: str = "") -> None:
        """Answer with a plain instant vector, every sample stamped with the evaluation time."""
        self.answer(vector(samples, self.eval_time), when=when)

    def answer_series(self, metric: str, rows: Sequence[Row], *, held: bool = False, body_held: bool = False) -> None:
        """Answer the sampler's queries for `metric` as Prometheus would over the series `rows`; `held` answers
        only once `released` is set, `body_held` sends the values answers' headers at once and their body only
        once `body_released` is set (5 s at most each)."""
        emulated = Emulated(metric, list(rows), self.eval_time, 5.0 if held else 0.0, 5.0 if body_held else 0.0)
        self.routes.insert(0, (metric, emulated))

    def pick_label_values(self, label: str, match: str) -> Canned:
        """The values `label` takes on the series of the metric `match` selects (`/api/v1/label/<label>/values`),
        as Prometheus' index gives them; a canned answer routed under "labels" overrides it."""
        for when, canned in self.routes:
            if when == "labels" and isinstance(canned, Canned):
                return canned
            if isinstance(canned, Emulated) and match.startswith(canned.metric):
                values = sorted({labels[label] for labels, *_ in canned.rows if labels.get(label)})
                return Canned(200, json.dumps({"status": "success", "data": values}).encode())
        return Canned(200, b'{"status":"success","data":[]}')

    def pick(self, query: str) -> Canned:
        if query == "vector(time())":  # Prometheus' own time
            return Canned(200, json.dumps(vector([({}, self.eval_time)], self.eval_time)).encode())
        for when, canned in self.routes:
            if when in query:
                return canned.evaluate(query) if isinstance(canned, Emulated) else canned
        return Canned(404, b'{"status":"error","errorType":"not_found","error":"no canned answer"}')

    def queries(self) -> list[str]:
        """The PromQL of every query asked (label lookups left out)."""
        return [r.params["query"] for r in self.requests if "query" in r.params]

    def lookups(self) -> list[Recorded]:
        """The label lookups asked."""
        return [r for r in self.requests if r.path.endswith("/values")]


def vector(samples: Sequence[tuple[Mapping[str, str], float | str]], eval_time: float = EVAL_TIME) -> dict[str, Any]:
    """A successful instant-vector answer."""
    result = [{"metric": dict(labels), "value": [eval_time, _fmt(v)]} for labels, v in samples]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@dataclass
class Emulated:
    """A metric's series, answering the sampler's query shapes as Prometheus evaluates them."""

    metric: str
    rows: list[Row]
    eval_time: float
    delay_s: float = 0.0
    body_delay_s: float = 0.0

    def evaluate(self, query: str) -> Canned:
        series = [(dict(labels), value, self.eval_time - (age[0] if age else 5.0))
                  for labels, value, *age in self.rows]
        series = [s for s in series if _instance_matches(query, s[0])]
        if query.startswith("count("):
            samples: Answer = [({}, float(len(series)))] if series else []
        elif query.startswith("count_values"):
            samples = _count_times(query, series)
        elif "timestamp(" in query:
            samples = _aggregate(query, [(labels, scraped) for labels, _, scraped in series])
        else:
            named = [({"__name__": self.metric, **labels}, value) for labels, value, _ in series]
            samples = _aggregate(query, named)
        body_delay = self.body_delay_s if query.startswith("max by") and "timestamp(" not in query else 0.0
        return Canned(200, json.dumps(vector(samples, self.eval_time)).encode(), delay_s=self.delay_s,
                      body_delay_s=body_delay)


def _instance_matches(query: str, labels: Mapping[str, str]) -> bool:
    found = re.search(r'instance(=~|=)"((?:[^"\\]|\\.)*)"', query)
    if found is None:
        return True
    values = [v.replace("\\\\", "") for v in found.group(2).split("|")]
    return labels.get("instance", "") in values


def _by(query: str, aggregation: str) -> list[str] | None:
    found = re.match(rf"{aggregation} by \(([^)]*)\)", query)
    return None if found is None else [name.strip() for name in found.group(1).split(",") if name.strip()]


#: Samples of an answer: labels and value.
Answer = list[tuple[Mapping[str, str], float | str]]


def _aggregate(query: str, series: list[tuple[dict[str, str], float | str]]) -> Answer:
    by = _by(query, "max")
    if by is None:
        return [(labels, value) for labels, value in series]
    groups: dict[tuple[tuple[str, str], ...], float] = {}
    for labels, value in series:
        key = tuple(sorted((k, v) for k, v in labels.items() if k in by and v))
        number = float(value)
        # Prometheus' max: a NaN gives way to any number, and stays only when the group has nothing else.
        if key not in groups or groups[key] < number or math.isnan(groups[key]):
            groups[key] = number
    return [(dict(key), value) for key, value in groups.items()]


def _count_times(query: str, series: list[tuple[dict[str, str], float | str, float]]) -> Answer:
    by = _by(query, "count_values") or []
    counts: dict[tuple[tuple[tuple[str, str], ...], float], int] = {}
    for labels, _, scraped in series:
        key = (tuple(sorted((k, v) for k, v in labels.items() if k in by and v)), scraped)
        counts[key] = counts.get(key, 0) + 1
    return [({**dict(key), "climatik_scrape_time": repr(scraped)}, float(n)) for (key, scraped), n in counts.items()]


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
            self._answer(parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            self._answer(urlsplit(self.path).path, {k: v[-1] for k, v in parse_qs(body).items()})

        def _answer(self, path: str, params: dict[str, str]) -> None:
            stub.requests.append(Recorded(path, params, dict(self.headers.items())))
            label = re.fullmatch(r".*/api/v1/label/([^/]+)/values", path)
            if label is not None:
                canned = stub.pick_label_values(label.group(1), params.get("match[]", ""))
            else:
                canned = stub.pick(params.get("query", ""))
            if canned.delay_s:
                stub.released.wait(canned.delay_s)
            try:
                self.send_response(canned.status)
                self.send_header("Content-Type", canned.content_type)
                self.send_header("Content-Length", str(len(canned.body)))
                self.end_headers()
                if canned.body_delay_s:
                    self.wfile.flush()
                    stub.body_released.wait(canned.body_delay_s)
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
        stub.body_released.set()
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
