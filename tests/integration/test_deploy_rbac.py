"""Each component's ServiceAccount may do what that component needs and nothing else, asked of the real API server.

The admin identity of the test control plane is in system:masters, so it may impersonate the service accounts.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NAMESPACE = "climatik-system"
READ = ("get", "list", "watch")
WRITE_STATUS = ("get", "update", "patch")
EVENT_WRITES = ("create", "patch")

Grant = tuple[str, str, str, str]  # API group, resource, verb, resource name ("" for any)


@pytest.fixture(scope="module")
def installed(control_plane) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run([*control_plane.kubectl, "apply", "--server-side", "-k", str(MANIFESTS / "default")],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def account(component: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:climatik-{component}"


def grants(group: str, resources: Iterable[str], verbs: Iterable[str], names: Iterable[str] = ("",)) -> set[Grant]:
    return {(group, resource, verb, name) for resource in resources for verb in verbs for name in names}


def events() -> set[Grant]:
    return grants("", ["events"], EVENT_WRITES) | grants("events.k8s.io", ["events"], EVENT_WRITES)


def lease(component: str) -> set[Grant]:
    return (grants("coordination.k8s.io", ["leases"], ["create"])
            | grants("coordination.k8s.io", ["leases"], ["get", "update", "patch"], [f"climatik-{component}"]))


MONITOR = (grants("", ["pods"], READ) | grants("climatik.io", ["powercappingpolicies"], READ)
           | grants("climatik.io", ["powercappingpolicies/status"], WRITE_STATUS) | events())
RECOMMEND = (grants("climatik.io", ["powercappingpolicies"], (*READ, "update", "patch"))
             | grants("climatik.io", ["powercappingpolicies/status"], WRITE_STATUS)
             | grants("climatik.io", ["nodefrequencies"], (*READ, "create", "update", "patch", "delete"))
             | grants("climatik.io", ["powerdomains"], READ)
             | grants("climatik.io", ["powerdomains/status"], WRITE_STATUS)
             | grants("", ["nodes"], READ) | events())
TUNE = (grants("climatik.io", ["nodefrequencies"], READ)
        | grants("climatik.io", ["nodefrequencies/status"], WRITE_STATUS)
        | grants("", ["nodes"], ["get"]))

#: Everything each identity may do in a namespace (cluster-wide grants included), beyond what every user may.
EXACT = {
    ("monitor", NAMESPACE): MONITOR | lease("monitor"),
    ("monitor", "team-a"): MONITOR,
    ("recommend", NAMESPACE): RECOMMEND | lease("recommend"),
    ("recommend", "team-a"): RECOMMEND,
    ("tune", NAMESPACE): TUNE,
    ("tune", "default"): TUNE | events(),
}


def granted(control_plane, component: str, namespace: str) -> set[Grant]:  # type: ignore[no-untyped-def]
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
              "spec": {"namespace": namespace}}
    result = subprocess.run([*control_plane.kubectl, "create", "--validate=false", "-o", "json", "-f", "-",
                             f"--as={account(component)}"], input=json.dumps(review), check=False, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)["status"]
    assert status["incomplete"] is False
    everyone = {"authorization.k8s.io", "authentication.k8s.io"}  # the self-reviews any user may create
    return {grant for rule in status["resourceRules"] if not set(rule["apiGroups"]) <= everyone
            for group in rule["apiGroups"]
            for grant in grants(group, rule["resources"], rule["verbs"], rule.get("resourceNames") or [""])}


@pytest.mark.parametrize(("component", "namespace"), EXACT, ids=str)
def test_component_has_exactly_its_grants(control_plane, installed, component: str, namespace: str) -> None:  # type: ignore[no-untyped-def]
    assert granted(control_plane, component, namespace) == EXACT[(component, namespace)]


ALLOWED = [
    ("monitor", "watch pods --all-namespaces"),
    ("monitor", "list powercappingpolicies.climatik.io --all-namespaces"),
    ("monitor", "update powercappingpolicies.climatik.io --subresource=status -n team-a"),
    ("monitor", "create events -n team-a"),
    ("monitor", "patch events.events.k8s.io -n team-a"),
    ("monitor", "create leases.coordination.k8s.io -n climatik-system"),
    ("monitor", "update leases.coordination.k8s.io/climatik-monitor -n climatik-system"),
    ("recommend", "watch powercappingpolicies.climatik.io --all-namespaces"),
    ("recommend", "update powercappingpolicies.climatik.io -n team-a"),
    ("recommend", "patch powercappingpolicies.climatik.io --subresource=status -n team-a"),
    ("recommend", "create nodefrequencies.climatik.io"),
    ("recommend", "update nodefrequencies.climatik.io/gpu-node-1"),
    ("recommend", "delete nodefrequencies.climatik.io/gpu-node-1"),
    ("recommend", "watch nodes"),
    ("recommend", "watch powerdomains.climatik.io"),
    ("recommend", "patch powerdomains.climatik.io/rack-1 --subresource=status"),
    ("recommend", "create events -n team-a"),
    ("recommend", "update leases.coordination.k8s.io/climatik-recommend -n climatik-system"),
    ("tune", "watch nodefrequencies.climatik.io"),
    ("tune", "get nodefrequencies.climatik.io/gpu-node-1"),
    ("tune", "update nodefrequencies.climatik.io/gpu-node-1 --subresource=status"),
    ("tune", "patch nodefrequencies.climatik.io/gpu-node-1 --subresource=status"),
    ("tune", "create events -n default"),
    ("tune", "get nodes/gpu-node-1"),
]

FORBIDDEN = [
    ("monitor", "create nodefrequencies.climatik.io"),
    ("monitor", "update nodefrequencies.climatik.io/gpu-node-1"),
    ("monitor", "patch nodefrequencies.climatik.io/gpu-node-1 --subresource=status"),
    ("monitor", "delete nodefrequencies.climatik.io/gpu-node-1"),
    ("monitor", "update powercappingpolicies.climatik.io -n team-a"),
    ("monitor", "delete powercappingpolicies.climatik.io -n team-a"),
    ("monitor", "list nodes"),
    ("monitor", "create pods -n team-a"),
    ("monitor", "list secrets --all-namespaces"),
    ("monitor", "update leases.coordination.k8s.io/climatik-recommend -n climatik-system"),
    ("monitor", "create leases.coordination.k8s.io -n team-a"),
    ("recommend", "list pods --all-namespaces"),
    ("recommend", "update nodefrequencies.climatik.io/gpu-node-1 --subresource=status"),
    ("recommend", "create powercappingpolicies.climatik.io -n team-a"),
    ("recommend", "delete powercappingpolicies.climatik.io -n team-a"),
    ("recommend", "update nodes/gpu-node-1"),
    ("recommend", "update powerdomains.climatik.io/rack-1"),
    ("recommend", "list secrets --all-namespaces"),
    ("recommend", "update leases.coordination.k8s.io/climatik-monitor -n climatik-system"),
    ("tune", "update nodefrequencies.climatik.io/gpu-node-1"),
    ("tune", "patch nodefrequencies.climatik.io/gpu-node-2"),
    ("tune", "create nodefrequencies.climatik.io"),
    ("tune", "delete nodefrequencies.climatik.io/gpu-node-1"),
    ("tune", "get powercappingpolicies.climatik.io -n team-a"),
    ("tune", "update powercappingpolicies.climatik.io -n team-a"),
    ("tune", "patch powercappingpolicies.climatik.io --subresource=status -n team-a"),
    ("tune", "list pods --all-namespaces"),
    ("tune", "list nodes"),
    ("tune", "watch nodes"),
    ("tune", "patch nodes/gpu-node-1"),
    ("tune", "list secrets --all-namespaces"),
    ("tune", "create leases.coordination.k8s.io -n climatik-system"),
    ("tune", "create events -n team-a"),
]


def can_i(kubectl, component: str, action: str) -> bool:  # type: ignore[no-untyped-def]
    result = kubectl("auth", "can-i", *shlex.split(action), f"--as={account(component)}")
    assert result.returncode in (0, 1), result.stderr  # 0 yes, 1 no, anything else is a broken question
    return bool(result.returncode == 0)


@pytest.mark.parametrize(("component", "action"), ALLOWED, ids=str)
def test_component_may(kubectl, installed, component: str, action: str) -> None:  # type: ignore[no-untyped-def]
    assert can_i(kubectl, component, action)


@pytest.mark.parametrize(("component", "action"), FORBIDDEN, ids=str)
def test_component_may_not(kubectl, installed, component: str, action: str) -> None:  # type: ignore[no-untyped-def]
    assert not can_i(kubectl, component, action)
