"""What a frequency algorithm sees and returns, and the protocol every algorithm (built-in or plug-in) follows.

An algorithm is a pure function of its input: the policy's spec, the latest observation of the workload, the
hardware limits of the GPUs and CPUs involved, the targets the policy holds now, the algorithm's own state from
its previous step, and the current time. It returns new targets and new state. It does no I/O and reads no
clock, so that the recommender, the tests and the benchmark can run it with any time source.

Times are UNIX seconds (wall clock): the observation time comes from the policy status (`lastUpdated`).
Targets are MHz. A GPU is named by its UUID, a CPU by `(node name, logical cpu id)`. A target of None (or a
GPU left out of the targets) means "no entry": the tuner restores the hardware defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from climatik.api import PolicySpec
from climatik.api.constants import DEFAULT_RELEASE_BAND

#: (node name, logical CPU id)
CpuKey = tuple[str, int]



@dataclass(frozen=True)
class GpuReading:
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
    gpus: tuple[GpuReading, ...] = ()
    truncated: bool = False

    def gpu(self, uuid: str) -> GpuReading | None:
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
