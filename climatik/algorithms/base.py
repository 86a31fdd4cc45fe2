"""What a frequency algorithm sees and returns, and the protocol every algorithm (built-in or plug-in) follows:
its input and output, the errors that name what was wrong, the reader that checks its string parameters, and
the compact JSON its state is persisted as.

An algorithm is a pure function of its input: the policy's spec, the latest observation of the workload, the
hardware limits of the GPUs and CPUs involved, the targets the policy holds now, the algorithm's own state from
its previous step, and the current time. It returns new targets and new state. It does no I/O and reads no
clock, so that the recommender, the tests and the benchmark can run it with any time source.

Times are UNIX seconds (wall clock): the observation time comes from the policy status (`lastUpdated`).
Targets are MHz. A GPU is named by its UUID, a CPU by `(node name, logical cpu id)`. A target of None (or a
GPU left out of the targets) means "no entry": the tuner restores the hardware defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from climatik.api import PolicySpec
from climatik.api.constants import DEFAULT_RELEASE_BAND


class AlgorithmError(ValueError):
    """Base class: the policy cannot be served by its algorithm as specified."""

    reason = "InvalidAlgorithm"


class UnknownAlgorithmError(AlgorithmError):
    """No algorithm is registered under the requested name."""

    reason = "UnknownAlgorithmError"

    def __init__(self, name: str, known: list[str], detail: str | None = None) -> None:
        self.name = name
        self.known = known
        message = f"unknown algorithm {name!r}; registered: {', '.join(known) or 'none'}"
        super().__init__(f"{message} ({detail})" if detail else message)


class InvalidParameterError(AlgorithmError):
    """A parameter is unknown, unparsable or out of range."""

    reason = "InvalidParameterError"

    def __init__(self, algorithm: str, parameter: str, value: str | None, problem: str) -> None:
        self.algorithm = algorithm
        self.parameter = parameter
        self.value = value
        shown = "" if value is None else f"={value!r}"
        super().__init__(f"algorithm {algorithm!r}: parameter {parameter!r}{shown}: {problem}")


class AlgorithmFailedError(AlgorithmError):
    """The algorithm raised or returned something the framework cannot use (a bug in the algorithm)."""

    reason = "AlgorithmFailedError"

    def __init__(self, algorithm: str, problem: str) -> None:
        self.algorithm = algorithm
        super().__init__(f"algorithm {algorithm!r} failed: {problem}")


#: (node name, logical CPU id)
CpuKey = tuple[str, int]



@dataclass(frozen=True)
class ObservedGpu:
    """One GPU of the workload as last observed: where it is, what it drew and how fast it ran."""

    uuid: str
    node: str
    power: float | None = None
    sm_clock: int | None = None


@dataclass(frozen=True)
class Observation:
    """The workload's latest observation, from the policy status the monitor wrote.

    `at` is when it was taken (None: never). `power` is the workload's total (None: no complete data).
    `capping_required` is the monitor's hysteresis decision. `truncated` says GPUs were left out of `gpus`.
    """

    at: float | None = None
    power: float | None = None
    capping_required: bool = False
    gpus: tuple[ObservedGpu, ...] = ()
    truncated: bool = False

    def gpu(self, uuid: str) -> ObservedGpu | None:
        return next((gpu for gpu in self.gpus if gpu.uuid == uuid), None)


@dataclass(frozen=True)
class GpuLimits:
    """What a GPU's tuner reported it supports. `supported` is sorted ascending; empty means any MHz in range."""

    uuid: str
    min_frequency: int
    max_frequency: int
    supported: tuple[int, ...] = ()
    default_frequency: int | None = None
    power_limit: float | None = None


@dataclass(frozen=True)
class CpuLimits:
    """What a CPU's tuner reported (cpuinfo limits, MHz)."""

    min_frequency: int
    max_frequency: int


@dataclass(frozen=True)
class Inventory:
    """Hardware limits of the GPUs and CPUs an algorithm may target. A GPU missing here is not targeted yet."""

    gpus: Mapping[str, GpuLimits] = field(default_factory=dict)
    cpus: Mapping[CpuKey, CpuLimits] = field(default_factory=dict)


@dataclass(frozen=True)
class Targets:
    """Upper bounds on clocks, in MHz; None or absent: no bound (hardware defaults)."""

    gpus: Mapping[str, int | None] = field(default_factory=dict)
    cpus: Mapping[CpuKey, int | None] = field(default_factory=dict)

    def gpu_entries(self) -> dict[str, int]:
        """The GPUs that carry a bound."""
        return {uuid: mhz for uuid, mhz in self.gpus.items() if mhz is not None}

    def cpu_entries(self) -> dict[CpuKey, int]:
        """The CPUs that carry a bound."""
        return {key: mhz for key, mhz in self.cpus.items() if mhz is not None}

    def same_as(self, other: Targets) -> bool:
        """Equal as bounds: a None entry and a missing one mean the same."""
        return self.gpu_entries() == other.gpu_entries() and self.cpu_entries() == other.cpu_entries()


