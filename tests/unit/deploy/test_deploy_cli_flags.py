"""Every flag the manifests pass to a component is one the `climatik` command accepts."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from climatik.cli import cli


@pytest.mark.parametrize("component", ["monitor", "recommend", "tune"])
def test_the_command_line_of_each_workload_is_accepted(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    # Kubernetes expands $(VAR) before the process starts; any word stands in for it here. --help is eager, so
    # click rejects an unknown option before it prints help and exits 0.
    args = [re.sub(r"\$\([A-Z_]+\)", "placeholder", arg) for arg in manifests.container(component)["args"]]
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output


def test_label_options_reach_the_metric_profile_and_bad_ones_are_refused(mocker) -> None:  # type: ignore[no-untyped-def]
    build = mocker.patch("climatik.monitor.app.build")
    base = ["monitor", "--prometheus-url", "http://prometheus:9090"]
    env = {"CLIMATIK_MONITOR_POD_LABELS": "pod_name:pod_namespace", "CLIMATIK_MONITOR_UUID_LABELS": "uuid",
           "CLIMATIK_MONITOR_POWER_MATCHERS": 'job="dcgm-exporter"'}
    CliRunner().invoke(cli, base, env=env)

    settings = build.call_args.args[0]
    assert settings.labels["uuid_labels"] == ("uuid",)
    assert settings.labels["power_matchers"] == 'job="dcgm-exporter"'
    refused = CliRunner().invoke(cli, [*base, "--pod-labels", "pod"])
    assert refused.exit_code == 2 and "pod:namespace label pair" in refused.output


def test_prometheus_answers_are_compressed_only_with_the_flag(mocker) -> None:  # type: ignore[no-untyped-def]
    build = mocker.patch("climatik.monitor.app.build")
    base = ["monitor", "--prometheus-url", "http://prometheus:9090"]
    CliRunner().invoke(cli, base)
    CliRunner().invoke(cli, [*base, "--prometheus-compression"])

    assert [call.args[0].prometheus.compress for call in build.call_args_list] == [False, True]
