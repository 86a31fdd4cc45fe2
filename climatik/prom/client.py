"""A small Prometheus HTTP API client: instant queries over `requests`, with timeouts, TLS and bearer tokens
(re-read from their file when it changes), answers decoded into typed samples, every transport or protocol
failure turned into a `PromError`, and each query's latency recorded.

Prometheus encodes each sample as `[unix seconds, "value"]`, the value a string so that "NaN", "+Inf" and
"-Inf" survive JSON; they are decoded here as floats and judged by the caller. An instant query stamps every
sample with the evaluation time; the scrape times that tell a fresh reading from a stale one are asked for
separately (climatik.prom.sampler).

Besides instant queries it asks one index lookup, the values a label takes on a metric's series (`label_values`),
which costs Prometheus no sample reads.

Queries go as GET; one longer than `MAX_GET_QUERY` characters (a scope's names, climatik.prom.scope) goes as a
form-encoded POST, which the HTTP API accepts too, so that no proxy's URL limit cuts it.

Projected service-account tokens are rotated by the kubelet (an atomic swap of the mounted file), so a token
read once at start-up expires within the hour: the token file is checked on every request and read again only
when its identity (inode, size, modification time) changes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import msgspec
import requests
from prometheus_client import CollectorRegistry, Histogram
from requests.auth import AuthBase
from urllib3.exceptions import ReadTimeoutError

import climatik
from climatik.clock import Clock, SystemClock
from climatik.prom.errors import (
    PromAuthError,
    PromConnectionError,
    PromError,
    PromQueryError,
    PromResponseError,
    PromTimeoutError,
    PromUnavailableError,
)

#: The longest query sent in a URL; longer ones are POSTed.
MAX_GET_QUERY = 2048
# Prometheus' own error types that mean "try again later" rather than "the query is wrong".
_TRANSIENT_ERROR_TYPES = frozenset({"timeout", "canceled", "unavailable"})


class Sample(NamedTuple):
    """One series of an instant vector: its labels (`__name__` included when Prometheus kept it), its value
    and the timestamp Prometheus gave it (unix seconds). A named tuple: an answer holds one per series, and a
    tuple is built faster than a frozen dataclass."""

    labels: dict[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True)
class QueryResult:
    """The answer to one instant query.

    `eval_time` is the evaluation time Prometheus reported (None when the vector is empty and no time was
    asked for), `duration_s` the wall time the HTTP round trip took, `warnings` what Prometheus (or a
    Thanos/Mimir front end) said about partial results.
    """

    query: str
    samples: tuple[Sample, ...]
    eval_time: float | None
    duration_s: float
    warnings: tuple[str, ...] = field(default=())


class _Body(NamedTuple):
    """A successful answer's body, what its headers call it, and its HTTP status."""

    content: bytes
    content_type: str
    status: int


class _Series(msgspec.Struct):
    metric: dict[str, str]
    value: tuple[float, str]


class _Vector(msgspec.Struct):
    resultType: str  # noqa: N815 (Prometheus' field name)
    result: list[_Series]


class _VectorAnswer(msgspec.Struct):
    status: str
    data: _Vector
    warnings: list[str] = []


_VECTOR_ANSWER = msgspec.json.Decoder(_VectorAnswer)


def _decode_answer(body: _Body, query: str) -> tuple[tuple[Sample, ...], tuple[str, ...]]:
    """The samples and warnings of a successful instant-vector answer as Prometheus sends it (JSON bytes); raises
    a `PromError` otherwise.

    A well-formed answer is decoded straight into typed series (msgspec), which takes about half the CPU of
    parsing the JSON into Python objects and checking them after (an answer holds a series per GPU: 2 MB at
    1,000 nodes). Anything else goes through `decode_vector`, which says what is wrong with it."""
    try:
        answer = _VECTOR_ANSWER.decode(body.content)
        if answer.status == "success" and answer.data.resultType == "vector":
            samples = tuple(Sample(s.metric, float(s.value[1]), s.value[0]) for s in answer.data.result)
            return samples, tuple(answer.warnings)
    except (msgspec.DecodeError, ValueError):
        pass  # msgspec.ValidationError is a ValueError; so is a value that does not parse as a float
    return decode_vector(_json(body, query), query)


