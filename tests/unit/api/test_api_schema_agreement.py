"""The typed dataclasses in climatik.api and the CRD schemas under manifests/crd describe the same objects."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from climatik.api import NodeFrequencies, PowerCappingPolicy
from climatik.api.codec import json_fields, json_name
from climatik.api.domain import PowerDomain, PowerDomainSpec, PowerDomainStatus
from climatik.api.nodefrequencies import NodeFrequenciesSpec, NodeFrequenciesStatus
from climatik.api.policy import PolicySpec, PolicyStatus

CRD_DIR = Path(__file__).resolve().parents[3] / "manifests" / "crd"
RESOURCES = {
    "climatik.io_powercappingpolicies.yaml": (PowerCappingPolicy, PolicySpec, PolicyStatus),
    "climatik.io_nodefrequencies.yaml": (NodeFrequencies, NodeFrequenciesSpec, NodeFrequenciesStatus),
    "climatik.io_powerdomains.yaml": (PowerDomain, PowerDomainSpec, PowerDomainStatus),
}
SCALARS = {"integer": int, "number": float, "string": str, "boolean": bool}


def crd_schema(filename: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRD_DIR / filename).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return inner
    return hint


def disagreements(schema: dict[str, Any], hint: Any, path: str) -> list[str]:
    """Every way the schema at `path` and the type `hint` disagree."""
    hint = unwrap_optional(hint)
    kind = schema.get("type")
    if dataclasses.is_dataclass(hint):
        if kind != "object" or "properties" not in schema:
            return [f"{path}: schema is {kind}, model is {hint.__name__}"]
        hints = typing.get_type_hints(hint)
        fields = {json_name(f): hints[f.name] for f in json_fields(hint)}  # type: ignore[arg-type]
        problems = [f"{path}.{name}: in schema, not modelled" for name in schema["properties"] if name not in fields]
        problems += [f"{path}.{name}: modelled, not in schema" for name in fields if name not in schema["properties"]]
        for name in set(fields) & set(schema["properties"]):
            problems += disagreements(schema["properties"][name], fields[name], f"{path}.{name}")
        return problems
    origin = typing.get_origin(hint)
    if origin is list:
        if kind != "array":
            return [f"{path}: schema is {kind}, model is a list"]
        return disagreements(schema["items"], typing.get_args(hint)[0], f"{path}[]")
    if origin is dict:
        if kind != "object" or "additionalProperties" not in schema:
            return [f"{path}: schema is {kind}, model is a map"]
        return disagreements(schema["additionalProperties"], typing.get_args(hint)[1], f"{path}{{}}")
    if SCALARS.get(kind) is not hint:  # type: ignore[arg-type]
        return [f"{path}: schema is {kind}, model is {hint}"]
    return []


@pytest.mark.parametrize("filename", sorted(RESOURCES))
def test_every_schema_field_is_modelled_with_the_same_type(filename: str) -> None:
    _, spec_type, status_type = RESOURCES[filename]
    schema = crd_schema(filename)["properties"]
    assert disagreements(schema["spec"], spec_type, "spec") == []
    assert disagreements(schema["status"], status_type, "status") == []


def example(schema: dict[str, Any], seed: int = 0) -> Any:
    """A value using every property the schema declares, within its bounds."""
    if "enum" in schema:
        return schema["enum"][seed % len(schema["enum"])]
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        return {name: example(sub, seed + i) for i, (name, sub) in enumerate(schema["properties"].items())}
    if kind == "object":
        return {"key-a": example(schema.get("additionalProperties", {"type": "string"}), seed)}
    if kind == "array":
        return [example(schema["items"], seed), example(schema["items"], seed + 1)]
    if kind == "integer":
        return max(schema.get("minimum", 0), 7 + seed)
    if kind == "number":
        return 123.5 + seed
    if kind == "boolean":
        return seed % 2 == 0
    if schema.get("format") == "date-time":
        return "2026-11-29T06:00:00Z"
    return f"value-{seed}"


@pytest.mark.parametrize("filename", sorted(RESOURCES))
def test_round_trip_through_the_dataclasses_is_lossless(filename: str) -> None:
    resource, _, _ = RESOURCES[filename]
    schema = crd_schema(filename)["properties"]
    obj = {
        "apiVersion": "climatik.io/v1alpha1",
        "kind": resource.__name__,
        "metadata": {"name": "n", "namespace": "ns", "resourceVersion": "42", "generation": 3,
                     "labels": {"a": "b"}, "finalizers": ["x/y"],
                     "managedFields": [{"manager": "kubectl"}], "selfLink": "kept untouched"},
        "spec": example(schema["spec"]),
        "status": example(schema["status"], seed=5),
    }
    assert resource.from_api(obj).to_api() == obj


def test_sparse_objects_round_trip_without_inventing_fields() -> None:
    obj = {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
           "metadata": {"name": "p", "namespace": "default"},
           "spec": {"powerCapLimit": 1000, "selector": {}}}
    assert PowerCappingPolicy.from_api(obj).to_api() == obj
