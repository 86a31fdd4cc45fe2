"""The registry: built-ins by name, plug-ins from entry points, clear errors for everything else."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from climatik.algorithms import (
    ENTRY_POINT_GROUP,
    AlgorithmFailedError,
    AlgorithmInput,
    AlgorithmOutput,
    AlgorithmRegistry,
    ClosedLoop,
    DynamicFrequencyScaler,
    InvalidParameterError,
    UnknownAlgorithmError,
    default_registry,
)
from climatik.api import AlgorithmRef


class HoldStill:
    """A plug-in algorithm that never changes anything."""

    name = "hold-still"

    def __init__(self, parameters: Mapping[str, str]) -> None:
        if set(parameters) - {"mood"}:
            raise InvalidParameterError(self.name, sorted(parameters)[0], None, "unknown parameter")
        self.mood = parameters.get("mood", "calm")

    def step(self, inp: AlgorithmInput) -> AlgorithmOutput:
        return AlgorithmOutput(inp.current, dict(inp.state), "holding still")


def broken_import() -> Any:
    raise ImportError("No module named 'missing_dependency'")


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: Any

    def load(self) -> Any:
        return self.target() if self.target is broken_import else self.target


def fake_entry_points(*entries: FakeEntryPoint) -> Any:
    def entry_points(*, group: str) -> Iterable[FakeEntryPoint]:
        return list(entries) if group == ENTRY_POINT_GROUP else []
    return entry_points


def test_no_reference_means_the_closed_loop_default() -> None:
    registry = default_registry(plugins=False)

    assert isinstance(registry.create(None), ClosedLoop)
    assert registry.names() == ["closed-loop", "dynamic-frequency-scaler"]


def test_builds_the_seed_algorithm_with_its_parameters() -> None:
    registry = default_registry(plugins=False)
    algorithm = registry.create(AlgorithmRef("dynamic-frequency-scaler", {"scaling-factor": "0.7"}))

    assert isinstance(algorithm, DynamicFrequencyScaler)
    assert algorithm.scaling_factor == 0.7


def test_unknown_algorithm_names_itself_and_the_registered_ones() -> None:
    with pytest.raises(UnknownAlgorithmError, match=r"'magic'.*closed-loop, dynamic-frequency-scaler"):
        default_registry(plugins=False).create(AlgorithmRef("magic"))


def test_bad_parameter_surfaces_from_create() -> None:
    with pytest.raises(InvalidParameterError, match="scaling-factor"):
        default_registry(plugins=False).create(AlgorithmRef("dynamic-frequency-scaler", {"scaling-factor": "2"}))


def test_loads_plug_ins_from_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        fake_entry_points(FakeEntryPoint("hold-still", "plugin.module:HoldStill", HoldStill)))
    registry = default_registry()

    algorithm = registry.create(AlgorithmRef("hold-still", {"mood": "zen"}))
    assert isinstance(algorithm, HoldStill) and algorithm.mood == "zen"
    assert "hold-still" in registry.names()


def test_a_broken_plug_in_is_skipped_and_explained_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points(
        FakeEntryPoint("broken", "plugin.broken:make", broken_import),
        FakeEntryPoint("hold-still", "plugin.module:HoldStill", HoldStill)))
    registry = default_registry()

    assert "hold-still" in registry.names()
    with pytest.raises(UnknownAlgorithmError, match="missing_dependency"):
        registry.create(AlgorithmRef("broken"))


def test_a_plug_in_cannot_replace_a_built_in() -> None:
    registry = default_registry(plugins=False)
    added = registry.load_entry_points(fake_entry_points(FakeEntryPoint("closed-loop", "evil:Thing", HoldStill)))

    assert added == []
    assert isinstance(registry.create(None), ClosedLoop)
    assert "clashes" in registry.load_errors["closed-loop"]


def test_registries_are_independent_objects() -> None:
    first = AlgorithmRegistry()
    first.register("hold-still", HoldStill)

    assert AlgorithmRegistry().names() == []
    with pytest.raises(ValueError, match="already registered"):
        first.register("hold-still", HoldStill)


def test_a_factory_that_crashes_or_returns_junk_is_reported() -> None:
    def crashes(parameters: Mapping[str, str]) -> Any:
        raise ZeroDivisionError("oops")

    def junk(parameters: Mapping[str, str]) -> Any:
        return 42

    registry = AlgorithmRegistry({"crashes": crashes, "junk": junk})
    with pytest.raises(AlgorithmFailedError, match="ZeroDivisionError: oops"):
        registry.create(AlgorithmRef("crashes"))
    with pytest.raises(AlgorithmFailedError, match="no step"):
        registry.create(AlgorithmRef("junk"))