def decode_vector(body: object, query: str) -> tuple[tuple[Sample, ...], tuple[str, ...]]:
    """The samples and warnings of a successful instant-vector answer; raises a `PromError` otherwise."""
    if not isinstance(body, dict):
        raise PromResponseError(f"answer is not a JSON object: {_clip(body)}", query=query)
    if body.get("status") != "success":
        raise _status_error(body, query, status=0)
    data = body.get("data")
    if not isinstance(data, dict):
        raise PromResponseError("answer has no data object", query=query)
    result_type = data.get("resultType")
    if result_type != "vector":
        raise PromResponseError(f"expected an instant vector, got resultType {result_type!r}", query=query)
    result = data.get("result")
    if not isinstance(result, list):
        raise PromResponseError("answer's result is not a list", query=query)
    samples = tuple(_sample(item, query) for item in result)
    warnings = body.get("warnings") or []
    return samples, tuple(str(w) for w in warnings) if isinstance(warnings, list) else ()


def _json(body: _Body, query: str) -> object:
    try:
        return json.loads(body.content)
    except ValueError:
        raise PromResponseError(
            f"answer is not JSON ({body.content_type}): {body.content[:200].decode('utf-8', 'replace')!r}",
            query=query, status=body.status,
        ) from None


def decode_strings(body: object, query: str) -> frozenset[str]:
    """The strings of a successful answer whose data is a list of strings (a label's values)."""
    if not isinstance(body, dict):
        raise PromResponseError(f"answer is not a JSON object: {_clip(body)}", query=query)
    if body.get("status") != "success":
        raise _status_error(body, query, status=0)
    data = body.get("data")
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise PromResponseError(f"answer's data is not a list of strings: {_clip(data)}", query=query)
    return frozenset(data)


def error_for_status(status: int, text: str, query: str) -> PromError:
    """The project exception for a non-2xx answer, with Prometheus' errorType and error where the body has
    them."""
    error_type, error = _error_fields(text)
    detail = error or _clip(text) or "no body"
    message = f"HTTP {status} from Prometheus: {detail}"
    kwargs: dict[str, Any] = {"query": query, "status": status, "error_type": error_type, "error": error}
    if status in (401, 403):
        return PromAuthError(message, **kwargs)
    if status == 429 or status >= 500 or error_type in _TRANSIENT_ERROR_TYPES:
        return PromUnavailableError(message, **kwargs)
    if 400 <= status < 500:
        return PromQueryError(message, **kwargs)
    return PromResponseError(message, **kwargs)


def _status_error(body: dict[str, Any], query: str, *, status: int) -> PromError:
    error_type = str(body.get("errorType", ""))
    error = str(body.get("error", ""))
    if body.get("status") != "error":
        return PromResponseError(f"answer has status {body.get('status')!r}", query=query, status=status)
    cls = PromUnavailableError if error_type in _TRANSIENT_ERROR_TYPES else PromQueryError
    message = f"Prometheus answered {error_type or 'error'}: {error or 'no detail'}"
    return cls(message, query=query, status=status, error_type=error_type, error=error)


def _sample(item: Any, query: str) -> Sample:
    """One series of the answer: the shape Prometheus gives (`{"metric": {...}, "value": [time, "value"]}`) read
    directly, anything else through `_decode_sample`, which says what is wrong with it. An answer holds a series
    per GPU, so this runs thousands of times a cycle."""
    try:
        labels = item["metric"]
        pair = item["value"]
        if type(labels) is dict and type(pair) is list and len(pair) == 2 and type(pair[1]) is str:
            "".join(labels.values())  # raises TypeError unless every label value is a string
            return Sample(labels=labels, value=float(pair[1]), timestamp=float(pair[0]))
    except (TypeError, KeyError, ValueError):
        pass
    return _decode_sample(item, query)


def _decode_sample(item: object, query: str) -> Sample:
    if not isinstance(item, dict):
        raise PromResponseError(f"sample is not an object: {_clip(item)}", query=query)
    labels = item.get("metric")
    pair = item.get("value")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise PromResponseError(f"sample has no string labels: {_clip(item)}", query=query)
    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
        raise PromResponseError(f'sample value is not [time, "value"]: {_clip(item)}', query=query)
    try:
        timestamp = float(pair[0])
        value = float(pair[1])
    except (TypeError, ValueError):
        raise PromResponseError(f"sample value does not parse: {_clip(item)}", query=query) from None
    return Sample(labels=labels, value=value, timestamp=timestamp)


