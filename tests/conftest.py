"""Shared test set-up: hack/ (the test control plane and simulators) and tests/support (test doubles) are
importable from every test."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO / "tests"))

from climatik.cli import configure_logging  # noqa: E402


def pytest_configure(config: object) -> None:
    """Quiet the libraries' structured logs in tests (the processes under test log to their own files)."""
    configure_logging("warning", json_lines=False, stream=sys.stderr)


@pytest.fixture(autouse=True)
def _logging_back_on_stderr() -> Iterator[None]:
    """A test that runs the command line (click's CliRunner) leaves logging on the runner's stream, which is closed
    once the test ends: route it back, so that later tests do not fail writing a log line."""
    yield
    configure_logging("warning", json_lines=False, stream=sys.stderr)
