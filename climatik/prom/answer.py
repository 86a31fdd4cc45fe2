"""Decoding Prometheus HTTP API answers into typed samples, and HTTP failures into project exceptions.

Prometheus encodes each sample as `[unix seconds, "value"]`, the value a string so that "NaN", "+Inf" and
"-Inf" survive JSON; they are decoded here as floats and judged by the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from climatik.prom.errors import (
    PromAuthError,
    PromError,
    PromQueryError,
    PromResponseError,
    PromUnavailableError,
)

# Prometheus' own error types that mean "try again later" rather than "the query is wrong".
_TRANSIENT_ERROR_TYPES = frozenset({"timeout", "canceled", "unavailable"})


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels (`__name__` included when Prometheus kept it), its value
    and the timestamp Prometheus gave it (unix seconds)."""

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
    samples = tuple(_decode_sample(item, query) for item in result)
    warnings = body.get("warnings") or []
    return samples, tuple(str(w) for w in warnings) if isinstance(warnings, list) else ()


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
    return Sample(labels=dict(labels), value=value, timestamp=timestamp)


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
