"""The admission policies narrow what RBAC cannot: a tuner writes only its own node's NodeFrequencies, and the
recommender changes only the finalizers of a policy. Checked by impersonating the components on a real API server.

kubectl has no flag for a user's extra fields, but a kubeconfig can carry them (`as-user-extra`), which is how the
tuner's node-bound token is imitated here.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
TUNER = "system:serviceaccount:climatik-system:climatik-tune"
RECOMMENDER = "system:serviceaccount:climatik-system:climatik-recommend"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
NODES = ("vap-node-a", "vap-node-b")
POLICY_NAMESPACE = "climatik-deploy-tests"  # a namespace of its own, so other tests never see these objects

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def as_identity(control_plane, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Kubectl]:  # type: ignore[no-untyped-def]
    """kubectl as another user, with optional extra fields, through an impersonating kubeconfig."""
    admin = json.loads(Path(control_plane.kubeconfig).read_text())
    directory = tmp_path_factory.mktemp("identities")

    def make(user: str, extra: dict[str, list[str]] | None = None) -> Kubectl:
        config = json.loads(json.dumps(admin))
        config["users"][0]["user"].update({"as": user, **({"as-user-extra": extra} if extra else {})})
        path = directory / f"{len(list(directory.iterdir()))}.kubeconfig"
        path.write_text(json.dumps(config))
        binary = control_plane.kubectl[0]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([binary, f"--kubeconfig={path}", *args], check=False, capture_output=True,
                                  text=True, timeout=60)

        return run

    return make


@pytest.fixture(scope="module")
def admin(control_plane) -> Kubectl:  # type: ignore[no-untyped-def]
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*control_plane.kubectl, *args], input=stdin, check=False, capture_output=True,
                              text=True, timeout=60)

    return run


@pytest.fixture(scope="module")
def installed(admin: Kubectl) -> Iterator[None]:
    result = admin("apply", "--server-side", "-k", str(MANIFESTS / "default"))
    assert result.returncode == 0, result.stderr
    created = admin("create", "namespace", POLICY_NAMESPACE)
    assert created.returncode == 0 or "AlreadyExists" in created.stderr, created.stderr
    for node in NODES:
        created = admin("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "climatik.io/v1alpha1", "kind": "NodeFrequencies", "metadata": {"name": node},
            "spec": {"nodeName": node, "gpuFrequencies": [{"gpuId": "GPU-1", "targetFrequency": 1410}]}}))
        assert created.returncode == 0, created.stderr
    yield
    admin("delete", "nodefrequencies", *NODES, "--ignore-not-found", "--wait=false")
    admin("delete", "pcp", "--all", "-n", POLICY_NAMESPACE, "--ignore-not-found", "--wait=false")


def report_gpus(kubectl: Kubectl, node: str, count: int) -> subprocess.CompletedProcess[str]:
    return kubectl("patch", "nodefrequencies", node, "--subresource=status", "--type=merge",
                   "-p", json.dumps({"status": {"gpuCount": count}}))


def until_denied(attempt: Callable[[], subprocess.CompletedProcess[str]], policy: str,
                 timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Repeat an attempt until `policy` denies it: a new admission policy takes a moment to be enforced."""
    deadline = time.monotonic() + timeout
    while True:
        result = attempt()
        if result.returncode != 0 and f"ValidatingAdmissionPolicy '{policy}'" in result.stderr:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{policy} did not deny within {timeout}s: rc={result.returncode} {result.stderr}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def tuner_of_node_a(as_identity: Callable[..., Kubectl], installed: None) -> Kubectl:
    tuner = as_identity(TUNER, {NODE_NAME_KEY: [NODES[0]]})
    until_denied(lambda: report_gpus(tuner, NODES[1], 8), "climatik-tune-own-node")
    return tuner


def test_tuner_cannot_write_another_nodes_status(tuner_of_node_a: Kubectl) -> None:
    denied = report_gpus(tuner_of_node_a, NODES[1], 8)
    assert denied.returncode != 0
    assert f"the tuner of node {NODES[0]} may write only NodeFrequencies {NODES[0]}, not {NODES[1]}" in denied.stderr


