"""The Prometheus client against a stub server: what a good answer gives, and how each bad answer fails."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry

from climatik.prom import (
    PromClient,
    PromConnectionError,
    PromError,
    PromQueryError,
    PromQueryMetrics,
    PromResponseError,
    PromSettings,
    PromTimeoutError,
    PromUnavailableError,
)
from climatik.prom import client as prom_client
from climatik.prom.client import decode_vector


class SteppingClock:
    """A clock that moves `step` seconds each time it is read, so that a query takes exactly `step`."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.t = 0.0

    def now(self) -> float:
        self.t += self.step
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def wall(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def observe_query(self, name: str, outcome: str, seconds: float) -> None:
        self.calls.append((name, outcome, seconds))


def test_instant_query_returns_typed_samples_at_the_time_asked(prom, client):
    prom.answer_vector([({"__name__": "up", "job": "dcgm"}, "1"), ({"__name__": "up", "job": "kepler"}, "0")])

    result = client.query("up", at=1_750_000_123.5)

    assert [(s.labels["job"], s.value, s.timestamp) for s in result.samples] == [
        ("dcgm", 1.0, prom.eval_time),
        ("kepler", 0.0, prom.eval_time),
    ]
    assert prom.requests[0].path == "/api/v1/query"
    assert prom.requests[0].params == {"query": "up", "time": "1750000123.500"}


def test_on_answer_is_told_when_a_successful_answer_starts_and_never_for_an_error(prom, client):
    told: list[str] = []
    prom.answer_vector([({"__name__": "up"}, "1")], when="up")
    prom.answer({"status": "error", "errorType": "internal", "error": "tsdb corrupted"}, status=500, when="down")

    result = client.query("up", on_answer=lambda: told.append("up"))
    with pytest.raises(PromUnavailableError):
        client.query("down", on_answer=lambda: told.append("down"))

    assert told == ["up"] and result.samples[0].value == 1.0


def test_without_a_time_prometheus_picks_now(prom, client):
    prom.answer_vector([({"__name__": "up"}, "1")])

    result = client.query("up")

    assert "time" not in prom.requests[0].params
    assert result.eval_time == prom.eval_time


def test_an_empty_vector_is_an_empty_result_not_an_error(prom, client):
    prom.answer_vector([])

    result = client.query("up", at=1_750_000_000.0)

    assert result.samples == ()
    assert result.eval_time == 1_750_000_000.0


def test_label_values_ask_the_index_for_the_series_a_selector_matches_in_a_window(prom):
    prom.answer({"status": "success", "data": ["ml", "web"]}, when="labels")
    recorder = Recorder()
    client = PromClient(PromSettings(url=prom.url), observer=recorder)

    values = client.label_values("namespace", ['DCGM_FI_DEV_POWER_USAGE{job="dcgm"}'], start=1_750_000_000.0,
                                 end=1_750_000_300.0, name="gpu_power_labels")

    assert values == {"ml", "web"}
    assert prom.requests[0].path == "/api/v1/label/namespace/values"
    assert prom.requests[0].params == {"match[]": 'DCGM_FI_DEV_POWER_USAGE{job="dcgm"}', "start": "1750000000.000",
                                       "end": "1750000300.000"}
    assert [(name, outcome) for name, outcome, _ in recorder.calls] == [("gpu_power_labels", "success")]


@pytest.mark.parametrize("body", [{"status": "success", "data": {"resultType": "vector"}},
                                  {"status": "success", "data": ["ml", 3]}])
def test_label_values_that_are_not_a_list_of_strings_are_a_response_error(prom, client, body):
    prom.answer(body, when="labels")

    with pytest.raises(PromResponseError, match="not a list of strings") as caught:
        client.label_values("namespace", ["up"], start=0.0, end=1.0)
    assert caught.value.query == "values of label namespace on up"


def test_url_path_prefix_is_kept(prom):
    prom.answer_vector([({"__name__": "up"}, "1")])
    client = PromClient(PromSettings(url=prom.url + "/prometheus/"))
    try:
        client.query("up")
    finally:
        client.close()

    assert prom.requests[0].path == "/prometheus/api/v1/query"


def test_prometheus_warnings_are_passed_on(prom, client):
    answer = {"status": "success", "data": {"resultType": "vector", "result": []}, "warnings": ["partial"]}
    prom.answer(answer)

    assert client.query("up").warnings == ("partial",)


def test_http_500_is_unavailable_with_the_error_prometheus_gave(prom, client):
    prom.answer({"status": "error", "errorType": "internal", "error": "tsdb corrupted"}, status=500)

    with pytest.raises(PromUnavailableError) as caught:
        client.query("up")

    assert caught.value.status == 500
    assert caught.value.error == "tsdb corrupted"
    assert "tsdb corrupted" in str(caught.value)


def test_http_500_with_an_html_body_still_says_what_came_back(prom, client):
    prom.answer(b"<html>bad gateway</html>", status=502)

    with pytest.raises(PromUnavailableError, match="bad gateway") as caught:
        client.query("up")

    assert caught.value.status == 502


def test_http_400_bad_data_is_a_rejected_query_with_the_parse_error(prom, client):
    prom.answer(
        {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'},
        status=400,
    )

    with pytest.raises(PromQueryError) as caught:
        client.query("DCGM_FI_DEV_POWER_USAGE{")

    assert caught.value.status == 400
    assert caught.value.error_type == "bad_data"
    assert "unexpected" in caught.value.error
    assert caught.value.query == "DCGM_FI_DEV_POWER_USAGE{"


def test_http_422_execution_error_is_a_rejected_query(prom, client):
    prom.answer({"status": "error", "errorType": "execution", "error": "many-to-many matching"}, status=422)

    with pytest.raises(PromQueryError, match="many-to-many"):
        client.query("a / b")


def test_http_503_query_timeout_is_worth_retrying(prom, client):
    prom.answer({"status": "error", "errorType": "timeout", "error": "query timed out"}, status=503)

    with pytest.raises(PromUnavailableError) as caught:
        client.query("up")

    assert caught.value.error_type == "timeout"


def test_status_error_in_a_200_answer_is_a_rejected_query(prom, client):
    prom.answer({"status": "error", "errorType": "bad_data", "error": "invalid parameter"})

    with pytest.raises(PromQueryError, match="invalid parameter") as caught:
        client.query("up")

    assert caught.value.error_type == "bad_data"


def test_a_body_that_is_not_json_is_a_bad_response(prom, client):
    prom.answer(b"# HELP up\nup 1\n")

    with pytest.raises(PromResponseError, match="not JSON"):
        client.query("up")


@pytest.mark.parametrize(
    "data",
    [
        {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "1"]]}]},
        {"resultType": "scalar", "result": [1, "1"]},
        {"resultType": "string", "result": [1, "x"]},
    ],
)
def test_a_result_that_is_not_an_instant_vector_is_a_bad_response(prom, client, data):
    prom.answer({"status": "success", "data": data})

    with pytest.raises(PromResponseError, match=f"got resultType '{data['resultType']}'"):
        client.query("up")


