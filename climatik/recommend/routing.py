"""Which policies a NodeFrequencies event concerns: those named in its entries (they target the node) and those
whose status observes the node (their GPUs are there). A tuner reporting its inventory thus wakes the policies
that wait for it, and a spec changed by hand wakes the policies that own its entries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from climatik.kube.store import CacheReader, IndexFunc, Obj, object_key

#: Policy cache index: the nodes a policy's status observes.
BY_OBSERVED_NODE = "observedNode"


def observed_nodes(obj: Obj) -> list[str]:
    """The node names in a policy's status.nodes (the monitor's observations)."""
    status = obj.get("status")
    nodes = status.get("nodes") if isinstance(status, Mapping) else None
    names = {node.get("name") for node in nodes or [] if isinstance(node, Mapping)}
    return sorted(name for name in names if isinstance(name, str) and name)


POLICY_INDEXES: Mapping[str, IndexFunc] = {BY_OBSERVED_NODE: observed_nodes}


def policies_of_node(policies: CacheReader) -> Callable[[Obj], list[str]]:
    """A mapper from a NodeFrequencies object to the keys of the policies it concerns."""

    def mapper(obj: Obj) -> list[str]:
        spec: Mapping[str, Any] = obj.get("spec") or {}
        keys = {entry.get("policy") for field in ("gpuFrequencies", "cpuFrequencies")
                for entry in spec.get(field) or [] if isinstance(entry, Mapping)}
        name = spec.get("nodeName") or (obj.get("metadata") or {}).get("name")
        if isinstance(name, str) and name:
            keys |= {object_key(policy) for policy in policies.by_index(BY_OBSERVED_NODE, name)}
        return sorted(key for key in keys if isinstance(key, str) and "/" in key)

    return mapper
