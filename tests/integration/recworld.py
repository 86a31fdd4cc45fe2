"""A cluster as the recommender sees it, spoken through kubectl: policies written by their users, statuses written
the way the monitor writes them and NodeFrequencies inventories and acknowledgements the way tuners report them
(both through the status subresource), so that a real `climatik recommend` sees exactly what it would."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from typing import Any

from climatik_procs import wait_for

STEPS = list(range(210, 1981, 15))
# dynamic-frequency-scaler at 0.5 cuts a GPU measured at 1980 MHz to 990 MHz, a supported step: easy to check.
HALVING = {"name": "dynamic-frequency-scaler", "parameters": {"scaling-factor": "0.5"}}

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def gpus(prefix: str, count: int) -> list[str]:
    return [f"GPU-{prefix}-{i:04d}-0000-4000-8000-000000000000" for i in range(count)]


def remove_created(kubectl: Kubectl, made: dict[str, set[str]], *, diagnostics: Callable[[], str]) -> None:
    """Delete the policies of the namespaces in `made` (the recommender must still run: their finalizers wait for
    the tuners, which acknowledge here as tuners do) and the NodeFrequencies objects of its nodes."""
    for namespace in sorted(made["namespaces"]):
        kubectl("delete", "pcp", "--all", "-n", namespace, "--wait=false")

    def tuners_acknowledge() -> None:
        for node in sorted(made["nodes"]):
            obj = kubectl("get", "nf", node, "-o", "json")
            if obj.returncode == 0:
                generation = json.loads(obj.stdout)["metadata"]["generation"]
                kubectl("patch", "nf", node, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"observedGeneration": generation}}))

    for namespace in sorted(made["namespaces"]):
        wait_for(lambda ns=namespace: tuners_acknowledge() or not json.loads(kubectl(  # type: ignore[misc]
            "get", "pcp", "-n", ns, "-o", "json").stdout)["items"],
                 what=f"the policies of {namespace} gone", diagnostics=diagnostics)
    for node in sorted(made["nodes"]):
        kubectl("delete", "nf", node, "--ignore-not-found")


class Cluster:
    """kubectl, spoken the way the monitor and the tuners write."""

    def __init__(self, kubectl, created: dict[str, set[str]], namespace: str) -> None:  # type: ignore[no-untyped-def]
        self.kubectl = kubectl
        self.namespace = namespace
        self.created = created
        assert kubectl("create", "namespace", namespace).returncode == 0
        created["namespaces"].add(namespace)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.kubectl(*args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        return str(result.stdout)

    def tuner_reports(self, node: str, gpus: list[str]) -> None:
        """What a node's tuner does: report the inventory in status (creating the object, as the recommender
        would have, when the test starts from a node without one)."""
        self.created["nodes"].add(node)
        if self.kubectl("get", "nf", node).returncode != 0:
            body = {"apiVersion": "climatik.io/v1alpha1", "kind": "NodeFrequencies", "metadata": {"name": node},
                    "spec": {"nodeName": node}}
            self.ok("create", "-f", "-", stdin=json.dumps(body))
        inventory = {"backend": "sim", "gpus": [
            {"uuid": uuid, "index": i, "model": "NVIDIA H100 80GB HBM3", "minFrequency": 210, "maxFrequency": 1980,
             "defaultFrequency": 1980, "supportedFrequencies": STEPS, "powerLimit": 700}
            for i, uuid in enumerate(gpus)]}
        self.ok("patch", "nf", node, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"gpuCount": len(gpus), "inventory": inventory}}))

    def tuner_applies(self, node: str) -> None:
        """What a node's tuner does once it applied its spec: every entry Applied and the spec's generation
        acknowledged, each budget reported as kept."""
        obj = self.node(node)
        spec, generation = obj["spec"], obj["metadata"]["generation"]
        entries = [{"gpuId": e["gpuId"], "status": "Applied", "targetFrequency": e["targetFrequency"],
                    "currentFrequency": e["targetFrequency"]} for e in spec.get("gpuFrequencies") or []]
        budgets = [{"policy": b["policy"], "watts": b["watts"], "powerMean": 0.8 * b["watts"],
                    "powerMax": 0.9 * b["watts"], "lever": "PowerLimit", "met": True}
                   for b in spec.get("powerBudgets") or []]
        self.ok("patch", "nf", node, "--subresource=status", "--type=merge", "-p", json.dumps(
            {"status": {"observedGeneration": generation, "gpuFrequencies": entries, "budgets": budgets}}))

    def policy(self, name: str, *, limit: int = 1000, algorithm: dict[str, Any] | None = None,
               **spec: Any) -> None:
        body = {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"powerCapLimit": limit, "selector": {"matchLabels": {"app": name}},
                         **({"customAlgorithms": [algorithm]} if algorithm else {}), **spec}}
        self.ok("apply", "-f", "-", stdin=json.dumps(body))

    def monitor_reports(self, name: str, gpus: dict[str, list[str]], *, power: float, capping: bool) -> None:
        """What the monitor does: write the observation and its conditions in the policy's status."""
        self.created["nodes"].update(gpus)
        count = sum(len(uuids) for uuids in gpus.values())
        nodes = [{"name": node, "power": power * len(uuids) / count,
                  "gpus": [{"uuid": uuid, "index": i, "power": power / count, "smClock": 1980}
                           for i, uuid in enumerate(uuids)]} for node, uuids in gpus.items()]
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        condition = {"type": "MetricsAvailable", "status": "True", "reason": "MetricsFresh",
                     "message": f"{count} GPUs measured", "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
        status = {"cappingActionRequired": capping, "lastUpdated": stamp, "currentPower": power, "gpuCount": count,
                  "nodes": nodes, "truncated": False, "conditions": [condition]}
        self.ok("patch", "pcp", "-n", self.namespace, name, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": status}))

    def policy_object(self, name: str) -> dict[str, Any]:
        result = self.kubectl("get", "pcp", "-n", self.namespace, name, "-o", "json")
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.policy_object(name).get("status") or {})

    def condition(self, name: str, type: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == type), {})

    def node(self, node: str) -> dict[str, Any]:
        result = self.kubectl("get", "nf", node, "-o", "json")
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def entries(self, node: str) -> list[tuple[str, int, str]]:
        spec = self.node(node).get("spec") or {}
        return [(e["gpuId"], e["targetFrequency"], e.get("policy")) for e in spec.get("gpuFrequencies") or []]

    def events(self, name: str) -> list[tuple[str, str, str]]:
        out = self.ok("get", "events", "-n", self.namespace, "--field-selector", f"involvedObject.name={name}",
                      "-o", "json")
        return [(e["type"], e["reason"], e["message"]) for e in json.loads(out)["items"]]