@pytest.mark.parametrize(
    "result",
    [
        [{"metric": {"a": "b"}, "value": [1, 2.5]}],
        [{"metric": {"a": "b"}, "value": [1, "watts"]}],
        [{"metric": {"a": 1}, "value": [1, "1"]}],
        [{"metric": {"a": "b"}}],
        ["up"],
    ],
)
def test_a_malformed_sample_is_a_bad_response(prom, client, result):
    prom.answer({"status": "success", "data": {"resultType": "vector", "result": result}})

    with pytest.raises(PromResponseError):
        client.query("up")


def test_a_well_formed_answer_reads_the_same_through_the_typed_decoder_as_through_the_checks(prom, client, mocker):
    result = [{"metric": {"__name__": "DCGM_FI_DEV_POWER_USAGE", "UUID": "GPU-a", "pod": "naïve-0"},
               "value": [1_750_000_000, "412.5"]},
              {"metric": {}, "value": [1_750_000_000.25, "NaN"]}]
    body = {"status": "success", "data": {"resultType": "vector", "result": result},
            "warnings": ["partial response"], "infos": ["a field this client does not know"]}
    prom.answer(body)

    checks = mocker.spy(prom_client, "decode_vector")
    answer = client.query("DCGM_FI_DEV_POWER_USAGE")
    assert checks.call_count == 0, "a well-formed answer took the slow path"

    checked, warnings = decode_vector(body, "q")
    assert [(s.labels, str(s.value), s.timestamp) for s in answer.samples] == [
        (s.labels, str(s.value), s.timestamp) for s in checked]
    assert answer.warnings == warnings == ("partial response",)
    assert answer.samples[0] == ({"__name__": "DCGM_FI_DEV_POWER_USAGE", "UUID": "GPU-a", "pod": "naïve-0"}, 412.5,
                                 1_750_000_000.0)


