"""Bearer tokens and TLS: what reaches the server, and what happens when credentials are wrong."""

from __future__ import annotations

import os

import pytest
import requests
import urllib3

from climatik.prom import (
    PromAuthError,
    PromClient,
    PromConnectionError,
    PromSettings,
    make_session,
)

EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}


def _client(url: str, **settings: object) -> PromClient:
    return PromClient(PromSettings(url=url, **settings))  # type: ignore[arg-type]


def test_the_bearer_token_from_the_file_is_sent(prom, tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    prom.answer(EMPTY)
    client = _client(prom.url, bearer_token_file=str(token))
    try:
        client.query("up")
    finally:
        client.close()

    assert prom.requests[0].headers["Authorization"] == "Bearer first-token"


def test_a_rotated_token_is_picked_up_on_the_next_query(prom, tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token")
    prom.answer(EMPTY)
    client = _client(prom.url, bearer_token_file=str(token))
    try:
        client.query("up")
        # The kubelet swaps the projected file atomically: a new inode with new content.
        rotated = tmp_path / "token.new"
        rotated.write_text("second-token")
        os.replace(rotated, token)
        client.query("up")
    finally:
        client.close()

    assert [r.headers["Authorization"] for r in prom.requests] == ["Bearer first-token", "Bearer second-token"]


def test_a_missing_token_file_fails_as_an_auth_error_without_querying(prom, tmp_path):
    prom.answer(EMPTY)
    client = _client(prom.url, bearer_token_file=str(tmp_path / "absent"))
    try:
        with pytest.raises(PromAuthError, match="cannot read bearer token file"):
            client.query("up")
    finally:
        client.close()

    assert prom.requests == []


def test_an_empty_token_file_is_an_auth_error(prom, tmp_path):
    token = tmp_path / "token"
    token.write_text("\n")
    client = _client(prom.url, bearer_token_file=str(token))
    try:
        with pytest.raises(PromAuthError, match="empty"):
            client.query("up")
    finally:
        client.close()


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_an_auth_error(prom, client, status):
    prom.answer(b"Unauthorized", status=status)

    with pytest.raises(PromAuthError) as caught:
        client.query("up")

    assert caught.value.status == status
    assert caught.value.reason == "PrometheusForbidden"


def test_the_ca_bundle_makes_a_private_ca_trusted(tls_prom):
    tls_prom.prom.answer(EMPTY)
    client = _client(tls_prom.prom.url, ca_bundle=tls_prom.ca_file)
    try:
        assert client.query("up").samples == ()
    finally:
        client.close()


def test_without_the_ca_bundle_the_certificate_is_refused(tls_prom):
    tls_prom.prom.answer(EMPTY)
    client = _client(tls_prom.prom.url)
    try:
        with pytest.raises(PromConnectionError, match="TLS handshake failed"):
            client.query("up")
    finally:
        client.close()

    assert tls_prom.prom.requests == []


def test_insecure_skip_verify_accepts_any_certificate_and_says_so(tls_prom):
    tls_prom.prom.answer(EMPTY)
    client = _client(tls_prom.prom.url, insecure_skip_verify=True)
    try:
        with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
            client.query("up")
    finally:
        client.close()

    assert len(tls_prom.prom.requests) == 1


def test_ca_bundle_and_token_reach_the_session_the_factory_builds(tmp_path):
    token = tmp_path / "token"
    token.write_text("t")

    session = make_session(PromSettings(url="https://p", ca_bundle="/etc/ca.pem", bearer_token_file=str(token)))
    insecure = make_session(PromSettings(url="https://p", insecure_skip_verify=True))
    default = make_session(PromSettings(url="https://p"))

    prepared = session.prepare_request(requests.Request("GET", "https://p/api/v1/query"))
    assert prepared.headers["Authorization"] == "Bearer t"
    assert (session.verify, insecure.verify, default.verify) == ("/etc/ca.pem", False, True)
    assert "Authorization" not in default.prepare_request(requests.Request("GET", "https://p")).headers
    for s in (session, insecure, default):
        s.close()


def test_answers_are_asked_uncompressed_unless_compression_is_on(prom):
    prom.answer(EMPTY)
    for compress in (False, True):
        client = _client(prom.url, compress=compress)
        try:
            client.query("up")
        finally:
            client.close()

    assert [r.headers["Accept-Encoding"] for r in prom.requests] == ["identity", "gzip"]


def test_a_session_handed_in_is_used_as_it_is(prom):
    prom.answer(EMPTY)
    session = requests.Session()
    session.headers["X-Scope-OrgID"] = "team-a"
    client = PromClient(PromSettings(url=prom.url), session=session)
    try:
        client.query("up")
    finally:
        client.close()

    assert prom.requests[0].headers["X-Scope-OrgID"] == "team-a"
