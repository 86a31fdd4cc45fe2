"""The API resources Climatik reads and writes, and how their REST paths are built."""

from __future__ import annotations

from dataclasses import dataclass

from climatik.api.constants import (
    GROUP,
    NODE_FREQUENCIES_KIND,
    NODE_FREQUENCIES_PLURAL,
    POLICY_KIND,
    POLICY_PLURAL,
    VERSION,
)


@dataclass(frozen=True)
class Resource:
    """One resource type: where it lives in the API and whether its objects live in namespaces."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, *, namespace: str | None = None, name: str | None = None, subresource: str = "") -> str:
        """The REST path of the collection (no name) or of one object (and optionally a subresource).

        A namespaced resource without a namespace addresses the collection across all namespaces.
        """
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        elif not self.namespaced and namespace:
            raise ValueError(f"{self.kind} is cluster-scoped; no namespace expected")
        base += f"/{self.plural}"
        if name is not None:
            if not name:
                raise ValueError("empty object name")
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        elif subresource:
            raise ValueError("a subresource needs an object name")
        return base


POLICIES = Resource(GROUP, VERSION, POLICY_PLURAL, POLICY_KIND, namespaced=True)
NODE_FREQUENCIES = Resource(GROUP, VERSION, NODE_FREQUENCIES_PLURAL, NODE_FREQUENCIES_KIND, namespaced=False)
PODS = Resource("", "v1", "pods", "Pod", namespaced=True)
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
EVENTS = Resource("", "v1", "events", "Event", namespaced=True)
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap", namespaced=True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
