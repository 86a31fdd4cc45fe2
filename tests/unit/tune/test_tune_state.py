"""The state file: what the tuner changed survives a restart; a broken file is set aside, never trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from climatik.tune.state import StateError, StateStore


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "lib" / "climatik" / "tuner-state.json"


def test_recorded_devices_survive_a_new_store(path: Path) -> None:
    store = StateStore(path)
    store.record("gpu", "GPU-a", None)
    store.record("cpu", "3", 3_500_000)

    reopened = StateStore(path)

    assert reopened.entries("gpu") == {"GPU-a": None}
    assert reopened.entries("cpu") == {"3": 3_500_000}
    assert not reopened.recovered
    assert json.loads(path.read_text())["version"] == 1


def test_the_first_original_is_kept(path: Path) -> None:
    store = StateStore(path)
    store.record("cpu", "3", 3_500_000)
    store.record("cpu", "3", 2_000_000)  # by then the setting is ours, not the original

    assert StateStore(path).entries("cpu") == {"3": 3_500_000}


def test_forgotten_devices_are_gone_from_the_file(path: Path) -> None:
    store = StateStore(path)
    store.record("gpu", "GPU-a", None)
    store.record("gpu", "GPU-b", None)

    store.forget("gpu", "GPU-a")

    assert StateStore(path).entries("gpu") == {"GPU-b": None}


def test_writes_leave_no_temporary_files(path: Path) -> None:
    store = StateStore(path)
    for index in range(5):
        store.record("cpu", str(index), 1_000_000)

    assert [child.name for child in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("content", ["{not json", '{"version": 99, "devices": {}}', '{"version": 1, "devices": '
                                     '{"cpu": {"3": "fast"}}}', "\xff\xfe"])
def test_a_corrupt_file_is_set_aside_and_reported(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="latin-1")

    with capture_logs() as logs:
        store = StateStore(path)
        recovered = store.recovered

    assert recovered
    assert store.entries("cpu") == {}
    assert not path.exists()
    assert path.with_name(path.name + ".corrupt").read_text(encoding="latin-1") == content
    assert [log["event"] for log in logs] == ["state_file_corrupt"]
    assert logs[0]["log_level"] == "error"


def test_a_store_that_cannot_write_refuses_to_record(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    store = StateStore(blocker / "tuner-state.json")

    with pytest.raises(StateError, match="cannot write the tuner state file"):
        store.record("gpu", "GPU-a", None)
    assert store.entries("gpu") == {}


def test_an_in_memory_store_writes_nothing(tmp_path: Path) -> None:
    store = StateStore(None)
    store.record("gpu", "GPU-a", None)

    assert store.entries("gpu") == {"GPU-a": None}
    assert list(tmp_path.iterdir()) == []
