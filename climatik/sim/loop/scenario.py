"""What a closed-loop benchmark run simulates: nodes, what each GPU runs, and the policies with their caps.

A scenario is a plain description; `build_world` turns it into simulated nodes. Every GPU's trace draws from
a random source seeded by (scenario seed, the GPU's `draw` key), so a run is reproducible and GPUs that share a
key (the ranks of one tensor-parallel replica) run exactly the same load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from climatik.api import AlgorithmRef, LabelSelector, PolicySpec
from climatik.sim.profiles import H100, GpuProfile
from climatik.sim.traces import ConstantParams, Workload


@dataclass(frozen=True)
class GpuPlan:
    """One GPU's work: on `node`, index `index`, running `workload` drawn from the source named `draw`.

    GPUs with the same non-empty `group` work in lockstep (the ranks of a tensor- or data-parallel job): the
    group progresses at the pace of its slowest member, so a GPU clocked higher than the others adds nothing.
    """

    node: str
    index: int
    workload: Workload
    draw: str = ""
    group: str = ""


@dataclass(frozen=True)
class CapChange:
    """From `at_s` on, the policy's powerCapLimit is `watts`."""

    at_s: float
    watts: int


@dataclass(frozen=True)
class PolicyPlan:
    """One PowerCappingPolicy: the GPUs its pods use, its cap over time, and its capping threshold (percent)."""

    name: str
    gpus: tuple[tuple[str, int], ...]
    caps: tuple[CapChange, ...]
    capping_threshold: int | None = None
    namespace: str = "bench"

    def __post_init__(self) -> None:
        if not self.gpus:
            raise ValueError(f"policy {self.name}: needs at least one GPU")
        if not self.caps or self.caps[0].at_s != 0.0:
            raise ValueError(f"policy {self.name}: the first cap must start at 0 s")
        if [c.at_s for c in self.caps] != sorted(c.at_s for c in self.caps):
            raise ValueError(f"policy {self.name}: cap changes must be in time order")

    def cap_at(self, t_s: float) -> int:
        """The cap in force at simulated time `t_s`."""
        cap = self.caps[0].watts
        for change in self.caps:
            if change.at_s <= t_s + 1e-9:
                cap = change.watts
        return cap

    def spec_at(self, t_s: float, algorithm: AlgorithmRef | None = None) -> PolicySpec:
        """The policy's spec as the controllers read it at `t_s`."""
        return PolicySpec(
            power_cap_limit=self.cap_at(t_s),
            selector=LabelSelector(match_labels={"app": self.name}),
            capping_threshold=self.capping_threshold,
            custom_algorithms=[algorithm] if algorithm is not None else None,
        )


@dataclass(frozen=True)
class Scenario:
    """A benchmark scenario. GPUs of `nodes` not named in `gpus` stay idle."""

    name: str
    title: str
    nodes: Mapping[str, int]
    gpus: tuple[GpuPlan, ...]
    policies: tuple[PolicyPlan, ...]
    duration_s: float
    profile: GpuProfile = H100
    seed: int = 0
    notes: str = ""
    idle: Workload = field(default_factory=ConstantParams)

    def __post_init__(self) -> None:
        placed = [(g.node, g.index) for g in self.gpus]
        if len(set(placed)) != len(placed):
            raise ValueError(f"scenario {self.name}: a GPU is planned twice")
        for node, index in placed + [gpu for policy in self.policies for gpu in policy.gpus]:
            if node not in self.nodes or not 0 <= index < self.nodes[node]:
                raise ValueError(f"scenario {self.name}: no GPU {index} on node {node!r}")
        owners = [gpu for policy in self.policies for gpu in policy.gpus]
        if len(set(owners)) != len(owners):
            raise ValueError(f"scenario {self.name}: policies must use different GPUs")
