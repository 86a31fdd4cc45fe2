"""The access manifests fit together: admission policies guard the right accounts, Lease grants name the Leases."""

from __future__ import annotations

import re

import pytest

GUARDS = {"climatik-tune-own-node": "climatik-tune", "climatik-recommend-finalizers-only": "climatik-recommend"}


@pytest.mark.parametrize(("policy", "account"), GUARDS.items())
def test_admission_policy_applies_to_the_service_account_it_guards(manifests, policy: str, account: str) -> None:  # type: ignore[no-untyped-def]
    # The namespace is spelled out in CEL, which kustomize does not rewrite: it must match the ServiceAccount's.
    namespace = manifests.get("ServiceAccount", account)["metadata"]["namespace"]
    (condition,) = manifests.get("ValidatingAdmissionPolicy", policy)["spec"]["matchConditions"]
    (username,) = re.findall(r"request\.userInfo\.username == '([^']+)'", condition["expression"])
    assert username == f"system:serviceaccount:{namespace}:{account}"


@pytest.mark.parametrize("policy", GUARDS)
def test_admission_policy_is_bound_to_deny_and_fails_closed(manifests, policy: str) -> None:  # type: ignore[no-untyped-def]
    binding = manifests.get("ValidatingAdmissionPolicyBinding", policy)
    assert binding["spec"] == {"policyName": policy, "validationActions": ["Deny"]}
    assert manifests.get("ValidatingAdmissionPolicy", policy)["spec"]["failurePolicy"] == "Fail"


def test_tuner_policy_covers_the_status_subresource_and_the_node_name_claim(manifests) -> None:  # type: ignore[no-untyped-def]
    spec = manifests.get("ValidatingAdmissionPolicy", "climatik-tune-own-node")["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == {"nodefrequencies", "nodefrequencies/status"}
    expressions = " ".join(variable["expression"] for variable in spec["variables"])
    assert "request.userInfo.extra['authentication.kubernetes.io/node-name']" in expressions
    assert any("request.name" in validation["expression"] for validation in spec["validations"])


@pytest.mark.parametrize("component", ["monitor", "recommend"])
def test_leader_election_role_renews_only_the_components_own_lease(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    role = manifests.get("Role", f"climatik-{component}-leader-election")
    named = [rule for rule in role["rules"] if "resourceNames" in rule]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": [f"climatik-{component}"], "verbs": ["get", "update", "patch"]}]
    binding = manifests.get("RoleBinding", f"climatik-{component}-leader-election")
    assert binding["subjects"][0]["name"] == f"climatik-{component}"


def test_no_component_may_read_secrets_or_use_wildcards(manifests) -> None:  # type: ignore[no-untyped-def]
    rules = [rule for kind in ("ClusterRole", "Role") for role in manifests.of_kind(kind) for rule in role["rules"]]
    assert rules
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert "secrets" not in rule["resources"]


def test_tuner_may_get_its_node_but_not_list_or_watch_nodes(manifests) -> None:  # type: ignore[no-untyped-def]
    # Reading its Node tells the tuner how many GPUs the node should have (nvidia.com/gpu.count); RBAC cannot name
    # "the tuner's own node", so the grant is get only: no list, no watch, no write.
    rules = manifests.get("ClusterRole", "climatik-tune")["rules"]
    node_rules = [rule for rule in rules if "nodes" in rule["resources"]]
    assert node_rules == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
