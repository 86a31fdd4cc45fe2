"""Algorithms by name: the built-in ones, plus any a separate package adds through the `climatik.algorithms`
entry-point group.

A plug-in declares, in its own package metadata::

    [options.entry_points]
    climatik.algorithms =
        my-algorithm = my_package.module:make_algorithm

where `make_algorithm(parameters: Mapping[str, str])` validates the parameters (raising
climatik.algorithms.InvalidParameterError) and returns an object with a `name` and a pure
`step(AlgorithmInput) -> AlgorithmOutput`. A plug-in cannot replace a built-in name. The registry is an object
handed to whoever needs it; there is no global one.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from climatik.algorithms.base import (
    Algorithm,
    AlgorithmError,
    AlgorithmFactory,
    AlgorithmFailedError,
    UnknownAlgorithmError,
)
from climatik.algorithms.closedloop import ClosedLoop
from climatik.algorithms.dfs import DynamicFrequencyScaler
from climatik.api import AlgorithmRef
from climatik.api.constants import DEFAULT_ALGORITHM

ENTRY_POINT_GROUP = "climatik.algorithms"

EntryPointSource = Callable[..., Iterable[Any]]


def builtin_factories() -> dict[str, AlgorithmFactory]:
    """The algorithms Climatik ships, by name."""
    return {
        ClosedLoop.name: ClosedLoop.from_parameters,
        DynamicFrequencyScaler.name: DynamicFrequencyScaler.from_parameters,
    }


def algorithm_name(ref: AlgorithmRef | None) -> str:
    """The name a policy's algorithm reference resolves to (the built-in default when it names none)."""
    return ref.name if ref is not None else DEFAULT_ALGORITHM


class AlgorithmRegistry:
    """Maps algorithm names to factories and builds configured algorithms from a policy's reference."""

    def __init__(self, factories: Mapping[str, AlgorithmFactory] | None = None) -> None:
        self._factories: dict[str, AlgorithmFactory] = dict(factories or {})
        self.load_errors: dict[str, str] = {}

    def register(self, name: str, factory: AlgorithmFactory) -> None:
        if not name:
            raise ValueError("an algorithm needs a name")
        if name in self._factories:
            raise ValueError(f"algorithm {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def load_entry_points(self, entry_points: EntryPointSource | None = None) -> list[str]:
        """Register every plug-in of the entry-point group; return the names added.

        A plug-in that fails to import or clashes with a registered name is skipped and recorded in
        `load_errors`, so that one broken package cannot stop the controller; a policy that asks for it gets
        an UnknownAlgorithmError carrying the reason. `entry_points` defaults to importlib.metadata's.
        """
        source = entry_points or importlib.metadata.entry_points
        added: list[str] = []
        for entry in sorted(source(group=ENTRY_POINT_GROUP), key=lambda ep: str(ep.name)):
            name = str(entry.name)
            if name in self._factories:
                self.load_errors[name] = f"entry point {entry.value!r} clashes with a registered algorithm"
                continue
            try:
                factory = entry.load()
            except Exception as err:
                self.load_errors[name] = f"entry point {entry.value!r} failed to load: {type(err).__name__}: {err}"
                continue
            if not callable(factory):
                self.load_errors[name] = f"entry point {entry.value!r} is not callable"
                continue
            self._factories[name] = factory
            self.load_errors.pop(name, None)
            added.append(name)
        return added

    def create(self, ref: AlgorithmRef | None) -> Algorithm:
        """The configured algorithm for a policy's reference; raises UnknownAlgorithmError or
        InvalidParameterError (both AlgorithmError) naming what is wrong."""
        name = algorithm_name(ref)
        factory = self._factories.get(name)
        if factory is None:
            raise UnknownAlgorithmError(name, self.names(), self.load_errors.get(name))
        parameters = dict(ref.parameters or {}) if ref is not None else {}
        try:
            algorithm = factory(parameters)
        except AlgorithmError:
            raise
        except Exception as err:
            raise AlgorithmFailedError(name, f"could not be built: {type(err).__name__}: {err}") from err
        if not callable(getattr(algorithm, "step", None)):
            raise AlgorithmFailedError(name, f"factory returned {type(algorithm).__name__}, which has no step()")
        return algorithm


def default_registry(*, plugins: bool = True,
                     entry_points: EntryPointSource | None = None) -> AlgorithmRegistry:
    """The built-in algorithms, plus the installed plug-ins unless `plugins` is False."""
    registry = AlgorithmRegistry(builtin_factories())
    if plugins:
        registry.load_entry_points(entry_points)
    return registry
