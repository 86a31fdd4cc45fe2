"""The API client: the resources Climatik reads and writes, plain-dict REST calls, and loading credentials.

It holds every use of the `kubernetes` package, which serves for what it does well (kubeconfig and in-cluster
credentials, TLS, connection pooling) and nothing else: requests go out through the `ApiClient`'s connection
pool and JSON is encoded and decoded here, so the rest of Climatik sees plain dicts and never the package's
model classes (nor its deprecated error paths). Every call has a timeout, and every failure is one of
`climatik.kube.errors`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from climatik.api.constants import (
    DOMAIN_KIND,
    DOMAIN_PLURAL,
    GROUP,
    NODE_FREQUENCIES_KIND,
    NODE_FREQUENCIES_PLURAL,
    POLICY_KIND,
    POLICY_PLURAL,
    VERSION,
)
from climatik.kube.errors import KubeError, UnavailableError, error_for_status, parse_retry_after
from climatik.kube.listwatch import HttpWatchStream, WatchStream


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
POWER_DOMAINS = Resource(GROUP, VERSION, DOMAIN_PLURAL, DOMAIN_KIND, namespaced=False)
PODS = Resource("", "v1", "pods", "Pod", namespaced=True)
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
EVENTS = Resource("", "v1", "events", "Event", namespaced=True)
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap", namespaced=True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)


JSON = "application/json"
USER_AGENT = "climatik"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeClient:
    """Plain-dict access to the API server.

    `timeout` is the read timeout of ordinary calls and `connect_timeout` that of connecting; watches get
    their own read timeout (see `watch`). Build one with `climatik.kube.client.connect()`, or hand in a
    configured `kubernetes.client.ApiClient`.
    """

    def __init__(self, api_client: Any, *, timeout: float = 30.0, connect_timeout: float = 5.0) -> None:
        self._api = api_client
        self._timeout = timeout
        self._connect_timeout = connect_timeout

    @property
    def server(self) -> str:
        return str(self._api.configuration.host)

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- typed helpers -------------------------------------------------------------------------------------

    def resource(self, resource: Resource) -> ResourceClient:
        return ResourceClient(self, resource)

    @property
    def policies(self) -> ResourceClient:
        return ResourceClient(self, POLICIES)

    @property
    def node_frequencies(self) -> ResourceClient:
        return ResourceClient(self, NODE_FREQUENCIES)

    @property
    def pods(self) -> ResourceClient:
        return ResourceClient(self, PODS)

    @property
    def nodes(self) -> ResourceClient:
        return ResourceClient(self, NODES)

    @property
    def leases(self) -> ResourceClient:
        return ResourceClient(self, LEASES)

    @property
    def events(self) -> ResourceClient:
        return ResourceClient(self, EVENTS)

    @property
    def config_maps(self) -> ResourceClient:
        return ResourceClient(self, CONFIG_MAPS)

    # -- verbs ---------------------------------------------------------------------------------------------

    def get(
        self, resource: Resource, name: str, *, namespace: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        return self.request("GET", resource.path(namespace=namespace, name=name), timeout=timeout)

    def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
        resource_version: str = "",
    ) -> dict[str, Any]:
        """One page of a list; the result is the `<Kind>List` object (items, metadata.continue, ...)."""
        query = _selectors(label_selector, field_selector)
        if limit:
            query["limit"] = str(limit)
        if continue_token:
            query["continue"] = continue_token
        if resource_version:
            query["resourceVersion"] = resource_version
        return self.request("GET", resource.path(namespace=namespace), query=query)

    def create(
        self, resource: Resource, body: Mapping[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Create `body` (its metadata.namespace says where, for namespaced kinds)."""
        path = resource.path(namespace=_namespace(resource, body))
        return self.request("POST", path, body=_typed(resource, body), timeout=timeout)

    def replace(
        self, resource: Resource, body: Mapping[str, Any], *, subresource: str = "", timeout: float | None = None
    ) -> dict[str, Any]:
        """PUT `body`; its metadata.resourceVersion, if set, makes this a compare-and-swap (409 if stale)."""
        name = str(body.get("metadata", {}).get("name", ""))
        path = resource.path(namespace=_namespace(resource, body), name=name, subresource=subresource)
        return self.request("PUT", path, body=_typed(resource, body), timeout=timeout)

    def replace_status(self, resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.replace(resource, body, subresource="status")

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        subresource: str = "",
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        path = resource.path(namespace=namespace, name=name, subresource=subresource)
        return self.request("PATCH", path, body=patch, content_type=content_type)

    def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        uid: str = "",
        resource_version: str = "",
    ) -> dict[str, Any]:
        """Delete an object, optionally only if its uid/resourceVersion still match (409 otherwise)."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if preconditions:
            body["preconditions"] = preconditions
        return self.request("DELETE", resource.path(namespace=namespace, name=name), body=body)

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
    ) -> WatchStream:
        """Open a watch from `resource_version`. The server ends it after `timeout_seconds`; if no bytes
        arrive for `read_timeout` seconds the socket is presumed hung and reading it raises UnavailableError."""
        query = _selectors(label_selector, field_selector)
        query.update(watch="true", resourceVersion=resource_version, timeoutSeconds=str(timeout_seconds))
        if allow_bookmarks:
            query["allowWatchBookmarks"] = "true"
        resp = self._call(
            "GET", resource.path(namespace=namespace), query=query, body=None, content_type=JSON,
            read_timeout=read_timeout,
        )
        return HttpWatchStream(resp)

    # -- transport -----------------------------------------------------------------------------------------

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
        """One call whose answer is a JSON object. `timeout` bounds connecting and each read (default: the
        client's timeouts)."""
        resp = self._call(
            method, path, query=query, body=body, content_type=content_type,
            read_timeout=timeout or self._timeout,
        )
        try:
            data = resp.data
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise UnavailableError(f"{method} {path}: {exc}") from exc
        finally:
            resp.release_conn()
        if not data:
            return {}
        decoded = json.loads(data)
        if not isinstance(decoded, dict):
            raise KubeError(f"{method} {path}: expected a JSON object, got {type(decoded).__name__}")
        return decoded

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        read_timeout: float,
    ) -> Any:
        configuration = self._api.configuration
        headers = {"Accept": JSON, "Content-Type": content_type, "User-Agent": USER_AGENT}
        # auth_settings() also refreshes expiring tokens (in-cluster service account tokens rotate).
        bearer = configuration.auth_settings().get("BearerToken")
        if bearer:
            headers[bearer["key"]] = bearer["value"]
        url = configuration.host + path + (f"?{urlencode(query)}" if query else "")
        payload = None if body is None else json.dumps(body).encode()
        try:
            resp = self._api.rest_client.pool_manager.request(
                method,
                url,
                body=payload,
                headers=headers,
                preload_content=False,
                timeout=urllib3.Timeout(connect=min(self._connect_timeout, read_timeout), read=read_timeout),
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise UnavailableError(f"{method} {path}: {exc}") from exc
        if 200 <= resp.status < 300:
            return resp
        try:
            data = resp.data
        except (urllib3.exceptions.HTTPError, OSError):
            data = b""
        finally:
            resp.release_conn()
        raise error_for_status(resp.status, data, fallback=f"{method} {path}: HTTP {resp.status} {resp.reason}",
                               retry_after=parse_retry_after(resp.headers.get("Retry-After")))


class ResourceClient:
    """The verbs of `KubeClient` bound to one resource type."""

    def __init__(self, client: KubeClient, resource: Resource) -> None:
        self.client = client
        self.resource = resource

    def get(self, name: str, *, namespace: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        return self.client.get(self.resource, name, namespace=namespace, timeout=timeout)

    def list(self, *, namespace: str | None = None, label_selector: str = "", field_selector: str = "") -> list[
        dict[str, Any]
    ]:
        """All items (following continue tokens)."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.client.list(
                self.resource,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=500,
                continue_token=token,
            )
            items.extend(page.get("items") or [])
            token = str(page.get("metadata", {}).get("continue", "") or "")
            if not token:
                return items

    def create(self, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        return self.client.create(self.resource, body, timeout=timeout)

    def replace(self, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        return self.client.replace(self.resource, body, timeout=timeout)

    def replace_status(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.client.replace_status(self.resource, body)

    def patch(
        self, name: str, patch: Any, *, namespace: str | None = None, subresource: str = ""
    ) -> dict[str, Any]:
        return self.client.patch(self.resource, name, patch, namespace=namespace, subresource=subresource)

    def delete(self, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        return self.client.delete(self.resource, name, namespace=namespace)


def _selectors(label_selector: str, field_selector: str) -> dict[str, str]:
    query: dict[str, str] = {}
    if label_selector:
        query["labelSelector"] = label_selector
    if field_selector:
        query["fieldSelector"] = field_selector
    return query


def _typed(resource: Resource, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """`body` with apiVersion and kind filled in (custom resources need them; list items lack them)."""
    if body.get("apiVersion") and body.get("kind"):
        return body
    return {**body, "apiVersion": resource.api_version, "kind": resource.kind}


def _namespace(resource: Resource, body: Mapping[str, Any]) -> str | None:
    if not resource.namespaced:
        return None
    namespace = body.get("metadata", {}).get("namespace")
    if not namespace:
        raise ValueError(f"a {resource.kind} needs metadata.namespace")
    return str(namespace)


def connect(
    kubeconfig: str | os.PathLike[str] | None = None,
    *,
    context: str | None = None,
    in_cluster: bool | None = None,
    timeout: float = 30.0,
    connect_timeout: float = 5.0,
    pool_size: int = 32,
) -> KubeClient:
    """A client from a kubeconfig file, or from the pod's service account.

    With `in_cluster=None` the service account is used when no kubeconfig is named and the process runs in a
    pod (KUBERNETES_SERVICE_HOST is set); otherwise the kubeconfig (default: $KUBECONFIG, ~/.kube/config).
    """
    configuration = k8s_client.Configuration()
    if in_cluster is None:
        in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            path = os.fspath(kubeconfig) if kubeconfig is not None else None
            k8s_config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration, persist_config=False
            )
    except ConfigException as exc:
        raise KubeError(f"cannot load Kubernetes credentials: {exc}") from exc
    # Retry only failed connects: re-sending a request the server may have seen is the caller's decision. A 429
    # or 503 must come back as itself (urllib3 would otherwise turn one with a Retry-After header into "too many
    # error responses", without status or delay): an UnavailableError carrying the server's Retry-After, which
    # callers honour (the reflector does, within a bound) rather than sleeping through it here, uninterruptibly.
    configuration.retries = urllib3.Retry(total=3, connect=3, read=0, status=0, other=0, redirect=0,
                                          respect_retry_after_header=False)
    configuration.connection_pool_maxsize = pool_size
    api_client = k8s_client.ApiClient(configuration)
    return KubeClient(api_client, timeout=timeout, connect_timeout=connect_timeout)
