"""Fixtures that start real components: a kube-apiserver with etcd (built by hack/) and its CRDs.

A component that fails to start fails the tests that need it; nothing here skips.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import testenv

CONTROL_PLANE_LINE = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Say which kube-apiserver the integration tests ran against (its /version), in the test log."""
    line = config.stash.get(CONTROL_PLANE_LINE, None)
    if line is not None:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[testenv.ControlPlane]:
    """A real kube-apiserver + etcd with Climatik's CRDs installed and served, shared by the session."""
    plane = testenv.start_with_crds(tmp_path_factory.mktemp("control-plane"))
    pytestconfig.stash[CONTROL_PLANE_LINE] = f"test control plane: kube-apiserver {plane.version()} at {plane.server}"
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def kubectl(control_plane: testenv.ControlPlane):  # type: ignore[no-untyped-def]
    """Run kubectl against the test control plane; returns the CompletedProcess (never raises on failure)."""

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*control_plane.kubectl, *args], input=stdin, capture_output=True, text=True, check=False,
                              timeout=60)

    return run


@pytest.fixture
def repo() -> Path:
    return Path(__file__).resolve().parent.parent.parent