def _error_fields(text: str) -> tuple[str, str]:
    try:
        body = json.loads(text)
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("errorType", "")), str(body.get("error", ""))


def _clip(value: object, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class BearerTokenFile(AuthBase):
    """A `requests` auth that sends `Authorization: Bearer <token>` with the token taken from a file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int, int] | None = None
        self._token = ""

    @property
    def path(self) -> str:
        return self._path

    def token(self) -> str:
        """The current token; raises `PromAuthError` when the file cannot be read or is empty."""
        try:
            with self._lock:
                st = os.stat(self._path)
                identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                if identity != self._identity:
                    with open(self._path, encoding="utf-8") as f:
                        self._token = f.read().strip()
                    self._identity = identity
                token = self._token
        except OSError as exc:
            raise PromAuthError(f"cannot read bearer token file {self._path}: {exc.strerror or exc}") from exc
        if not token:
            raise PromAuthError(f"bearer token file {self._path} is empty")
        return token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token()}"
        return r


class PromQueryMetrics:
    """A `QueryObserver` recording `climatik_prom_query_duration_seconds{query, outcome}` in `registry`.

    Create one per registry and share it between clients.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._duration = Histogram(
            "climatik_prom_query_duration_seconds",
            "Time taken by Prometheus queries, by query and outcome (success or the error reason).",
            ["query", "outcome"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )

    def observe_query(self, name: str, outcome: str, seconds: float) -> None:
        self._duration.labels(query=name, outcome=outcome).observe(seconds)


@dataclass(frozen=True)
class PromSettings:
    """Where Prometheus is and how to reach it.

    `url` is the base URL, path prefix included (e.g. `https://thanos.example/prometheus`). The token file is
    re-read when it changes. `ca_bundle` is a PEM file of CAs to trust instead of the system ones;
    `insecure_skip_verify` turns certificate checks off altogether.

    `compress` asks for gzip-compressed answers. It is off by default: Prometheus normally runs in the cluster,
    next to the monitor, where bytes are cheap and Prometheus' CPU is what a cycle waits for; gzipping one
    1,000-node power answer (2 MB) costs it 30-50 ms of CPU, and the monitor more to unpack it. Turn it on for a
    Prometheus across a WAN or a metered managed service, where the answers (about 0.6 MB/s per 1,000 nodes at
    a 5 s interval, about a sixth of that compressed) cost more than the CPU.
    """

    url: str
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    bearer_token_file: str | None = None
    ca_bundle: str | None = None
    insecure_skip_verify: bool = False
    compress: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"Prometheus URL {self.url!r} must be http(s)://host[:port][/prefix]")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("Prometheus timeouts must be positive")
        if self.ca_bundle and self.insecure_skip_verify:
            raise ValueError("set either a CA bundle or insecure_skip_verify, not both")


class QueryObserver(Protocol):
    """Told how long each query took and how it ended (`success` or the `reason` of the error raised)."""

    def observe_query(self, name: str, outcome: str, seconds: float) -> None: ...


def make_session(settings: PromSettings) -> requests.Session:
    """A session that verifies TLS as the settings say, sends the bearer token when one is configured, and asks
    for compressed answers only when the settings do."""
    session = requests.Session()
    session.headers["Accept"] = "application/json"
    session.headers["Accept-Encoding"] = "gzip" if settings.compress else "identity"
    session.headers["User-Agent"] = f"climatik/{climatik.__version__}"
    session.verify = False if settings.insecure_skip_verify else (settings.ca_bundle or True)
    if settings.bearer_token_file:
        session.auth = BearerTokenFile(settings.bearer_token_file)
    return session


class PromClient:
    """Runs instant queries against one Prometheus (or a compatible API such as Thanos or Mimir).

    A session built elsewhere can be handed in (then it carries its own TLS and auth); otherwise one is made
    from the settings. Each call reports its latency to `observer` and returns it in the result.
    """

    def __init__(
        self,
        settings: PromSettings,
        *,
        session: requests.Session | None = None,
        observer: QueryObserver | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._session = session if session is not None else make_session(settings)
        self._observer = observer
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._api_url = settings.url.rstrip("/") + "/api/v1/"

    @property
    def settings(self) -> PromSettings:
        return self._settings

    def query(self, promql: str, *, at: float | None = None, name: str = "query",
              on_answer: Callable[[], None] | None = None) -> QueryResult:
        """Evaluate `promql` as an instant vector at unix time `at` (Prometheus' "now" when None).

        `on_answer` is called as soon as Prometheus starts answering (it has evaluated the query), before the
        answer is read and decoded: a caller can ask its next query then, and have Prometheus evaluate it while
        this answer is decoded here."""
        started = self._clock.now()
        params: dict[str, str | list[str]] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            body = self._get("query", params, promql, post=len(promql) > MAX_GET_QUERY, on_answer=on_answer)
            samples, warnings = _decode_answer(body, promql)
        except PromError as exc:
            self._observe(name, exc.reason, started)
            raise
        duration = self._observe(name, "success", started)
        eval_time = samples[0].timestamp if samples else at
        return QueryResult(promql, samples, eval_time, duration, warnings)

    def label_values(self, label: str, selectors: Sequence[str], *, start: float, end: float,
                     name: str = "labels") -> frozenset[str]:
        """The values `label` takes on the series `selectors` match between unix times `start` and `end`
        (`/api/v1/label/<label>/values` with `match[]`). Prometheus answers from its index, at a cost that grows
        with the label's values, not with the series, and reads no sample. One older than 2.24 ignores `match[]`
        and gives the label's values on every series: more values, never fewer."""
        started = self._clock.now()
        asked = f"values of label {label} on {' or '.join(selectors)}"
        params: dict[str, str | list[str]] = {"match[]": list(selectors), "start": f"{start:.3f}", "end": f"{end:.3f}"}
        try:
            body = self._get(f"label/{label}/values", params, asked, post=False)
            values = decode_strings(_json(body, asked), asked)
        except PromError as exc:
            self._observe(name, exc.reason, started)
            raise
        self._observe(name, "success", started)
        return values

    def close(self) -> None:
        self._session.close()

    def _get(self, endpoint: str, params: Mapping[str, str | list[str]], asked: str, *, post: bool,
             on_answer: Callable[[], None] | None = None) -> _Body:
        """The body of a successful answer of `endpoint` (under /api/v1/); `asked` names the request in errors.
        `on_answer` is called once a successful answer's headers are in, before its body is read."""
        url = self._api_url + endpoint
        timeout = (self._settings.connect_timeout_s, self._settings.read_timeout_s)
        try:
            # verify is passed per request because requests lets REQUESTS_CA_BUNDLE override a session's own.
            if post:
                response = self._session.post(url, data=params, timeout=timeout, verify=self._session.verify,
                                              stream=True)
            else:
                response = self._session.get(url, params=params, timeout=timeout, verify=self._session.verify,
                                             stream=True)
            try:
                if not 200 <= response.status_code < 300:
                    raise error_for_status(response.status_code, response.text, asked)
                if on_answer is not None:
                    on_answer()
                content = response.content
            finally:
                response.close()  # back to the pool once read; a connection left half read is dropped
        except requests.Timeout as exc:
            raise PromTimeoutError(f"Prometheus at {self._settings.url} timed out: {exc}", query=asked) from exc
        except requests.ConnectionError as exc:
            if _is_read_timeout(exc):
                raise PromTimeoutError(f"Prometheus at {self._settings.url} timed out: {exc}", query=asked) from exc
            what = "TLS handshake failed" if isinstance(exc, requests.exceptions.SSLError) else "cannot connect"
            raise PromConnectionError(f"{what} to {self._settings.url}: {exc}", query=asked) from exc
        except requests.RequestException as exc:
            raise PromConnectionError(f"request to {self._settings.url} failed: {exc}", query=asked) from exc
        return _Body(content, response.headers.get("Content-Type", "no content type"), response.status_code)

    def _observe(self, name: str, outcome: str, started: float) -> float:
        duration = max(0.0, self._clock.now() - started)
        if self._observer is not None:
            self._observer.observe_query(name, outcome, duration)
        return duration


def _is_read_timeout(exc: requests.ConnectionError) -> bool:
    # A timeout while reading the body (after the headers) surfaces as a ConnectionError wrapping urllib3's.
    return any(isinstance(arg, ReadTimeoutError) for arg in exc.args)
