"""Frequency algorithms: pure functions from a policy's spec, observations, hardware limits, current targets and
state to new targets and state. Importable without Kubernetes; no I/O.

Use `default_registry()` to get the built-in algorithms plus installed plug-ins, `registry.create(spec.algorithm)`
to build a policy's configured algorithm, and `run_step(algorithm, inp)` to run one step with the framework's
guarantees (scope, clamping to hardware limits, bounded state).
"""

from climatik.algorithms.base import (
    MAX_STATE_CHARS,
    Algorithm,
    AlgorithmError,
    AlgorithmFactory,
    AlgorithmFailedError,
    AlgorithmInput,
    AlgorithmOutput,
    CpuKey,
    CpuLimits,
    GpuLimits,
    InvalidParameterError,
    Inventory,
    Observation,
    ObservedGpu,
    ParamReader,
    StateTooLargeError,
    Targets,
    UnknownAlgorithmError,
    decode_state,
    encode_state,
)
from climatik.algorithms.closedloop import ClosedLoop, ClosedLoopConfig
from climatik.algorithms.dfs import DynamicFrequencyScaler
from climatik.algorithms.framework import (
    StepResult,
    algorithm_input,
    clamp_cpu,
    clamp_gpu,
    clamp_targets,
    held_targets,
    inventory_of,
    observation_from_status,
    policy_targets,
    run_step,
)
from climatik.algorithms.registry import (
    ENTRY_POINT_GROUP,
    AlgorithmRegistry,
    algorithm_name,
    builtin_factories,
    default_registry,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_STATE_CHARS",
    "Algorithm",
    "AlgorithmError",
    "AlgorithmFactory",
    "AlgorithmFailedError",
    "AlgorithmInput",
    "AlgorithmOutput",
    "AlgorithmRegistry",
    "ClosedLoop",
    "ClosedLoopConfig",
    "CpuKey",
    "CpuLimits",
    "DynamicFrequencyScaler",
    "GpuLimits",
    "InvalidParameterError",
    "Inventory",
    "Observation",
    "ObservedGpu",
    "ParamReader",
    "StateTooLargeError",
    "StepResult",
    "Targets",
    "UnknownAlgorithmError",
    "algorithm_input",
    "algorithm_name",
    "builtin_factories",
    "clamp_cpu",
    "clamp_gpu",
    "clamp_targets",
    "decode_state",
    "default_registry",
    "encode_state",
    "held_targets",
    "inventory_of",
    "observation_from_status",
    "policy_targets",
    "run_step",
]
