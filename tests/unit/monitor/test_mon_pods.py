"""The pod cache keeps only what the monitor reads: the same answers from a trimmed pod as from the pod the API
server sends, in well under 2 KB a pod."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from support.memory import cached_bytes

from climatik.api import LabelSelector
from climatik.kube.store import POD_INDEXES, freeze
from climatik.monitor.core import holds_gpus, is_running_on_a_node, select_pods
from climatik.monitor.pods import PodTrimmer, trim_pod
from climatik.monitor.reconciler import BY_LABEL, index_by_label

INDEXES = {**POD_INDEXES, BY_LABEL: index_by_label}


def vllm_pod(name: str, *, node: str = "gpu-node-07", gpus: int = 2, phase: str = "Running") -> dict[str, Any]:
    """A pod of an LLM inference Deployment as the API server lists it: managed fields, a GPU server container
    with its environment, probes and mounts, a sidecar without GPUs, and the kubelet's status."""
    server = {
        "name": "vllm", "image": "vllm/vllm-openai:v0.6.3", "args": ["--model", "meta-llama/Llama-3.1-70B",
                                                                   "--tensor-parallel-size", str(gpus)],
        "env": [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(12)],
        "ports": [{"containerPort": 8000, "name": "http", "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": str(gpus), "memory": "200Gi", "cpu": "16"},
                      "requests": {"nvidia.com/gpu": str(gpus), "memory": "200Gi", "cpu": "16"}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5},
        "volumeMounts": [{"name": "cache", "mountPath": "/root/.cache"}, {"name": "shm", "mountPath": "/dev/shm"}],
    }
    sidecar = {"name": "metrics", "image": "otel/collector:0.110", "resources": {"limits": {"cpu": "500m"}}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "inference", "uid": "0b5c7e7e-2f7a-4c1a-9e0f-1b2c3d4e5f60",
            "resourceVersion": "48211973", "creationTimestamp": "2026-11-01T10:00:00Z",
            "generateName": "llama-70b-7d9f8c6b5-",
            "labels": {"app": "llama-70b", "pod-template-hash": "7d9f8c6b5", "tier": "serving"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-01T09:59:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llama-70b-7d9f8c6b5",
                                 "uid": "1c2d3e4f-0000-4000-8000-000000000001", "controller": True}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:containers": {
                                   "k:{\"name\":\"vllm\"}": {f"f:field{i}": {} for i in range(30)}}}}},
                              {"manager": "kubelet", "operation": "Update", "subresource": "status",
                               "fieldsV1": {"f:status": {f"f:cond{i}": {} for i in range(20)}}}],
        },
        "spec": {
            "nodeName": node, "containers": [server, sidecar], "restartPolicy": "Always",
            "schedulerName": "default-scheduler", "serviceAccountName": "default",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "volumes": [{"name": "cache", "hostPath": {"path": "/data/hf-cache"}},
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}],
        },
        "status": {
            "phase": phase, "podIP": "10.244.7.12", "hostIP": "10.0.7.1", "qosClass": "Guaranteed",
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": "2026-11-01T10:01:00Z"}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": "vllm", "ready": True, "restartCount": 0, "image": server["image"],
                                   "containerID": "containerd://" + "a" * 64,
                                   "state": {"running": {"startedAt": "2026-11-01T10:00:30Z"}}}],
        },
    }


def decoded(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as a watch event hands it over: decoded from its own JSON, sharing no string with another."""
    return dict(json.loads(json.dumps(pod)))


def test_a_cached_pod_takes_under_2_kb_where_the_api_object_takes_several() -> None:
    trimmer = PodTrimmer()
    pods = [vllm_pod(f"llama-70b-7d9f8c6b5-{i:05d}", node=f"gpu-node-{i // 4:03d}") for i in range(400)]

    full = cached_bytes([freeze(decoded(p)) for p in pods])
    trimmed = cached_bytes([freeze(trimmer(decoded(p))) for p in pods])

    assert full > 5_000
    assert trimmed < 1_200


@pytest.mark.parametrize("changed", [
    lambda p: p,
    lambda p: p["status"].update(phase="Pending"),
    lambda p: p["spec"].pop("nodeName"),
    lambda p: p["metadata"].update(deletionTimestamp="2026-11-29T00:00:00Z"),
    lambda p: p["spec"]["containers"][0]["resources"].update(limits={"cpu": "16"}),
    lambda p: p["spec"]["containers"][0]["resources"].update(limits={"nvidia.com/mig-3g.40gb": "1"}),
    lambda p: p["spec"].update(initContainers=[{"name": "warm", "resources": {"limits": {"amd.com/gpu": "1"}}}]),
    lambda p: p["spec"].update(resourceClaims=[{"name": "gpu", "resourceClaimName": "gpu-claim"}]),
])
def test_the_monitor_reads_the_same_from_a_trimmed_pod_as_from_the_full_one(changed: Any) -> None:
    pod = vllm_pod("llama-70b-0")
    changed(pod)
    trimmed = PodTrimmer()(copy.deepcopy(pod))
    selector = LabelSelector(match_labels={"app": "llama-70b"})

    assert is_running_on_a_node(trimmed) == is_running_on_a_node(pod)
    assert holds_gpus(trimmed) == holds_gpus(pod)
    assert select_pods(selector, [trimmed]) == select_pods(selector, [pod])
    assert {name: f(trimmed) for name, f in INDEXES.items()} == {name: f(pod) for name, f in INDEXES.items()}
    assert trimmed["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]


def test_what_pods_have_alike_is_kept_once() -> None:
    trimmer = PodTrimmer()

    a, b = (freeze(trimmer(decoded(vllm_pod(name)))) for name in ("llama-70b-0", "llama-70b-1"))

    assert a["status"] is b["status"]
    assert a["spec"]["containers"] is b["spec"]["containers"]
    assert a["metadata"]["labels"]["app"] is b["metadata"]["labels"]["app"]
    assert "managedFields" not in a["metadata"] and "ownerReferences" not in a["metadata"]


def test_trimming_does_not_touch_the_pod_it_is_given() -> None:
    pod = vllm_pod("llama-70b-0")
    before = copy.deepcopy(pod)

    trim_pod(pod)

    assert pod == before
