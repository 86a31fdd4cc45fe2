"""The exceptions the rest of Climatik sees from Prometheus, whatever the transport said.

Callers branch on the class (retry later, fix the configuration, hold the last safe targets) and use `reason`
as the reason of a status condition; they never look at HTTP status codes or `requests` exceptions.
"""

from __future__ import annotations

from typing import ClassVar


class PromError(Exception):
    """A Prometheus query gave no usable answer.

    `query` is the PromQL sent, `status` the HTTP status (0 when no answer came back), `error_type` and
    `error` what Prometheus said in its error body (`bad_data`, `execution`, `timeout`, ...) where it said it.
    """

    reason: ClassVar[str] = "PrometheusError"

    def __init__(
        self,
        message: str,
        *,
        query: str = "",
        status: int = 0,
        error_type: str = "",
        error: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.query = query
        self.status = status
        self.error_type = error_type
        self.error = error


class PromUnavailableError(PromError):
    """No answer, or an answer saying "not now" (429, 5xx): worth retrying after a pause."""

    reason = "PrometheusUnavailable"


class PromConnectionError(PromUnavailableError):
    """The connection failed: refused, reset, name not resolved, or the TLS handshake was rejected."""

    reason = "PrometheusUnreachable"


class PromTimeoutError(PromUnavailableError):
    """Connecting or reading the answer took longer than the configured timeout."""

    reason = "PrometheusTimeout"


class PromQueryError(PromError):
    """Prometheus refused the query (4xx, or `status: error` in the body): the query or a configured metric,
    label or matcher is wrong. Retrying will not help until the configuration changes."""

    reason = "PrometheusQueryRejected"


class PromAuthError(PromError):
    """401 or 403: the bearer token is missing, expired or not allowed to query."""

    reason = "PrometheusForbidden"


class PromResponseError(PromError):
    """The answer was not what the HTTP API documents: not JSON, an unexpected result type, a malformed
    sample."""

    reason = "PrometheusBadResponse"


class PromNoDataError(PromError):
    """The query succeeded but returned no series where some are required (the exporter is not scraped,
    or a metric or label name is misconfigured)."""

    reason = "PrometheusNoData"
