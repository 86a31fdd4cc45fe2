"""Checks of a policy spec that the CRD schema cannot express, shared by the monitor and the recommender so that
both write the same InvalidSpec condition."""

from __future__ import annotations

from climatik.algorithms.errors import AlgorithmError
from climatik.algorithms.registry import AlgorithmRegistry
from climatik.api import PolicySpec


def spec_problems(spec: PolicySpec, registry: AlgorithmRegistry) -> list[str]:
    """What is wrong with `spec` (selector operators, the algorithm's name and parameters); [] when valid."""
    problems = spec.selector.problems()
    try:
        registry.create(spec.algorithm)
    except AlgorithmError as exc:
        problems.append(str(exc))
    return problems