@dataclass(frozen=True)
class AlgorithmInput:
    """Everything one step of an algorithm may look at.

    `current` holds the targets the policy holds now (its entries in the NodeFrequencies objects). `state` is
    what the algorithm returned last time ({} at first). `now` is the current time (UNIX seconds).
    `release_band` is the distance, in percent of the limit, below the threshold at which capping is released
    when the spec sets no releaseThreshold.
    """

    spec: PolicySpec
    observation: Observation
    inventory: Inventory
    current: Targets
    state: Mapping[str, Any]
    now: float
    release_band: int = DEFAULT_RELEASE_BAND

    @property
    def threshold_watts(self) -> float:
        return self.spec.threshold_watts

    @property
    def release_watts(self) -> float:
        """Power under which a capped workload may have its clocks given back."""
        return self.spec.release_watts(self.release_band)


@dataclass(frozen=True)
class AlgorithmOutput:
    """New targets, new state (JSON-serialisable, small) and a short human-readable reason for logs and Events."""

    targets: Targets
    state: dict[str, Any]
    reason: str = ""


class Algorithm(Protocol):
    """One configured algorithm: parameters were validated when it was built; `step` is pure."""

    name: str

    def step(self, inp: AlgorithmInput) -> AlgorithmOutput:
        """Decide the policy's next targets."""
        ...


class AlgorithmFactory(Protocol):
    """Builds an algorithm from its string parameters; raises InvalidParameterError on a bad one.

    Plug-ins register a factory under the `climatik.algorithms` entry-point group; the entry-point name is the
    algorithm's name.
    """

    def __call__(self, parameters: Mapping[str, str]) -> Algorithm:
        ...


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class ParamReader:
    """Reads one algorithm's parameters; every problem raises InvalidParameterError naming the parameter and value.

    Construction rejects parameters the algorithm does not know, so a typo is never silently ignored.
    """

    def __init__(self, algorithm: str, parameters: Mapping[str, str] | None, known: Iterable[str]) -> None:
        self.algorithm = algorithm
        self._values = dict(parameters or {})
        known_names = sorted(known)
        for name, value in sorted(self._values.items()):
            if name not in known_names:
                raise InvalidParameterError(algorithm, name, value,
                                       f"unknown parameter; known: {', '.join(known_names) or 'none'}")
            if not isinstance(value, str):
                raise InvalidParameterError(algorithm, name, repr(value), "must be a string")

    def number(self, name: str, default: float, *, minimum: float | None = None, maximum: float | None = None,
               exclusive: bool = False) -> float:
        """A finite decimal number within [minimum, maximum] (or the open interval when `exclusive`)."""
        text = self._values.get(name)
        if text is None:
            return default
        try:
            value = float(text.strip())
        except ValueError:
            raise InvalidParameterError(self.algorithm, name, text, "not a number") from None
        if not math.isfinite(value):
            raise InvalidParameterError(self.algorithm, name, text, "must be a finite number")
        self._check_range(name, text, value, (minimum, maximum), exclusive=exclusive)
        return value

    def integer(self, name: str, default: int | None, *, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        """A whole number within [minimum, maximum]; `default` (possibly None) when absent."""
        text = self._values.get(name)
        if text is None:
            return default
        try:
            value = int(text.strip())
        except ValueError:
            raise InvalidParameterError(self.algorithm, name, text, "not a whole number") from None
        self._check_range(name, text, value, (minimum, maximum), exclusive=False)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        """true/false (also yes/no, on/off, 1/0), any case."""
        text = self._values.get(name)
        if text is None:
            return default
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise InvalidParameterError(self.algorithm, name, text, "must be true or false")

    def _check_range(self, name: str, text: str, value: float, bounds: tuple[float | None, float | None], *,
                     exclusive: bool) -> None:
        minimum, maximum = bounds
        low_bad = minimum is not None and (value <= minimum if exclusive else value < minimum)
        high_bad = maximum is not None and (value >= maximum if exclusive else value > maximum)
        if low_bad or high_bad:
            low = "(" if exclusive else "["
            high = ")" if exclusive else "]"
            shown = f"{low}{_fmt(minimum, '-inf')}, {_fmt(maximum, 'inf')}{high}"
            raise InvalidParameterError(self.algorithm, name, text, f"out of range {shown}")


def _fmt(bound: float | None, unbounded: str) -> str:
    if bound is None:
        return unbounded
    return str(int(bound)) if float(bound).is_integer() else str(bound)


#: The CRD's maxLength for status.recommendation.state.
MAX_STATE_CHARS = 4096


class StateTooLargeError(ValueError):
    """An algorithm's state does not fit the status field."""


def encode_state(state: Mapping[str, Any]) -> str:
    """Compact, key-sorted JSON (identical state gives identical text, so an unchanged status is not rewritten)."""
    try:
        text = json.dumps(state, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise StateTooLargeError(f"state is not plain JSON: {err}") from None
    if len(text) > MAX_STATE_CHARS:
        raise StateTooLargeError(f"state is {len(text)} characters, more than {MAX_STATE_CHARS}")
    return text


def decode_state(text: str | None) -> dict[str, Any]:
    """The state from its persisted text; {} (a fresh start) for none or for text that is not a JSON object."""
    if not text:
        return {}
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid state")


def as_float(value: Any) -> float | None:
    """A finite number read back from state, or None; state is user-editable text, so trust nothing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
