"""Resolving the domain tree: nodes by label, budgets in force, and every problem reported on its own domain while
the rest of the tree keeps working."""

from __future__ import annotations

import datetime as dt
from typing import Any

from climatik.api.domain import PowerDomain
from climatik.recommend.tree import resolve

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
NODES = {f"n{i}": {"row": "a", "rack": f"a{i // 2}"} for i in range(4)} | {"n9": {"row": "b", "rack": "b0"}}


def domain(name: str, budget: int, labels: dict[str, str], *, parent: str | None = None,
           status: dict[str, Any] | None = None, **spec: Any) -> PowerDomain:
    body: dict[str, Any] = {"budget": budget, "nodeSelector": {"matchLabels": labels}, **spec}
    if parent is not None:
        body["parent"] = parent
    obj: dict[str, Any] = {"metadata": {"name": name}, "spec": body}
    if status is not None:
        obj["status"] = status
    return PowerDomain.from_api(obj)


ROW = domain("row-a", 20000, {"row": "a"})
RACK0 = domain("rack-a0", 9000, {"rack": "a0"}, parent="row-a")
RACK1 = domain("rack-a1", 9000, {"rack": "a1"}, parent="row-a")


def test_domains_get_their_nodes_by_label_and_their_place_in_the_tree() -> None:
    tree = resolve([ROW, RACK0, RACK1], NODES, NOW)

    assert tree.domains["row-a"].nodes == {"n0", "n1", "n2", "n3"}
    assert tree.domains["rack-a1"].nodes == {"n2", "n3"}
    assert {d.name: d.parent for d in tree.split} == {"row-a": None, "rack-a0": "row-a", "rack-a1": "row-a"}
    assert all(not resolved.problems for resolved in tree.domains.values())
    assert tree.leaf_of("n2") == "rack-a1" and tree.leaf_of("n9") is None


def test_a_parent_loop_is_reported_on_every_domain_in_it_and_the_rest_keeps_working() -> None:
    loop_a = domain("loop-a", 5000, {"rack": "a0"}, parent="loop-b")
    loop_b = domain("loop-b", 5000, {"rack": "a1"}, parent="loop-a")
    tree = resolve([ROW, loop_a, loop_b], NODES, NOW)

    assert [d.name for d in tree.split] == ["row-a"]
    for name in ("loop-a", "loop-b"):
        assert "parent chain loops" in tree.domains[name].problems[0]
    assert "loop-a -> loop-b -> loop-a" in tree.domains["loop-a"].problems[0]


def test_a_missing_parent_makes_a_root_and_says_so() -> None:
    orphan = domain("rack-x", 9000, {"rack": "a0"}, parent="row-z")
    tree = resolve([orphan], NODES, NOW)
    assert tree.split[0].parent is None
    assert tree.domains["rack-x"].problems == ("parent row-z does not exist; it stands as a root until it does",)


def test_a_child_above_its_parent_or_outside_it_is_reported_and_still_kept_under_both() -> None:
    big = domain("rack-big", 30000, {"row": "b"}, parent="row-a")
    tree = resolve([ROW, big], NODES, NOW)
    problems = " ".join(tree.domains["rack-big"].problems)
    assert "above its parent row-a's 20000 W" in problems
    assert "nodes not in its parent row-a: n9" in problems
    assert {d.name for d in tree.split} == {"row-a", "rack-big"}


def test_a_node_in_two_sibling_domains_is_reported_on_both() -> None:
    wide = domain("rack-wide", 9000, {"row": "a"}, parent="row-a")
    tree = resolve([ROW, RACK0, wide], NODES, NOW)
    assert "nodes also in rack-wide" in " ".join(tree.domains["rack-a0"].problems)
    assert "nodes also in rack-a0" in " ".join(tree.domains["rack-wide"].problems)
    assert not tree.domains["row-a"].problems, "an ancestor holding the same nodes is how trees work"


def test_the_budget_in_force_continues_the_ramp_from_the_status() -> None:
    raised = domain("rack-a0", 9000, {"rack": "a0"}, rampWattsPerSecond=100,
                    status={"budget": 6000.0, "budgetSince": "2026-12-01T11:59:50Z"})
    resolved = resolve([raised], NODES, NOW).domains["rack-a0"]
    assert (resolved.budget, resolved.target) == (7000.0, 9000.0)


def test_a_schedule_that_cannot_be_read_leaves_the_spec_budget() -> None:
    odd = domain("rack-a0", 9000, {"rack": "a0"}, timeZone="Nowhere/Special",
                 schedule=[{"start": "00:00", "end": "23:59", "budget": 1000}])
    resolved = resolve([odd], NODES, NOW).domains["rack-a0"]
    assert resolved.budget == 9000.0
    assert "time zone 'Nowhere/Special' is not known" in resolved.problems[0]
