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
