"""A `KubeClient` whose requests are served by a `FakeCluster` instead of the network.

It reuses `KubeClient`'s verbs and path building, so code under test runs exactly as in production down to
the REST path; only the transport (`request` and `watch`) is replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from climatik.kube.client import (
    CONFIG_MAPS,
    EVENTS,
    JSON,
    LEASES,
    NAMESPACES,
    NODE_FREQUENCIES,
    NODES,
    PODS,
    POLICIES,
    POWER_DOMAINS,
    KubeClient,
    Resource,
)
from climatik.kube.errors import InvalidError
from support.kube.cluster import FakeCluster
from support.kube.fakewatch import FakeWatch

KNOWN = (POLICIES, NODE_FREQUENCIES, POWER_DOMAINS, PODS, NODES, EVENTS, CONFIG_MAPS, NAMESPACES, LEASES)


class FakeKubeClient(KubeClient):
    """Talks to `cluster`. `gone_as_event` makes watches from compacted versions answer with an ERROR event
    inside the stream instead of an HTTP 410 (the real server does either, depending on where it noticed)."""

    def __init__(
        self, cluster: FakeCluster, *, resources: tuple[Resource, ...] = KNOWN, gone_as_event: bool = False
    ) -> None:
        super().__init__(None)
        self.cluster = cluster
        self.gone_as_event = gone_as_event
        self._by_path = {(r.group, r.version, r.plural): r for r in resources}

    @property
    def server(self) -> str:
        return "fake://cluster"

    def close(self) -> None:
        pass

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        resource, namespace, name, subresource = self._route(path)
        query = query or {}
        if method == "GET" and name is None:
            return self.cluster.list(
                resource,
                namespace,
                label_selector=query.get("labelSelector", ""),
                field_selector=query.get("fieldSelector", ""),
            )
        if method == "GET" and name is not None:
            return self.cluster.get(resource, namespace, name)
        if method == "POST" and name is None:
            return self.cluster.create(resource, namespace, body)
        if method == "PUT" and name is not None:
            return self.cluster.update(resource, namespace, name, body, subresource=subresource)
        if method == "PATCH" and name is not None:
            if "merge-patch" not in content_type:
                raise InvalidError(f"the fake cluster only speaks merge patches, not {content_type}", status=415)
            return self.cluster.patch(resource, namespace, name, body, subresource=subresource)
        if method == "DELETE" and name is not None:
            return self.cluster.delete(resource, namespace, name, preconditions=(body or {}).get("preconditions"))
        raise InvalidError(f"the fake cluster does not serve {method} {path}", status=405)

    def watch(
        self,
        resource: Resource,
        *,
        resource_version: str,
        timeout_seconds: int,
        read_timeout: float,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        allow_bookmarks: bool = True,
    ) -> FakeWatch:
        return self.cluster.watch(
            resource,
            namespace,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            label_selector=label_selector,
            field_selector=field_selector,
            gone_as_event=self.gone_as_event,
        )

    def _route(self, path: str) -> tuple[Resource, str | None, str | None, str]:
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":  # /namespaces/<ns>/<plural>[/<name>[/<sub>]]
            namespace, rest = rest[1], rest[2:]
        resource = self._by_path.get((group, version, rest[0]))
        if resource is None:
            raise InvalidError(f"the fake cluster does not know {path}", status=404)
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else ""
        return resource, namespace, name, subresource
