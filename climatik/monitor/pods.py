"""Which pods a policy selects: running pods on a node, in the policy's namespace, matching its selector."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from climatik.api import LabelSelector
from climatik.kube.store import BY_NAMESPACE, CacheReader
from climatik.prom.profiles import PodKey

#: Pod index by "namespace/key=value" of each label, so a matchLabels selector reads only its candidates.
BY_LABEL = "label"


@dataclass(frozen=True)
class SelectedPod:
    """A selected pod and the node it runs on."""

    key: PodKey
    node: str


def is_running_on_a_node(pod: Mapping[str, Any]) -> bool:
    """Only running pods scheduled on a node draw power; pending, finished and deleted pods do not count."""
    metadata = pod.get("metadata") or {}
    return (
        bool((pod.get("spec") or {}).get("nodeName"))
        and (pod.get("status") or {}).get("phase") == "Running"
        and not metadata.get("deletionTimestamp")
    )


def select_pods(selector: LabelSelector, pods: Iterable[Mapping[str, Any]]) -> list[SelectedPod]:
    """The running pods among `pods` (all from one namespace) that `selector` matches, sorted by name."""
    chosen = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        if is_running_on_a_node(pod) and selector.matches(metadata.get("labels")):
            chosen.append(SelectedPod(PodKey(metadata.get("namespace", ""), metadata.get("name", "")),
                                      pod["spec"]["nodeName"]))
    return sorted(chosen, key=lambda p: p.key)


def index_by_label(pod: Mapping[str, Any]) -> list[str]:
    """One index value per label: "namespace/key=value"."""
    metadata = pod.get("metadata") or {}
    namespace = metadata.get("namespace", "")
    return [f"{namespace}/{key}={value}" for key, value in (metadata.get("labels") or {}).items()]


def candidate_pods(pods: CacheReader, namespace: str, selector: LabelSelector) -> list[dict[str, Any]]:
    """The pods that can match `selector`: those carrying its rarest matchLabels pair, else the whole namespace.

    With many policies in one namespace this keeps a cycle from testing every selector against every pod.
    """
    buckets = [pods.by_index(BY_LABEL, f"{namespace}/{key}={value}")
               for key, value in (selector.match_labels or {}).items()]
    if buckets:
        return min(buckets, key=len)
    return pods.by_index(BY_NAMESPACE, namespace)