@pytest.mark.parametrize("text", ["NaN", "+Inf", "-Inf"])
def test_special_float_values_are_decoded_for_the_caller_to_judge(prom, client, text):
    prom.answer_vector([({"__name__": "x"}, text)])

    assert str(client.query("x").samples[0].value) == str(float(text))


def test_connection_refused_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = PromClient(PromSettings(url=f"http://127.0.0.1:{port}", connect_timeout_s=2))
    try:
        with pytest.raises(PromConnectionError, match="cannot connect") as caught:
            client.query("up")
    finally:
        client.close()

    assert isinstance(caught.value, PromUnavailableError)
    assert caught.value.reason == "PrometheusUnreachable"


def test_a_slow_answer_times_out(prom):
    prom.answer({"status": "success", "data": {"resultType": "vector", "result": []}}, delay_s=5)
    client = PromClient(PromSettings(url=prom.url, read_timeout_s=0.2))
    try:
        with pytest.raises(PromTimeoutError, match="timed out"):
            client.query("up")
    finally:
        client.close()


def test_latency_is_returned_and_observed(prom):
    prom.answer_vector([({"__name__": "up"}, "1")])
    recorder = Recorder()
    client = PromClient(PromSettings(url=prom.url), observer=recorder, clock=SteppingClock(0.25))
    try:
        result = client.query("up", name="gpu_power")
    finally:
        client.close()

    assert result.duration_s == 0.25
    assert recorder.calls == [("gpu_power", "success", 0.25)]


def test_failed_queries_are_observed_with_the_error_reason(prom):
    prom.answer({"status": "error", "errorType": "bad_data", "error": "x"}, status=400)
    registry = CollectorRegistry()
    client = PromClient(PromSettings(url=prom.url), observer=PromQueryMetrics(registry))
    try:
        with pytest.raises(PromError):
            client.query("up{", name="sm_clock")
    finally:
        client.close()

    labels = {"query": "sm_clock", "outcome": "PrometheusQueryRejected"}
    assert registry.get_sample_value("climatik_prom_query_duration_seconds_count", labels) == 1


def test_a_short_query_goes_in_the_url_and_a_long_one_in_a_form(prom, client):
    prom.answer_vector([({"UUID": "GPU-a"}, 250.0)])
    names = "|".join(f"svc-{i}" for i in range(400))
    long = f'DCGM_FI_DEV_POWER_USAGE{{pod=~"{names}"}}'

    client.query("DCGM_FI_DEV_POWER_USAGE", at=prom.eval_time)
    result = client.query(long, at=prom.eval_time)

    assert [len(r.params["query"]) for r in prom.requests] == [len("DCGM_FI_DEV_POWER_USAGE"), len(long)]
    assert prom.requests[1].headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert prom.requests[1].params["time"] == f"{prom.eval_time:.3f}"
    assert [s.labels["UUID"] for s in result.samples] == ["GPU-a"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "prometheus:9090"}, "must be http"),
        ({"url": "ftp://prometheus"}, "must be http"),
        ({"url": "http://p", "read_timeout_s": 0}, "positive"),
        ({"url": "https://p", "ca_bundle": "/ca.pem", "insecure_skip_verify": True}, "not both"),
    ],
)
def test_settings_that_cannot_work_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PromSettings(**kwargs)
