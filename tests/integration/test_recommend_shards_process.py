"""`climatik recommend --shard` as real processes against the real API server: two recommenders split the
policies (each steps and reports its own, and writes their entries into node specs the other writes too), the
one that owns the allocator's key writes every node budget, and when it is killed the survivor takes over its
policies and the budgets within 20 s."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from climatik_procs import ClimatikProcess, wait_for
from recworld import HALVING, Cluster, gpus, remove_created

from climatik.kube.shards import owner_of
from climatik.recommend.core import ALLOCATOR

pytestmark = pytest.mark.integration

NS = "rec-shards"
LEASES_NS = "recommend-shards-it"
MEMBERS = ("rec-a", "rec-b")
NODES = [f"rec-shard-{j}" for j in range(3)]
UUIDS = {node: gpus(f"shard{j}", 2) for j, node in enumerate(NODES)}
# Policy i runs on GPU i % 2 of node i // 2: every node carries two policies, most of them of different shards.
POLICIES = {f"p{i}": (NODES[i // 2], UUIDS[NODES[i // 2]][i % 2]) for i in range(6)}


def sharded(control_plane, identity: str, log: Path) -> ClimatikProcess:  # type: ignore[no-untyped-def]
    return ClimatikProcess(
        ["recommend", f"--kubeconfig={control_plane.kubeconfig}", "--metrics-port=0", "--workers=2", "--shard",
         f"--leader-election-namespace={LEASES_NS}", f"--leader-election-identity={identity}"], log).start()


@pytest.fixture(scope="module")
def replicas(control_plane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ClimatikProcess]]:  # type: ignore[no-untyped-def]
    subprocess.run([*control_plane.kubectl, "create", "namespace", LEASES_NS], capture_output=True, check=False)
    logs = tmp_path_factory.mktemp("recommend-shards")
    procs = {identity: sharded(control_plane, identity, logs / f"{identity}.log") for identity in MEMBERS}
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.stop_quietly()


@pytest.fixture
def created(kubectl, replicas: dict[str, ClimatikProcess]) -> Iterator[dict[str, set[str]]]:  # type: ignore[no-untyped-def]
    made: dict[str, set[str]] = {"namespaces": set(), "nodes": set()}
    yield made
    running = [proc for proc in replicas.values() if proc.running()]
    remove_created(kubectl, made, diagnostics=lambda: "".join(proc.output()[-3000:] for proc in running))


def logged(proc: ClimatikProcess, event: str, *, since_line: int = 0) -> set[str]:
    """The keys of the log lines of `event` (from line `since_line` on) that name a policy of this test's
    namespace."""
    keys = set()
    for line in proc.output().splitlines()[since_line:]:
        if f'"{event}"' in line:
            key = json.loads(line).get("key", "")
            if key.startswith(f"{NS}/"):
                keys.add(key)
    return keys


def owned(proc: ClimatikProcess) -> int | None:
    """The keys the replica says it owns (climatik_shard_owned_keys), None until it serves /metrics."""
    port = next((int(json.loads(line)["port"]) for line in proc.output().splitlines()
                 if '"process_started"' in line), None)
    if port is None:
        return None
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    return next((int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                 if line.startswith("climatik_shard_owned_keys{")), None)


def test_sharded_recommenders_split_the_policies_and_a_survivor_takes_over_the_budgets(  # type: ignore[no-untyped-def]
        kubectl, replicas: dict[str, ClimatikProcess], created: dict[str, set[str]]) -> None:
    cluster = Cluster(kubectl, created, NS)
    for node in NODES:
        cluster.tuner_reports(node, UUIDS[node])
    for name in POLICIES:
        cluster.policy(name, algorithm=HALVING)
    owner = {f"{NS}/{name}": owner_of(f"{NS}/{name}", MEMBERS) for name in POLICIES}
    allocator = owner_of(ALLOCATOR, MEMBERS)
    assert allocator is not None and set(owner.values()) == set(MEMBERS), "both replicas own some policies"
    other = next(member for member in MEMBERS if member != allocator)
    diagnostics = lambda: "".join(proc.output()[-3000:] for proc in replicas.values())  # noqa: E731
    # Every policy of the cluster (other tests' too) and the allocator's key, each on the replica it hashes to.
    everyone = [*(f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                  for p in json.loads(cluster.ok("get", "pcp", "-A", "-o", "json"))["items"]), ALLOCATOR]
    shares = {member: sum(1 for key in everyone if owner_of(key, MEMBERS) == member) for member in MEMBERS}
    wait_for(lambda: all(owned(replicas[member]) == shares[member] for member in MEMBERS), timeout=60,
             what="both replicas own their share", diagnostics=diagnostics)
    split_at = {member: len(proc.output().splitlines()) for member, proc in replicas.items()}
    for name, (node, uuid) in POLICIES.items():
        cluster.monitor_reports(name, {node: [uuid]}, power=1400, capping=True)

    def planned() -> bool:
        for node in NODES:
            cluster.tuner_applies(node)  # the tuners apply whatever spec they find
        want = {node: sorted((uuid, 990, f"{NS}/{name}") for name, (at, uuid) in POLICIES.items() if at == node)
                for node in NODES}
        budgets = {node: sorted(b["policy"] for b in cluster.node(node)["spec"].get("powerBudgets") or [])
                   for node in NODES}
        return all(cluster.entries(node) == want[node] and budgets[node] == [key for _, _, key in want[node]]
                   for node in NODES)

    wait_for(planned, timeout=60, what="every policy's entries and budgets on its node", diagnostics=diagnostics)
    wait_for(lambda: all(cluster.status(name).get("recommendation", {}).get("gpuFrequency") == 990
                         and cluster.status(name).get("budget") for name in POLICIES),
             timeout=30, what="every policy's status", diagnostics=diagnostics)
    for member, proc in replicas.items():
        assert logged(proc, "status_updated", since_line=split_at[member]) == {
            key for key, at in owner.items() if at == member}, f"{member} writes the status of its own policies only"
    assert logged(replicas[other], "budgets_written", since_line=split_at[other]) == set(), \
        "only the allocator writes budgets"
    assert logged(replicas[allocator], "budgets_written", since_line=split_at[allocator]) == {
        key for key, at in owner.items() if at == other}, "the allocator splits the budgets of the other's policies"

    # Steady: the tuners acknowledge again and again, which wakes every policy on both replicas, and neither
    # replica rewrites a spec (each node carries the parts of both).
    def generations() -> list[int]:
        for node in NODES:
            cluster.tuner_applies(node)
        return [cluster.node(node)["metadata"]["generation"] for node in NODES]

    settled = wait_for(lambda: (g := generations()) == generations() and g, timeout=30,
                       what="the specs settled", diagnostics=diagnostics)
    for _ in range(4):
        time.sleep(0.5)
        assert generations() == settled, "a steady cluster's specs are not rewritten"

    # The allocator dies: the survivor owns everything, the budgets included, within 20 s.
    replicas[allocator].kill()
    started = time.monotonic()
    wait_for(lambda: owned(replicas[other]) == len(everyone), timeout=30, what="the survivor owns every key",
             diagnostics=lambda: replicas[other].output()[-3000:])
    taken_over = time.monotonic() - started
    print(f"recommender shards: the killed allocator's keys owned again after {taken_over:.1f} s")
    assert taken_over < 20, f"owned again {taken_over:.1f} s after the kill"

    # A policy of the dead replica, lowered: the survivor steps it and splits its smaller budget.
    lowered = next(key.split("/")[1] for key, at in owner.items() if at == allocator)
    node, _ = POLICIES[lowered]
    before = {b["policy"]: b["watts"] for b in cluster.node(node)["spec"]["powerBudgets"]}
    cluster.policy(lowered, algorithm=HALVING, limit=500)
    cluster.monitor_reports(lowered, {node: [POLICIES[lowered][1]]}, power=1400, capping=True)

    def rebudgeted() -> bool:
        cluster.tuner_applies(node)
        budgets = {b["policy"]: b["watts"] for b in cluster.node(node)["spec"]["powerBudgets"]}
        return budgets[f"{NS}/{lowered}"] <= 500 < before[f"{NS}/{lowered}"]

    wait_for(rebudgeted, timeout=30, what="the lowered policy's budget split again", diagnostics=diagnostics)
    assert cluster.status(lowered)["budget"] <= 500

    # Deleted: its entries and budget go (the survivor is both its owner and the allocator now).
    cluster.ok("delete", "pcp", "-n", NS, lowered, "--wait=false")

    def gone() -> bool:
        cluster.tuner_applies(node)
        spec = cluster.node(node)["spec"]
        return not cluster.policy_object(lowered) and all(
            e.get("policy") != f"{NS}/{lowered}" for e in [*spec.get("gpuFrequencies", []),
                                                          *spec.get("powerBudgets", [])])

    wait_for(gone, timeout=30, what="the deleted policy's entries and budget removed", diagnostics=diagnostics)
    assert replicas[other].running()
    assert [line for line in replicas[other].output().splitlines() if '"level": "error"' in line] == []
