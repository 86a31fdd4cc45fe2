"""The few exceptions the rest of Climatik sees from the API server, whatever the transport said.

Callers branch on these (a conflict is retried, a missing object is ignored, a gone resourceVersion means
relist) and never on HTTP status codes or on the Kubernetes client's own exception classes.
"""

from __future__ import annotations

import json
import math
from typing import Any


class KubeError(Exception):
    """An API call failed. `status` is the HTTP status (0 when no answer came back), `reason` the
    Kubernetes `Status.reason` (e.g. "Conflict") where the server gave one, and `retry_after` the seconds the
    server asked the client to wait before trying again (a Retry-After header or `details.retryAfterSeconds`
    on a 429 or 5xx), or None."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class NotFoundError(KubeError):
    """404: the object (or its namespace, or the resource type) does not exist."""


class ConflictError(KubeError):
    """409: the resourceVersion sent is stale, or the object already exists on create."""


class AlreadyExistsError(ConflictError):
    """409 on create: an object with that name exists."""


class GoneError(KubeError):
    """410: the resourceVersion asked for has been compacted away; the caller must relist."""


class ForbiddenError(KubeError):
    """401 or 403: the identity may not do this. Retrying will not help until RBAC changes."""


class InvalidError(KubeError):
    """400 or 422: the server rejected the object or the request itself. Retrying will not help."""


class UnavailableError(KubeError):
    """The server could not be reached, timed out, or answered 429/5xx. Worth retrying after a pause."""


def error_for_status(
    status: int, body: str | bytes | None = None, *, fallback: str = "", retry_after: float | None = None
) -> KubeError:
    """The project exception for an HTTP status and a (possibly empty, possibly non-JSON) Status body.

    `retry_after` (from a Retry-After header) wins over the body's `details.retryAfterSeconds`; either is kept
    only on a 429 or 5xx, where client-go honours it too.
    """
    message, reason, body_retry_after = _parse_status_body(body)
    message = message or fallback or f"HTTP {status}"
    cls: type[KubeError]
    if status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = AlreadyExistsError if reason == "AlreadyExists" else ConflictError
    elif status == 410:
        cls = GoneError
    elif status in (401, 403):
        cls = ForbiddenError
    elif status in (400, 422):
        cls = InvalidError
    elif status in {0, 429} or status >= 500:
        cls = UnavailableError
    else:
        cls = KubeError
    if cls is not UnavailableError or status == 0:
        retry_after = None
    elif retry_after is None:
        retry_after = body_retry_after
    return cls(message, status=status, reason=reason, retry_after=retry_after)


def error_for_status_object(obj: dict[str, Any]) -> KubeError:
    """The project exception for a `Status` object, as carried by a watch ERROR event."""
    code = obj.get("code")
    status = code if isinstance(code, int) else 0
    return error_for_status(status, json.dumps(obj), fallback=str(obj.get("message", "")))


def parse_retry_after(value: object) -> float | None:
    """Seconds from a Retry-After value (delta-seconds; the HTTP-date form is not used by Kubernetes)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _parse_status_body(body: str | bytes | None) -> tuple[str, str, float | None]:
    if not body:
        return "", "", None
    try:
        obj = json.loads(body)
    except (ValueError, TypeError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return text[:500], "", None
    if not isinstance(obj, dict):
        return "", "", None
    details = obj.get("details")
    retry_after = parse_retry_after(details.get("retryAfterSeconds")) if isinstance(details, dict) else None
    return str(obj.get("message", "")), str(obj.get("reason", "")), retry_after
