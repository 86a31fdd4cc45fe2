"""The API objects of the monitor benchmark: Running pods (one per GPU) and one policy per 40 pods; and what the
monitor's pod cache holds of them.

There is no scheduler or kubelet, so each pod costs two calls (create, then its Running status); a thread pool
keeps the setup of thousands of pods within a couple of minutes. What exists already is kept, so a larger
layout only adds to a smaller one.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fleet import PODS_PER_POLICY, Layout, power_of
from simworld import create_running_pod, ensure_namespace
from support.memory import cached_bytes

from climatik.kube.client import PODS, POLICIES, KubeClient, Resource
from climatik.kube.store import freeze
from climatik.monitor.pods import PodTrimmer

#: Well above the 40 GPUs' draw (at most 16 kW, about 13 kW: 55 %, under the release level), so no policy needs
#: capping and the cluster stays steady.
POWER_CAP_LIMIT_W = 24_000
#: What a hot policy (--hot) draws of its limit: inside the release band of the monitor's defaults (capping from
#: 90 %, released under 85 %), so that its GPUs' clocks are read every cycle while nothing caps.
HOT_SHARE_OF_LIMIT = 0.875


def is_hot(policy: int, hot: float) -> bool:
    """Whether policy `policy` is one of the `hot` share, spread evenly over the policies (the same at any scale)."""
    return math.floor((policy + 1) * hot) > math.floor(policy * hot)


def policy_limit(policy: int, hot: float) -> int:
    if not is_hot(policy, hot):
        return POWER_CAP_LIMIT_W
    draw = sum(power_of(gpu) for gpu in range(policy * PODS_PER_POLICY, (policy + 1) * PODS_PER_POLICY))
    return math.ceil(draw / HOT_SHARE_OF_LIMIT)


def policy_body(layout: Layout, policy: int, hot: float = 0.0) -> dict[str, object]:
    return {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
            "metadata": {"name": f"cap-{layout.app(policy)}", "namespace": layout.namespace_of(policy)},
            "spec": {"powerCapLimit": policy_limit(policy, hot),
                     "selector": {"matchLabels": {"app": layout.app(policy)}}}}


def existing_names(client: KubeClient, resource: Resource, namespace: str) -> set[str]:
    names: set[str] = set()
    token = ""
    while True:
        page = client.list(resource, namespace=namespace, limit=2000, continue_token=token)
        names.update(item["metadata"]["name"] for item in page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return names


def create_world(client: KubeClient, layout: Layout, *, threads: int = 8, hot: float = 0.0) -> tuple[int, float]:
    """Create the layout's missing pods and policies (a `hot` share of them near their limits); (objects created,
    seconds taken)."""
    started = time.perf_counter()
    have: set[tuple[str, str]] = set()
    policies: set[tuple[str, str]] = set()
    for namespace in layout.namespaces():
        ensure_namespace(client, namespace)
        have |= {(namespace, name) for name in existing_names(client, PODS, namespace)}
        policies |= {(namespace, name) for name in existing_names(client, POLICIES, namespace)}
    missing = [pod for pod in layout.pods() if (pod[0], pod[1]) not in have]

    def create_pod(pod: tuple[str, str, str, dict[str, str]]) -> None:
        namespace, name, node, labels = pod
        create_running_pod(client, namespace=namespace, name=name, node=node, labels=labels)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(create_pod, missing, chunksize=32))
    new_policies = [p for p in range(layout.policies)
                    if (layout.namespace_of(p), f"cap-{layout.app(p)}") not in policies]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda p: client.create(POLICIES, policy_body(layout, p, hot)), new_policies))
    return len(missing) + len(new_policies), time.perf_counter() - started


def cached_pod_bytes(client: KubeClient, layout: Layout) -> tuple[float, float]:
    """Memory per pod of the monitor's pod cache, as the old informer held pods (whole, as listed) and as the
    new one does (climatik.monitor.pods), from paged lists of the layout's namespaces as an informer lists."""
    whole: list[Any] = []
    trimmed: list[Any] = []
    trim = PodTrimmer()
    for namespace in layout.namespaces():
        token = ""
        while True:
            page = client.list(PODS, namespace=namespace, limit=500, continue_token=token)
            for item in page.get("items") or []:
                trimmed.append(freeze(trim(item)))
                whole.append(freeze(item))
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                break
    return cached_bytes(whole), cached_bytes(trimmed)
