"""The pod as the monitor's cache keeps it: only what the monitor reads, shared where pods repeat each other.

The monitor caches every pod of the cluster (a policy may select any of them) and reads little of each: its
name, namespace and labels (the selectors and the label index), its node (`spec.nodeName`, the node index), its
phase and deletion mark (only running pods count), and whether it holds GPUs (a GPU or MIG resource in a
container's limits, or a dynamic resource claim; climatik.monitor.core). A pod as the API server sends it is
several kilobytes, most of it managed fields, the spec's volumes, environment and probes, and the status's
container states. `trim_pod` keeps the fields above, plus `uid` and `resourceVersion` (the informer compares
versions when it lists again), as a valid subset of the Pod schema, so that the same readers work on a trimmed
pod and on a full one.

Strings that repeat from pod to pod (field names, namespaces, node names, label keys and values, resource
names) are interned, so that thousands of pods share one copy of each (Python frees an interned string once
nothing uses it any more), and `PodTrimmer` shares the parts many pods have alike.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from climatik.kube.store import freeze
from climatik.monitor.core import is_gpu_resource

_METADATA = ("name", "namespace", "uid", "resourceVersion", "labels", "deletionTimestamp")
_SHARED = ("namespace", "labels")
#: Given a part's shape and the part, an equal part to keep instead (the same one for every pod alike).
Share = Callable[[Hashable, Any], Any]
#: The most distinct shapes (a phase, a pod's GPU containers) kept for sharing; pods have a handful.
MAX_SHAPES = 1024


class PodTrimmer:
    """Trims pods (see the module) for the pod informer, its `transform`. Parts that many pods have alike (the
    status with its phase, the GPU limits of the containers) are frozen once and shared by every pod that has
    them, which the cache keeps as they are."""

    def __init__(self) -> None:
        self._shapes: dict[Hashable, Any] = {}

    def __call__(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        return trim_pod(pod, share=self._share)

    def _share(self, shape: Hashable, part: Any) -> Any:
        found = self._shapes.get(shape)
        if found is None:
            found = freeze(part)
            if len(self._shapes) < MAX_SHAPES:
                self._shapes[shape] = found
        return found


def trim_pod(pod: Mapping[str, Any], *, share: Share | None = None) -> dict[str, Any]:
    """The fields of `pod` the monitor reads (see the module), as a new dict. `share(shape, part)` may return an
    equal part to keep instead of `part` (PodTrimmer shares them between pods)."""
    share = share or _unshared
    metadata = pod.get("metadata") or {}
    kept_metadata: dict[str, Any] = {}
    for name in _METADATA:
        value = metadata.get(name)
        if value:
            kept_metadata[_key(name)] = _shared(value) if name in _SHARED else value
    trimmed: dict[str, Any] = {_key("metadata"): kept_metadata}
    spec = _trim_spec(pod.get("spec") or {}, share)
    if spec:
        trimmed[_key("spec")] = spec
    phase = (pod.get("status") or {}).get("phase")
    if phase:
        trimmed[_key("status")] = share(("status", phase), {_key("phase"): _key(str(phase))})
    return trimmed


def _trim_spec(spec: Mapping[str, Any], share: Share) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    if spec.get("nodeName"):
        kept[_key("nodeName")] = _key(str(spec["nodeName"]))
    for field in ("containers", "initContainers"):
        # Only containers that hold GPUs, and of them only their GPU limits: the device plugin allocates from
        # limits (an extended resource's request always equals its limit).
        limits = [found for found in (_gpu_limits(c) for c in spec.get(field) or []) if found]
        if limits:
            shape = (field, tuple(tuple(sorted(each.items())) for each in limits))
            kept[_key(field)] = share(shape, [{_key("resources"): {_key("limits"): each}} for each in limits])
    claims = spec.get("resourceClaims")
    if claims:
        kept[_key("resourceClaims")] = [{_key("name"): _key(str(c.get("name", "")))} for c in claims
                                        if isinstance(c, Mapping)]
    return kept


def _gpu_limits(container: Any) -> dict[str, str]:
    if not isinstance(container, Mapping):
        return {}
    limits = (container.get("resources") or {}).get("limits") or {}
    return {_key(str(name)): _key(str(amount)) for name, amount in limits.items() if is_gpu_resource(str(name))}


def _shared(value: Any) -> Any:
    """A namespace, or a label map, with its strings interned."""
    if isinstance(value, str):
        return _key(value)
    if isinstance(value, Mapping):
        return {_key(str(k)): _key(str(v)) for k, v in value.items()}
    return value


def _unshared(_shape: Hashable, part: Any) -> Any:
    return part


def _key(text: str) -> str:
    return sys.intern(text)
