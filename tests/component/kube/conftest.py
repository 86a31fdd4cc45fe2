"""Fixtures of the runtime's component tests: a fake clock, and a fake API server on it."""

from __future__ import annotations

import pytest
from support.clock import FakeClock
from support.kube import FakeCluster


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> FakeCluster:
    return FakeCluster(clock=clock)
