"""NodeFrequencies: one node's target clocks (written by the recommender) and what its tuner applied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from climatik.api.codec import from_dict, to_dict
from climatik.api.conditions import Condition
from climatik.api.constants import API_VERSION, NODE_FREQUENCIES_KIND
from climatik.api.meta import ObjectMeta

APPLIED = "Applied"
PENDING = "Pending"
FAILED = "Failed"
UNSUPPORTED = "Unsupported"
ENTRY_STATUSES = (APPLIED, PENDING, FAILED, UNSUPPORTED)


@dataclass(frozen=True)
class GpuFrequency:
    """Target upper bound of one GPU's SM clock, in MHz."""

    gpu_id: str
    target_frequency: int
    policy: str | None = None


@dataclass(frozen=True)
class CpuFrequency:
    """Target upper bound of one logical CPU's frequency, in MHz."""

    cpu_id: int
    target_frequency: int
    policy: str | None = None


@dataclass(frozen=True)
class PowerBudget:
    """The most one policy's GPUs on this node may draw together, in watts, enforced by the node's tuner."""

    policy: str
    watts: int
    gpu_ids: list[str]


@dataclass(frozen=True)
class NodeFrequenciesSpec:
    node_name: str
    gpu_frequencies: list[GpuFrequency] | None = None
    cpu_frequencies: list[CpuFrequency] | None = None
    power_budgets: list[PowerBudget] | None = None


@dataclass(frozen=True)
class GpuFrequencyStatus:
    """Outcome of applying one GPU entry."""

    gpu_id: str
    status: str
    target_frequency: int | None = None
    current_frequency: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class CpuFrequencyStatus:
    """Outcome of applying one CPU entry."""

    cpu_id: int
    status: str
    target_frequency: int | None = None
    current_frequency: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class GpuInventory:
    """One GPU as its node's tuner found it."""

    uuid: str
    index: int | None = None
    model: str | None = None
    min_frequency: int | None = None
    max_frequency: int | None = None
    default_frequency: int | None = None
    supported_frequencies: list[int] | None = None
    power_limit: int | None = None
    min_power_limit: int | None = None
    max_power_limit: int | None = None


@dataclass(frozen=True)
class CpuInventory:
    """One logical CPU as its node's tuner found it."""

    cpu_id: int
    min_frequency: int | None = None
    max_frequency: int | None = None
    driver: str | None = None
    governor: str | None = None


@dataclass(frozen=True)
class NodeInventory:
    backend: str | None = None
    gpus: list[GpuInventory] | None = None
    cpus: list[CpuInventory] | None = None

    def gpu(self, uuid: str) -> GpuInventory | None:
        return next((gpu for gpu in self.gpus or [] if gpu.uuid == uuid), None)


#: How a tuner keeps a budget: per-GPU power limits (held by the firmware), clock caps (where a limit cannot go
#: low enough, or the GPU refuses limits), or neither (the GPUs draw less than the budget).
POWER_LIMIT = "PowerLimit"
CLOCK_CAP = "ClockCap"
NO_LEVER = "None"
LEVERS = (POWER_LIMIT, CLOCK_CAP, NO_LEVER)


@dataclass(frozen=True)
class BudgetStatus:
    """How the node's tuner keeps one policy's budget: what the GPUs drew (their mean over the last second, and
    their highest instantaneous reading together over the last ten seconds: what a burst needs), the lever in use,
    whether the last second's mean is within the budget, and the least the GPUs can draw (their floor)."""

    policy: str
    watts: int | None = None
    power_mean: float | None = None
    power_max: float | None = None
    lever: str | None = None
    met: bool | None = None
    floor: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class NodePower:
    """The GPU power of the whole node as its tuner reads it: the mean over the last second and the highest
    instantaneous reading over the last ten (W). What power domains count, budgeted GPUs or not."""

    mean: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class NodeFrequenciesStatus:
    observed_generation: int | None = None
    last_updated: str | None = None
    gpu_count: int | None = None
    applied_count: int | None = None
    pending_count: int | None = None
    gpu_frequencies: list[GpuFrequencyStatus] | None = None
    cpu_frequencies: list[CpuFrequencyStatus] | None = None
    inventory: NodeInventory | None = None
    budgets: list[BudgetStatus] | None = None
    power: NodePower | None = None
    conditions: list[Condition] | None = None


@dataclass(frozen=True)
class NodeFrequencies:
    """Cluster-scoped, named after its node."""

    metadata: ObjectMeta
    spec: NodeFrequenciesSpec
    status: NodeFrequenciesStatus | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> NodeFrequencies:
        return cls(
            metadata=ObjectMeta.from_api(data.get("metadata") or {}),
            spec=from_dict(NodeFrequenciesSpec, data.get("spec"), "spec"),
            status=(from_dict(NodeFrequenciesStatus, data["status"], "status")
                    if data.get("status") is not None else None),
        )

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": NODE_FREQUENCIES_KIND,
                               "metadata": self.metadata.to_api(), "spec": to_dict(self.spec)}
        if self.status is not None:
            out["status"] = to_dict(self.status)
        return out

    @property
    def inventory(self) -> NodeInventory | None:
        return self.status.inventory if self.status else None
