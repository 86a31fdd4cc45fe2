"""The Deployments and the DaemonSet run the right subcommand, with the identity, privileges and wiring it needs."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

import pytest

COMPONENTS = ("monitor", "recommend", "tune")
CONTROLLERS = ("monitor", "recommend")
IMAGE = "ghcr.io/climatik-project/climatik"


def flag(container: dict[str, Any], name: str) -> str:
    """The value of `--name=value` in the container's args."""
    value: str
    (value,) = [arg.split("=", 1)[1] for arg in container["args"] if arg.startswith(f"--{name}=")]
    return value


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_runs_its_subcommand_of_the_one_image(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    container = manifests.container(component)
    assert container["image"] == IMAGE  # the tag is set once, in manifests/default
    assert container["args"][0] == component


@pytest.mark.parametrize("component", COMPONENTS)
def test_pods_select_themselves_and_carry_the_component_label(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    workload = manifests.workload(component)
    selector = workload["spec"]["selector"]["matchLabels"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert selector == {"app.kubernetes.io/name": "climatik", "app.kubernetes.io/component": component}


@pytest.mark.parametrize("component", CONTROLLERS)
def test_controllers_elect_a_leader_in_their_own_namespace(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    container = manifests.container(component)
    assert "--leader-elect" in container["args"]
    assert flag(container, "leader-election-namespace") == "$(POD_NAMESPACE)"
    assert env(container)["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


@pytest.mark.parametrize("component", CONTROLLERS)
def test_controllers_run_as_non_root_without_any_capability(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    spec = pod_spec(manifests.workload(component))
    security = manifests.container(component)["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}}


@pytest.mark.parametrize("component", COMPONENTS)
def test_probes_and_metrics_share_the_port_the_process_serves(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    container = manifests.container(component)
    (port,) = container["ports"]
    assert port["name"] == "metrics"
    assert port["containerPort"] == int(flag(container, "metrics-port"))
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_container_requests_resources_and_bounds_its_memory(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    resources = manifests.container(component)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_variable_the_args_expand_is_defined(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    # Kubernetes passes an undefined $(VAR) through literally, which the process would take as a value.
    container = manifests.container(component)
    used = {name for arg in container["args"] for name in re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", arg)}
    assert used <= set(env(container))


def test_monitor_takes_its_prometheus_settings_from_the_config_map(manifests) -> None:  # type: ignore[no-untyped-def]
    container = manifests.container("monitor")
    config = manifests.get("ConfigMap", "climatik-config")
    url = env(container)["CLIMATIK_PROMETHEUS_URL"]["valueFrom"]["configMapKeyRef"]
    assert url == {"name": "climatik-config", "key": "prometheus-url"}
    assert flag(container, "prometheus-url") == "$(CLIMATIK_PROMETHEUS_URL)"
    assert config["data"]["prometheus-url"].startswith("http")
    # A key the ConfigMap lacks would keep the pod from starting.
    refs = [var["valueFrom"]["configMapKeyRef"] for var in env(container).values()
            if "configMapKeyRef" in var.get("valueFrom", {})]
    assert {ref["key"] for ref in refs} <= set(config["data"])
    assert flag(container, "metrics-profile") == "$(CLIMATIK_METRICS_PROFILE)"
    assert config["data"]["metrics-profile"] in {"dcgm", "kepler"}


def test_tuner_learns_its_node_from_the_downward_api(manifests) -> None:  # type: ignore[no-untyped-def]
    container = manifests.container("tune")
    assert flag(container, "node-name") == "$(NODE_NAME)"
    assert env(container)["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_tuner_is_root_with_sys_admin_only_and_not_privileged(manifests) -> None:  # type: ignore[no-untyped-def]
    security = manifests.container("tune")["securityContext"]
    assert security.get("privileged", False) is False
    assert security["runAsUser"] == 0
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert security["readOnlyRootFilesystem"] is True


def test_tuner_writes_host_sysfs_and_keeps_its_state_on_the_host(manifests) -> None:  # type: ignore[no-untyped-def]
    workload = manifests.workload("tune")
    container = manifests.container("tune")
    host_paths = {volume["name"]: volume["hostPath"]["path"] for volume in pod_spec(workload)["volumes"]
                  if "hostPath" in volume}
    mounted = {mount["mountPath"]: host_paths.get(mount["name"], "") for mount in container["volumeMounts"]
               if not mount.get("readOnly", False)}
    assert mounted[flag(container, "sysfs-root")] == "/sys"
    state_dir = str(PurePosixPath(flag(container, "state-file")).parent)
    assert mounted[state_dir].startswith("/var/lib/")


def test_tuner_runs_on_gpu_nodes_and_sees_their_gpus(manifests) -> None:  # type: ignore[no-untyped-def]
    spec = pod_spec(manifests.workload("tune"))
    variables = env(manifests.container("tune"))
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert variables["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert "utility" in variables["NVIDIA_DRIVER_CAPABILITIES"]["value"].split(",")
    assert manifests.workload("tune")["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_has_its_own_bound_service_account(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    account = pod_spec(manifests.workload(component))["serviceAccountName"]
    assert account == f"climatik-{component}"
    assert manifests.get("ServiceAccount", account)["metadata"]["namespace"] == "climatik-system"
    binding = manifests.get("ClusterRoleBinding", account)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "climatik-system"}]


def test_tuner_is_node_critical_so_it_is_not_evicted_while_capping(manifests) -> None:  # type: ignore[no-untyped-def]
    # An evicted tuner restores default clocks: a power spike exactly when the node is short of power.
    assert pod_spec(manifests.workload("tune"))["priorityClassName"] == "system-node-critical"


def test_tuner_leaves_a_node_paused_for_driver_or_mig_maintenance(manifests) -> None:  # type: ignore[no-untyped-def]
    affinity = pod_spec(manifests.workload("tune"))["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]

    def runs_on(labels: dict[str, str]) -> bool:
        def matches(expression: dict[str, object]) -> bool:
            value = labels.get(str(expression["key"]))
            operator, values = expression["operator"], expression.get("values", [])
            return {"In": value in values, "NotIn": value not in values, "Exists": value is not None,  # type: ignore[operator]
                    "DoesNotExist": value is None}[str(operator)]

        return any(all(matches(expression) for expression in term["matchExpressions"]) for term in terms)

    assert runs_on({})
    assert runs_on({"nvidia.com/gpu.deploy.client": "true"})
    assert not runs_on({"nvidia.com/gpu.deploy.client": "paused-for-driver-upgrade"})
    assert not runs_on({"nvidia.com/gpu.deploy.client": "paused-for-mig-change"})
    assert not runs_on({"climatik.io/tune": "paused"})
    assert not runs_on({"climatik.io/tune": "paused", "nvidia.com/gpu.deploy.client": "true"})


def test_tuner_pods_are_admitted_where_critical_priority_needs_a_quota(manifests) -> None:  # type: ignore[no-untyped-def]
    quota = manifests.get("ResourceQuota", "climatik-critical-pods")
    namespace = manifests.workload("tune")["metadata"]["namespace"]
    (scope,) = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert quota["metadata"]["namespace"] == namespace
    assert scope == {"scopeName": "PriorityClass", "operator": "In", "values": ["system-node-critical"]}
    assert int(quota["spec"]["hard"]["pods"]) >= 1000
