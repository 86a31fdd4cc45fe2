"""Kubernetes objects for a simulated GPU cluster: Namespaces, Nodes, and Running Pods where the sim places them.

There is no kubelet in the test control plane, so pods are plain API objects whose status is written here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from climatik.kube.client import NAMESPACES, NODES, PODS, KubeClient
from climatik.kube.errors import AlreadyExistsError


def ensure_namespace(client: KubeClient, name: str) -> None:
    with contextlib.suppress(AlreadyExistsError):
        client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def create_node(client: KubeClient, name: str, gpus: int, *, labels: Mapping[str, str] | None = None) -> None:
    """A Node object advertising `gpus` nvidia.com/gpu, as the device plugin would, with `labels` besides
    GPU feature discovery's (a rack or row label, for a PowerDomain)."""
    body = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.present": "true", **(labels or {})}}}
    try:
        client.create(NODES, body)
    except AlreadyExistsError:
        return
    node = client.get(NODES, name)
    node["status"] = {"capacity": {"nvidia.com/gpu": str(gpus)}, "allocatable": {"nvidia.com/gpu": str(gpus)},
                      "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                      "message": "simulated"}]}
    client.replace_status(NODES, node)


def create_running_pod(client: KubeClient, *, namespace: str, name: str, node: str, labels: Mapping[str, str],
                       gpus: int = 1) -> dict[str, Any]:
    """A pod bound to `node` with phase Running (what the scheduler and kubelet would have done)."""
    body = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"nodeName": node, "containers": [{
            "name": "main", "image": "registry.invalid/llm-server:1",
            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
    }
    pod = client.create(PODS, body)
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return client.replace_status(PODS, pod)


def create_pods(client: KubeClient, pods: Iterable[tuple[str, str, str, Mapping[str, str]]]) -> None:
    """(namespace, name, node, labels) each; namespaces are created as needed."""
    seen: set[str] = set()
    for namespace, name, node, labels in pods:
        if namespace not in seen:
            ensure_namespace(client, namespace)
            seen.add(namespace)
        create_running_pod(client, namespace=namespace, name=name, node=node, labels=labels)
