"""Which pods a policy selects: running pods on a node, in the policy's namespace, matching its selector."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from climatik.api import LabelSelector
from climatik.prom.profiles import PodKey


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
