"""A small Prometheus HTTP API client: instant queries over `requests`, with timeouts, TLS and bearer
tokens, turning every transport or protocol failure into a `PromError`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ReadTimeoutError

import climatik
from climatik.clock import Clock, SystemClock
from climatik.prom import queries
from climatik.prom.answer import QueryResult, decode_vector, error_for_status
from climatik.prom.auth import BearerTokenFile
from climatik.prom.errors import PromConnectionError, PromError, PromResponseError, PromTimeoutError


@dataclass(frozen=True)
class PromSettings:
    """Where Prometheus is and how to reach it.

    `url` is the base URL, path prefix included (e.g. `https://thanos.example/prometheus`). The token file is
    re-read when it changes. `ca_bundle` is a PEM file of CAs to trust instead of the system ones;
    `insecure_skip_verify` turns certificate checks off altogether.
    """

    url: str
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    bearer_token_file: str | None = None
    ca_bundle: str | None = None
    insecure_skip_verify: bool = False

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
    """A session that verifies TLS as the settings say and sends the bearer token when one is configured."""
    session = requests.Session()
    session.headers["Accept"] = "application/json"
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
        self._query_url = settings.url.rstrip("/") + "/api/v1/query"

    @property
    def settings(self) -> PromSettings:
        return self._settings

    def query(self, promql: str, *, at: float | None = None, name: str = "query") -> QueryResult:
        """Evaluate `promql` as an instant vector at unix time `at` (Prometheus' "now" when None)."""
        started = self._clock.now()
        try:
            body = self._get(promql, at)
            samples, warnings = decode_vector(body, promql)
        except PromError as exc:
            self._observe(name, exc.reason, started)
            raise
        duration = self._observe(name, "success", started)
        eval_time = samples[0].timestamp if samples else at
        return QueryResult(promql, samples, eval_time, duration, warnings)

    def query_with_sample_times(self, expr: str, *, at: float | None = None, name: str = "query") -> QueryResult:
        """Like `query`, but each sample's timestamp is when it was scraped rather than the evaluation time,
        so that the caller can tell a fresh reading from one Prometheus still carries forward."""
        result = self.query(queries.with_sample_times(expr), at=at, name=name)
        samples = queries.split_sample_times(result.samples, result.query)
        return QueryResult(result.query, samples, result.eval_time, result.duration_s, result.warnings)

    def close(self) -> None:
        self._session.close()

    def _get(self, promql: str, at: float | None) -> object:
        params: Mapping[str, str] = {"query": promql}
        if at is not None:
            params = {**params, "time": f"{at:.3f}"}
        timeout = (self._settings.connect_timeout_s, self._settings.read_timeout_s)
        try:
            # verify is passed per request because requests lets REQUESTS_CA_BUNDLE override a session's own.
            response = self._session.get(self._query_url, params=params, timeout=timeout, verify=self._session.verify)
        except requests.Timeout as exc:
            raise PromTimeoutError(f"Prometheus at {self._settings.url} timed out: {exc}", query=promql) from exc
        except requests.ConnectionError as exc:
            if _is_read_timeout(exc):
                raise PromTimeoutError(f"Prometheus at {self._settings.url} timed out: {exc}", query=promql) from exc
            what = "TLS handshake failed" if isinstance(exc, requests.exceptions.SSLError) else "cannot connect"
            raise PromConnectionError(f"{what} to {self._settings.url}: {exc}", query=promql) from exc
        except requests.RequestException as exc:
            raise PromConnectionError(f"request to {self._settings.url} failed: {exc}", query=promql) from exc
        if not 200 <= response.status_code < 300:
            raise error_for_status(response.status_code, response.text, promql)
        try:
            return response.json()
        except ValueError as exc:
            raise PromResponseError(
                f"answer is not JSON ({response.headers.get('Content-Type', 'no content type')}): "
                f"{response.text[:200]!r}",
                query=promql,
                status=response.status_code,
            ) from exc

    def _observe(self, name: str, outcome: str, started: float) -> float:
        duration = max(0.0, self._clock.now() - started)
        if self._observer is not None:
            self._observer.observe_query(name, outcome, duration)
        return duration


def _is_read_timeout(exc: requests.ConnectionError) -> bool:
    # A timeout while reading the body (after the headers) surfaces as a ConnectionError wrapping urllib3's.
    return any(isinstance(arg, ReadTimeoutError) for arg in exc.args)
