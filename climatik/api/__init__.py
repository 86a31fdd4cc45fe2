"""Typed Climatik API objects (climatik.io/v1alpha1), parsed once from the API server's plain dicts."""

from climatik.api.codec import DecodedCache, DecodeError, from_dict, to_dict
from climatik.api.conditions import Condition
from climatik.api.meta import ObjectMeta, format_precise_time, format_time, parse_time
from climatik.api.nodefrequencies import (
    BudgetStatus,
    CpuFrequency,
    CpuFrequencyStatus,
    CpuInventory,
    GpuFrequency,
    GpuFrequencyStatus,
    GpuInventory,
    NodeFrequencies,
    NodeFrequenciesSpec,
    NodeFrequenciesStatus,
    NodeInventory,
    PowerBudget,
)
from climatik.api.policy import (
    AlgorithmRef,
    GpuObservation,
    LabelSelector,
    NodeObservation,
    PolicySpec,
    PolicyStatus,
    PowerCappingPolicy,
    Recommendation,
    SelectorRequirement,
)

__all__ = [
    "AlgorithmRef",
    "BudgetStatus",
    "Condition",
    "CpuFrequency",
    "CpuFrequencyStatus",
    "CpuInventory",
    "DecodeError",
    "DecodedCache",
    "GpuFrequency",
    "GpuFrequencyStatus",
    "GpuInventory",
    "GpuObservation",
    "LabelSelector",
    "NodeFrequencies",
    "NodeFrequenciesSpec",
    "NodeFrequenciesStatus",
    "NodeInventory",
    "NodeObservation",
    "ObjectMeta",
    "PolicySpec",
    "PolicyStatus",
    "PowerBudget",
    "PowerCappingPolicy",
    "Recommendation",
    "SelectorRequirement",
    "format_precise_time",
    "format_time",
    "from_dict",
    "parse_time",
    "to_dict",
]
