"""API failures become the project's few exceptions, whatever form the server's answer took."""

from __future__ import annotations

import json

import pytest

from climatik.kube.errors import (
    AlreadyExistsError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    KubeError,
    NotFoundError,
    UnavailableError,
    error_for_status,
    error_for_status_object,
    parse_retry_after,
)


def status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "code": code, "reason": reason, "message": message}).encode()


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (404, "NotFound", NotFoundError),
        (409, "Conflict", ConflictError),
        (409, "AlreadyExists", AlreadyExistsError),
        (410, "Expired", GoneError),
        (401, "Unauthorized", ForbiddenError),
        (403, "Forbidden", ForbiddenError),
        (400, "BadRequest", InvalidError),
        (422, "Invalid", InvalidError),
        (429, "TooManyRequests", UnavailableError),
        (500, "InternalError", UnavailableError),
        (503, "ServiceUnavailable", UnavailableError),
        (0, "", UnavailableError),
        (418, "Teapot", KubeError),
    ],
)
def test_statuses_map_to_exceptions(status: int, reason: str, expected: type[KubeError]) -> None:
    error = error_for_status(status, status_body(status, reason, "why"))
    assert type(error) is expected
    assert error.status == status
    assert error.message == "why"


def test_an_already_exists_is_also_a_conflict() -> None:
    assert isinstance(error_for_status(409, status_body(409, "AlreadyExists", "x")), ConflictError)


def test_a_non_json_body_still_gives_a_useful_message() -> None:
    error = error_for_status(502, b"<html>bad gateway</html>")
    assert isinstance(error, UnavailableError)
    assert "bad gateway" in error.message
    assert error_for_status(503, None, fallback="GET /x: HTTP 503").message == "GET /x: HTTP 503"


def test_an_error_event_inside_a_watch_is_a_gone_when_its_code_is_410() -> None:
    error = error_for_status_object({"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})
    assert isinstance(error, GoneError)
    assert error.message == "too old"


def test_a_retry_after_is_kept_only_where_retrying_is_the_answer() -> None:
    throttled = {"kind": "Status", "code": 429, "reason": "TooManyRequests", "message": "storage is (re)initializing",
                 "details": {"retryAfterSeconds": 1}}
    assert error_for_status(429, json.dumps(throttled)).retry_after == 1.0
    assert error_for_status(503, b"", retry_after=5.0).retry_after == 5.0  # from the Retry-After header
    assert error_for_status(429, json.dumps(throttled), retry_after=2.0).retry_after == 2.0  # the header wins
    assert error_for_status(503, b"").retry_after is None
    assert error_for_status(409, json.dumps({**throttled, "code": 409}), retry_after=1.0).retry_after is None
    assert error_for_status_object(throttled).retry_after == 1.0  # an ERROR event inside a watch


@pytest.mark.parametrize("value", ["1", "0.5", 2, "soon", "-1", None, "nan", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_only_a_sane_number_of_seconds_is_a_retry_after(value: object) -> None:
    expected = {"1": 1.0, "0.5": 0.5, 2: 2.0}.get(value)  # type: ignore[call-overload]
    assert parse_retry_after(value) == expected
