"""The state file: what the tuner changed survives a restart; a broken file is set aside, never trusted."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from climatik.tune.state import PowerLimitOriginals, StateError, StateStore

GPU_A = "GPU-5fd4c8a1-0000-4000-8000-00000000000a"
GPU_B = "GPU-5fd4c8a1-0000-4000-8000-00000000000b"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "lib" / "climatik" / "tuner-state.json"


def test_recorded_devices_survive_a_new_store(path: Path) -> None:
    store = StateStore(path)
    store.record("gpu", GPU_A, None)
    store.record("cpu", "3", 3_500_000)

    reopened = StateStore(path)

    assert reopened.entries("gpu") == {GPU_A: None}
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
    store.record("gpu", GPU_A, None)
    store.record("gpu", GPU_B, None)

    store.forget("gpu", GPU_A)

    assert StateStore(path).entries("gpu") == {GPU_B: None}


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
        store.record("gpu", GPU_A, None)
    assert store.entries("gpu") == {}


def test_an_in_memory_store_writes_nothing(tmp_path: Path) -> None:
    store = StateStore(None)
    store.record("gpu", GPU_A, None)

    assert store.entries("gpu") == {GPU_A: None}
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------- boot id


def boot(tmp_path: Path, boot_id: str) -> Path:
    path = tmp_path / f"boot_id.{boot_id}"
    path.write_text(boot_id + "\n")
    return path


def test_entries_from_another_boot_are_dropped_as_the_reboot_reset_them(path: Path, tmp_path: Path) -> None:
    before = StateStore(path, boot_id_path=boot(tmp_path, "5d3c0e5e-1111-4a40-9c6e-000000000001"))
    before.record("gpu", GPU_A, None)
    before.record("cpu", "3", 3_500_000)

    with capture_logs() as logs:
        after = StateStore(path, boot_id_path=boot(tmp_path, "5d3c0e5e-1111-4a40-9c6e-000000000002"))
        entries = after.entries("gpu"), after.entries("cpu")

    assert entries == ({}, {})
    assert not after.recovered, "a reboot is not a corrupt file: nothing needs restoring"
    assert [log["event"] for log in logs] == ["state_from_another_boot"]


def test_entries_from_this_boot_are_kept(path: Path, tmp_path: Path) -> None:
    boot_id = boot(tmp_path, "5d3c0e5e-1111-4a40-9c6e-000000000001")
    StateStore(path, boot_id_path=boot_id).record("gpu", GPU_A, None)

    assert StateStore(path, boot_id_path=boot_id).entries("gpu") == {GPU_A: None}
    assert json.loads(path.read_text())["bootId"] == "5d3c0e5e-1111-4a40-9c6e-000000000001"


def test_an_unreadable_boot_id_keeps_the_entries(path: Path, tmp_path: Path) -> None:
    StateStore(path, boot_id_path=boot(tmp_path, "5d3c0e5e-1111-4a40-9c6e-000000000001")).record("gpu", GPU_A, None)

    assert StateStore(path, boot_id_path=tmp_path / "missing").entries("gpu") == {GPU_A: None}


# --------------------------------------------------------------------------------------------- durability


def test_the_directory_is_synced_after_the_rename(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(descriptor).st_mode))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    StateStore(path).record("gpu", GPU_A, None)

    assert synced == [False, True], "the file's data first, then the directory holding the new name"


# ------------------------------------------------------------------------------------------------ keys


@pytest.mark.parametrize("devices", [
    {"cpu": {"three": 3_500_000}},
    {"cpu": {"-1": 3_500_000}},
    {"gpu": {"GPU-a": None}},
    {"gpu": {"0": None}},
    {"gpu": {"MIG-5fd4c8a1-0000-4000-8000-00000000000a": None}},
    {"fpga": {"0": None}},
], ids=["cpu-word", "cpu-negative", "gpu-short", "gpu-index", "gpu-mig", "unknown-kind"])
def test_keys_that_name_no_device_set_the_file_aside(path: Path, devices: dict[str, object]) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "devices": devices}))

    store = StateStore(path)

    assert store.recovered
    assert store.entries("cpu") == {} and store.entries("gpu") == {}


def test_original_power_limits_survive_a_new_store_in_watts(path: Path) -> None:
    originals = PowerLimitOriginals(StateStore(path))
    originals[GPU_A] = 700.0
    originals[GPU_B] = 312.5
    originals[GPU_A] = 400.0  # by then the limit is the guard's, not the original
    del originals[GPU_B]

    reopened = PowerLimitOriginals(StateStore(path))

    assert dict(reopened) == {GPU_A: 700.0}
    assert json.loads(path.read_text())["devices"]["gpuPowerLimit"] == {GPU_A: 700_000}


def test_original_power_limits_of_another_boot_are_dropped(path: Path, tmp_path: Path) -> None:
    boot = tmp_path / "boot_id"
    boot.write_text("first-boot\n")
    PowerLimitOriginals(StateStore(path, boot_id_path=boot))[GPU_A] = 700.0
    boot.write_text("second-boot\n")

    assert dict(PowerLimitOriginals(StateStore(path, boot_id_path=boot))) == {}, "a reboot reset every limit"
