"""PowerCappingPolicy: the budget a platform team sets for a workload, and what the controllers observed; and the
label selector (metav1.LabelSelector) that chooses the workload's pods, with every matchExpressions operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from climatik.api.codec import from_dict, to_dict
from climatik.api.conditions import Condition
from climatik.api.constants import API_VERSION, DEFAULT_RELEASE_BAND, POLICY_KIND
from climatik.api.meta import ObjectMeta

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class SelectorRequirement:
    """One matchExpressions entry."""

    key: str
    operator: str
    values: list[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in (self.values or [])
        if self.operator == "NotIn":
            return not present or labels[self.key] not in (self.values or [])
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        raise ValueError(f"unknown selector operator {self.operator!r}")

    def problem(self) -> str | None:
        """Why this requirement is invalid, or None (the API server checks this too; cached objects may predate it)."""
        if self.operator not in OPERATORS:
            return f"operator {self.operator!r} is not one of {', '.join(OPERATORS)}"
        if self.operator in ("In", "NotIn") and not self.values:
            return f"operator {self.operator} on key {self.key!r} needs at least one value"
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            return f"operator {self.operator} on key {self.key!r} takes no values"
        return None


@dataclass(frozen=True)
class LabelSelector:
    """Selects objects by labels. An empty selector selects everything, as in Kubernetes."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[SelectorRequirement] | None = None

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        return all(requirement.matches(labels) for requirement in self.match_expressions or [])

    def problems(self) -> list[str]:
        return [p for r in self.match_expressions or [] if (p := r.problem()) is not None]


DEFAULT_CAPPING_THRESHOLD = 90
#: spec.enforcement: each node's tuner keeps a per-node power budget by itself (the default), or only clocks are
#: set, as fast as the telemetry allows.
NODE_BUDGETS = "NodeBudgets"
CLOCKS_ONLY = "ClocksOnly"


@dataclass(frozen=True)
class AlgorithmRef:
    """A frequency algorithm by registered name with its string parameters."""

    name: str
    parameters: dict[str, str] | None = None


@dataclass(frozen=True)
class PolicySpec:
    """What the user asks for."""

    power_cap_limit: int
    selector: LabelSelector
    capping_threshold: int | None = None
    release_threshold: int | None = None
    custom_algorithms: list[AlgorithmRef] | None = None
    dry_run: bool | None = None
    tune_cpus: bool | None = field(default=None, metadata={"json": "tuneCPUs"})
    priority: int | None = None
    enforcement: str | None = None
    guaranteed_watts: int | None = None

    @property
    def node_budgets(self) -> bool:
        """Whether the policy's budget is split into per-node budgets that each node's tuner enforces itself."""
        return (self.enforcement or NODE_BUDGETS) == NODE_BUDGETS

    @property
    def threshold_percent(self) -> int:
        return self.capping_threshold if self.capping_threshold is not None else DEFAULT_CAPPING_THRESHOLD

    @property
    def threshold_watts(self) -> float:
        """Power at which capping starts and which the default controller aims at."""
        return self.power_cap_limit * self.threshold_percent / 100.0

    def release_watts(self, default_band: int = DEFAULT_RELEASE_BAND) -> float:
        """Power under which capping is released and clocks may be given back."""
        return self.power_cap_limit * self.release_percent(default_band) / 100.0

    def release_percent(self, default_band: int = DEFAULT_RELEASE_BAND) -> int:
        """Percent of the limit below which capping is released (hysteresis)."""
        if self.release_threshold is not None:
            return self.release_threshold
        return max(self.threshold_percent - default_band, 1)

    @property
    def algorithm(self) -> AlgorithmRef | None:
        """The algorithm to run: the first custom one, or None for the built-in default."""
        return self.custom_algorithms[0] if self.custom_algorithms else None


@dataclass(frozen=True)
class GpuObservation:
    """One GPU used by the policy's pods, as the monitor last saw it; for a MIG instance, the parent GPU's UUID and
    the instance's ID, with the instance's share of the GPU's power."""

    uuid: str
    mig_instance: int | None = None
    index: int | None = None
    model: str | None = None
    power: float | None = None
    sm_clock: int | None = None
    pods: list[str] | None = None


@dataclass(frozen=True)
class NodeObservation:
    """The policy's GPUs on one node."""

    name: str
    power: float | None = None
    gpus: list[GpuObservation] | None = None


@dataclass(frozen=True)
class Recommendation:
    """What the recommender last decided for the policy."""

    algorithm: str | None = None
    gpu_frequency: int | None = None
    cpu_frequency: int | None = None
    target_count: int | None = None
    applied: bool | None = None
    last_changed: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class PolicyStatus:
    """Observed power and the controllers' decisions. The monitor and the recommender each own their fields."""

    capping_action_required: bool | None = None
    last_updated: str | None = None
    observed_generation: int | None = None
    current_power: float | None = None
    gpu_count: int | None = None
    pods_without_metrics: list[str] | None = None
    nodes: list[NodeObservation] | None = None
    truncated: bool | None = None
    node_power: float | None = None
    budget: float | None = None
    recommendation: Recommendation | None = None
    conditions: list[Condition] | None = None


@dataclass(frozen=True)
class PowerCappingPolicy:
    """A namespaced power budget for the pods its selector chooses."""

    metadata: ObjectMeta
    spec: PolicySpec
    status: PolicyStatus | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> PowerCappingPolicy:
        return cls(
            metadata=ObjectMeta.from_api(data.get("metadata") or {}),
            spec=from_dict(PolicySpec, data.get("spec"), "spec"),
            status=from_dict(PolicyStatus, data["status"], "status") if data.get("status") is not None else None,
        )

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": POLICY_KIND,
                               "metadata": self.metadata.to_api(), "spec": to_dict(self.spec)}
        if self.status is not None:
            out["status"] = to_dict(self.status)
        return out

    @property
    def key(self) -> str:
        return self.metadata.key
