"""Every kustomize overlay renders, and the `default` install applies to a real API server, dry-run and for real."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import climatik

pytestmark = pytest.mark.integration

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
OVERLAYS = sorted(path.parent.name for path in MANIFESTS.glob("*/kustomization.yaml"))
IMAGE = f"ghcr.io/climatik-project/climatik:{climatik.__version__}"


def render(control_plane, path: Path) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    result = subprocess.run([*control_plane.kubectl, "kustomize", str(path)], check=False, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for obj in objects if obj["kind"] in {"Deployment", "DaemonSet"}
            for c in obj["spec"]["template"]["spec"]["containers"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders(control_plane, overlay: str) -> None:  # type: ignore[no-untyped-def]
    objects = render(control_plane, MANIFESTS / overlay)
    assert objects
    assert all(obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"] for obj in objects)


def test_default_installs_crds_access_and_the_three_components(control_plane) -> None:  # type: ignore[no-untyped-def]
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in render(control_plane, MANIFESTS / "default")}
    assert {("Namespace", "climatik-system"), ("CustomResourceDefinition", "powercappingpolicies.climatik.io"),
            ("CustomResourceDefinition", "nodefrequencies.climatik.io"), ("ConfigMap", "climatik-config"),
            ("Deployment", "climatik-monitor"), ("Deployment", "climatik-recommend"),
            ("DaemonSet", "climatik-tune"), ("ValidatingAdmissionPolicy", "climatik-tune-own-node"),
            ("ValidatingAdmissionPolicyBinding", "climatik-tune-own-node")} <= kinds
    # The Prometheus operator's kinds are a separate overlay: clusters without them must still install.
    assert not {kind for kind, _ in kinds} & {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


def test_default_runs_one_image_tagged_with_the_package_version(control_plane) -> None:  # type: ignore[no-untyped-def]
    images = {c["image"] for c in containers(render(control_plane, MANIFESTS / "default"))}
    assert images == {IMAGE}


def test_default_keeps_everything_in_its_namespace_but_the_tuners_events_grant(control_plane) -> None:  # type: ignore[no-untyped-def]
    placed = {(obj["kind"], obj["metadata"]["name"]): obj["metadata"].get("namespace")
              for obj in render(control_plane, MANIFESTS / "default")}
    elsewhere = {key: namespace for key, namespace in placed.items()
                 if namespace is not None and namespace != "climatik-system"}
    assert elsewhere == {("Role", "climatik-tune-events"): "default",
                         ("RoleBinding", "climatik-tune-events"): "default"}


def test_default_applies_dry_run_then_for_real(control_plane, kubectl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    objects = render(control_plane, MANIFESTS / "default")
    rendered = tmp_path / "default.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    # Objects in a namespace cannot even be dry-run before the namespace exists.
    namespace = [obj for obj in objects if obj["kind"] == "Namespace"]
    created = kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(namespace))
    assert created.returncode == 0, created.stderr

    dry_run = kubectl("apply", "--server-side", "--dry-run=server", "-f", str(rendered))
    assert dry_run.returncode == 0, dry_run.stderr
    applied = kubectl("apply", "--server-side", "-f", str(rendered))
    assert applied.returncode == 0, applied.stderr

    listed = kubectl("get", "deployments,daemonsets,configmaps", "-n", "climatik-system", "-o", "json")
    names = {item["metadata"]["name"] for item in json.loads(listed.stdout)["items"]}
    assert {"climatik-monitor", "climatik-recommend", "climatik-tune", "climatik-config"} <= names


def test_monitoring_renders_monitors_rules_and_the_dashboard(control_plane) -> None:  # type: ignore[no-untyped-def]
    objects = render(control_plane, MANIFESTS / "monitoring")
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["ConfigMap", "PodMonitor", "PodMonitor", "PodMonitor", "PrometheusRule"]
    (config_map,) = [obj for obj in objects if obj["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"] == "climatik-dashboard"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["climatik.json"])["panels"]


def test_tuner_components_apply_on_top_of_default(control_plane, kubectl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    def relative(path: Path) -> str:  # kustomize takes bases and components only as relative paths
        return os.path.relpath(path, overlay)

    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [relative(MANIFESTS / "default")],
        "components": [relative(MANIFESTS / "tune/components/privileged"),
                       relative(MANIFESTS / "tune/components/nvidia-runtime-class")],
    }))
    objects = render(control_plane, overlay)
    (daemonset,) = [obj for obj in objects if obj["kind"] == "DaemonSet"]
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["containers"][0]["securityContext"]["privileged"] is True
    accepted = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(daemonset))
    assert accepted.returncode == 0, accepted.stderr


def test_the_shards_overlay_runs_sharded_monitors_and_recommenders_with_the_lease_grants_they_need(  # type: ignore[no-untyped-def]
        control_plane) -> None:
    objects = render(control_plane, MANIFESTS / "shards")
    default = render(control_plane, MANIFESTS / "default")
    for name, replicas in (("climatik-monitor", 4), ("climatik-recommend", 2)):
        (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--shard" in args and "--leader-elect" not in args
        assert deployment["spec"]["replicas"] == replicas
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        assert ("--shard-by=namespace" in args) == (name == "climatik-monitor")
    (role,) = [o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "climatik-shards"]
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} >= {"get", "list", "create", "update", "delete"}
    (binding,) = [o for o in objects
                  if o["kind"] == "RoleBinding" and o["metadata"]["name"] == role["metadata"]["name"]]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"climatik-{component}", "namespace": "climatik-system"}
        for component in ("monitor", "recommend")]
    unchanged = {(o["kind"], o["metadata"]["name"]) for o in default} - {
        ("Deployment", "climatik-monitor"), ("Deployment", "climatik-recommend")}
    assert [o for o in objects if (o["kind"], o["metadata"]["name"]) in unchanged] == \
        [o for o in default if (o["kind"], o["metadata"]["name"]) in unchanged]