def test_tuner_writes_its_own_nodes_status(tuner_of_node_a: Kubectl, admin: Kubectl) -> None:
    written = report_gpus(tuner_of_node_a, NODES[0], 8)
    assert written.returncode == 0, written.stderr
    stored = json.loads(admin("get", "nodefrequencies", NODES[0], "-o", "json").stdout)
    assert stored["status"]["gpuCount"] == 8


def test_tuner_without_a_node_bound_token_writes_nothing(tuner_of_node_a: Kubectl,
                                                         as_identity: Callable[..., Kubectl]) -> None:
    unbound = as_identity(TUNER)
    denied = report_gpus(unbound, NODES[0], 4)
    assert denied.returncode != 0
    assert "the tuner's token is not bound to a node" in denied.stderr


def test_tuner_cannot_change_even_its_own_nodes_targets(tuner_of_node_a: Kubectl) -> None:
    denied = tuner_of_node_a("patch", "nodefrequencies", NODES[0], "--type=merge",
                             "-p", '{"spec": {"gpuFrequencies": []}}')
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr


def test_other_identities_are_not_bound_to_a_node(tuner_of_node_a: Kubectl, admin: Kubectl,
                                                  as_identity: Callable[..., Kubectl]) -> None:
    assert report_gpus(admin, NODES[1], 2).returncode == 0
    recommender = as_identity(RECOMMENDER, {NODE_NAME_KEY: [NODES[0]]})
    retargeted = recommender("patch", "nodefrequencies", NODES[1], "--type=merge",
                             "-p", '{"spec": {"gpuFrequencies": [{"gpuId": "GPU-1", "targetFrequency": 1200}]}}')
    assert retargeted.returncode == 0, retargeted.stderr


def policy(name: str) -> str:
    return json.dumps({"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
                       "metadata": {"name": name, "namespace": POLICY_NAMESPACE},
                       "spec": {"powerCapLimit": 1000, "selector": {"matchLabels": {"app": name}}}})


def set_limit(kubectl: Kubectl, name: str, watts: int) -> subprocess.CompletedProcess[str]:
    return kubectl("patch", "pcp", name, "-n", POLICY_NAMESPACE, "--type=merge",
                   "-p", json.dumps({"spec": {"powerCapLimit": watts}}))


@pytest.fixture(scope="module")
def recommender(as_identity: Callable[..., Kubectl], admin: Kubectl, installed: None) -> Kubectl:
    # Probing needs a change the policy would refuse, so it is made on a policy of its own.
    assert admin("apply", "-f", "-", stdin=policy("vap-probe")).returncode == 0
    identity = as_identity(RECOMMENDER)
    limits = iter(range(1001, 2000))
    until_denied(lambda: set_limit(identity, "vap-probe", next(limits)), "climatik-recommend-finalizers-only")
    return identity


def test_recommender_adds_and_removes_its_finalizer(recommender: Kubectl, admin: Kubectl) -> None:
    assert admin("apply", "-f", "-", stdin=policy("vap-finalizer")).returncode == 0
    for finalizers in (["climatik.io/node-frequencies"], None):
        patched = recommender("patch", "pcp", "vap-finalizer", "-n", POLICY_NAMESPACE, "--type=merge",
                              "-p", json.dumps({"metadata": {"finalizers": finalizers}}))
        assert patched.returncode == 0, patched.stderr
        stored = json.loads(admin("get", "pcp", "vap-finalizer", "-n", POLICY_NAMESPACE, "-o", "json").stdout)
        assert stored["metadata"].get("finalizers") == finalizers


def test_recommender_cannot_change_a_policys_budget(recommender: Kubectl, admin: Kubectl) -> None:
    assert admin("apply", "-f", "-", stdin=policy("vap-budget")).returncode == 0
    denied = set_limit(recommender, "vap-budget", 5000)
    assert denied.returncode != 0
    assert "may change only the finalizers" in denied.stderr
    stored = json.loads(admin("get", "pcp", "vap-budget", "-n", POLICY_NAMESPACE, "-o", "json").stdout)
    assert stored["spec"]["powerCapLimit"] == 1000
