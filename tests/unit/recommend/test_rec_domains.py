"""Sharing power domains: guarantees first, then priority by priority, lending what is left; a child never above
its parent; the sum under every budget never above it, in flight either."""

from __future__ import annotations

import random

import pytest

from climatik.recommend.budgets import NodeDemand
from climatik.recommend.domains import Claimant, Domain, share

RACK = Domain("rack", 7000.0, frozenset({"n1", "n2"}))


def cell(node: str, demand: float | None, current: int | None = None, *, acknowledged: int | None = None,
         floor: float = 200.0, ceiling: float = 5600.0, pressed: bool = False, reporting: bool = True) -> NodeDemand:
    return NodeDemand(node=node, floor=floor, ceiling=ceiling, demand=demand, pressed=pressed, current=current,
                      acknowledged=acknowledged if acknowledged is not None else current, reporting=reporting)


def total(budgets: dict[tuple[str, str], int], key: str | None = None) -> int:
    return sum(watts for (owner, _), watts in budgets.items() if key is None or owner == key)


THREE = [Claimant("ml/high", priority=100), Claimant("ml/mid", priority=10), Claimant("ml/low", priority=0)]


def test_cuts_land_on_the_lowest_priority_first() -> None:
    # 10 kW wanted (with headroom) on a 7 kW rack.
    cells = {("ml/high", "n1"): cell("n1", 3000.0), ("ml/mid", "n1"): cell("n1", 1000.0),
             ("ml/low", "n2"): cell("n2", 5500.0)}
    result = share(THREE, [RACK], cells)

    assert total(result.budgets) <= 7000
    assert total(result.budgets, "ml/high") >= 3150, "the high priority gets its want"
    assert total(result.budgets, "ml/mid") >= 1050
    assert total(result.budgets, "ml/low") <= 7000 - 3150 - 1050
    report = result.domains["rack"]
    assert report.claimants["ml/low"].demand > report.claimants["ml/low"].watts


def test_a_guarantee_is_served_before_any_priority_but_only_as_far_as_it_is_wanted() -> None:
    claimants = [Claimant("ml/high", priority=100), Claimant("ml/low", priority=0, guarantee=2500.0)]
    hungry = {("ml/high", "n1"): cell("n1", 6000.0), ("ml/low", "n2"): cell("n2", 4000.0)}
    result = share(claimants, [RACK], hungry)
    assert total(result.budgets, "ml/low") >= 2500
    assert total(result.budgets) <= 7000

    idle = {("ml/high", "n1"): cell("n1", 7000.0, ceiling=8000.0), ("ml/low", "n2"): cell("n2", 500.0)}
    result = share(claimants, [RACK], idle)
    assert total(result.budgets, "ml/low") < 1000, "an unused guarantee is not reserved"
    assert total(result.budgets, "ml/high") >= 6400


def test_unused_headroom_is_lent_to_the_pressed_and_taken_back_when_its_owner_wants_it() -> None:
    claimants = [Claimant("ml/high", priority=100), Claimant("ml/low", priority=0)]
    quiet = {("ml/high", "n1"): cell("n1", 1000.0), ("ml/low", "n2"): cell("n2", 4000.0, pressed=True)}
    lent = share(claimants, [RACK], quiet)
    assert total(lent.budgets, "ml/low") > 4200
    assert lent.domains["rack"].claimants["ml/low"].borrowed > 0
    held = {key: watts for key, watts in lent.budgets.items()}

    busy = {("ml/high", "n1"): cell("n1", 5000.0, held[("ml/high", "n1")]),
            ("ml/low", "n2"): cell("n2", 4000.0, held[("ml/low", "n2")], pressed=True)}
    back = share(claimants, [RACK], busy)
    assert back.budgets[("ml/low", "n2")] < held[("ml/low", "n2")], "the lender's share comes down at once"
    assert back.wanted[("ml/high", "n1")] >= 5250


def test_a_child_domain_never_gets_more_than_its_parent() -> None:
    row = Domain("row", 10000.0, frozenset({"n1", "n2", "n3", "n4"}))
    racks = [Domain("rack-1", 8000.0, frozenset({"n1", "n2"}), parent="row"),
             Domain("rack-2", 8000.0, frozenset({"n3", "n4"}), parent="row")]
    claimants = [Claimant("ml/train", priority=0)]
    cells = {("ml/train", n): cell(n, 3500.0) for n in ("n1", "n2", "n3", "n4")}
    result = share(claimants, [row, *racks], cells)

    assert total(result.budgets) <= 10000
    report = result.domains["row"]
    assert set(report.children) == {"rack-1", "rack-2"}
    assert sum(child.watts for child in report.children.values()) == report.allocated
    assert all(child.watts <= 8000 for child in report.children.values())


def test_a_policys_own_budget_still_holds_within_a_domain() -> None:
    claimants = [Claimant("ml/capped", budget=1500.0), Claimant("ml/other")]
    cells = {("ml/capped", "n1"): cell("n1", 3000.0), ("ml/other", "n2"): cell("n2", 1000.0)}
    result = share(claimants, [RACK], cells)
    assert total(result.budgets, "ml/capped") <= 1500


def test_guarantees_above_the_budget_are_named_and_floors_above_it_reported() -> None:
    claimants = [Claimant("ml/a", guarantee=4000.0), Claimant("ml/b", guarantee=4000.0), Claimant("ml/c")]
    cells = {("ml/a", "n1"): cell("n1", 4000.0), ("ml/b", "n2"): cell("n2", 4000.0),
             ("ml/c", "n2"): cell("n2", 100.0)}
    report = share(claimants, [RACK], cells).domains["rack"]
    assert report.overcommitted == ("ml/a", "ml/b")

    floors = {("ml/c", "n1"): cell("n1", 4000.0, floor=4000.0), ("ml/c", "n2"): cell("n2", 4000.0, floor=4000.0)}
    tight = share([Claimant("ml/c")], [RACK], floors)
    assert tight.domains["rack"].infeasible_floor == 8000.0
    assert total(tight.budgets) <= 7000


def test_unselected_gpus_are_a_claimant_at_the_domains_default_priority() -> None:
    claimants = [Claimant("ml/llm", priority=10), Claimant("PowerDomain/rack", priority=-100)]
    cells = {("ml/llm", "n1"): cell("n1", 4000.0), ("PowerDomain/rack", "n2"): cell("n2", 4000.0)}
    result = share(claimants, [RACK], cells)
    assert total(result.budgets, "ml/llm") >= 4200
    assert total(result.budgets, "PowerDomain/rack") <= 7000 - 4200


def test_the_sum_under_every_budget_never_exceeds_it_in_flight_whatever_the_demand_and_the_tuners_do() -> None:
    rng = random.Random(11)
    row = Domain("row", 12000.0, frozenset({"n1", "n2", "n3", "n4"}))
    racks = [Domain("rack-1", 7000.0, frozenset({"n1", "n2"}), parent="row"),
             Domain("rack-2", 7000.0, frozenset({"n3", "n4"}), parent="row")]
    claimants = [Claimant("ml/a", budget=9000.0, priority=5, guarantee=1500.0), Claimant("ml/b", priority=0),
                 Claimant("ml/c", budget=4000.0, priority=5)]
    keys = [("ml/a", "n1"), ("ml/a", "n3"), ("ml/b", "n1"), ("ml/b", "n2"), ("ml/b", "n4"), ("ml/c", "n2"),
            ("ml/c", "n4")]
    current: dict[tuple[str, str], int | None] = dict.fromkeys(keys)
    acknowledged: dict[tuple[str, str], int | None] = dict.fromkeys(keys)
    budgets = {"row": 12000.0, "rack-1": 7000.0, "rack-2": 7000.0}
    for _ in range(1500):
        if rng.random() < 0.05:  # a rack's budget steps down or back up
            racks[0] = Domain("rack-1", rng.choice([4000.0, 7000.0]), racks[0].nodes, parent="row")
            budgets["rack-1"] = racks[0].budget
        cells = {}
        for key in keys:
            demand = rng.uniform(100, 3000)
            held = current[key]
            cells[key] = cell(key[1], demand, held, acknowledged=acknowledged[key], floor=150.0, ceiling=2800.0,
                              pressed=held is not None and demand >= 0.97 * held,
                              reporting=rng.random() > 0.05 or held is None)
        result = share(claimants, [row, *racks], cells)
        current.update(result.budgets)
        for key in keys:
            if rng.random() < 0.5:
                acknowledged[key] = current[key]
        flight = {key: max(current[key] or 0, acknowledged[key] or 0) for key in keys}
        for domain in (row, *racks):
            inside = sum(w for (owner, node), w in flight.items() if node in domain.nodes)
            written = sum(w or 0 for (owner, node), w in current.items() if node in domain.nodes)
            assert written <= budgets[domain.name], (domain.name, current)
            if domain.name == "rack-1" and budgets["rack-1"] < 7000.0:
                continue  # a lowered budget is written at once, and kept once the tuners acknowledge the cut
            assert inside <= budgets[domain.name], (domain.name, flight)
        for claimant in claimants:
            assert sum(w for (owner, _), w in flight.items() if owner == claimant.key) <= claimant.budget


@pytest.mark.parametrize("watts", [3000.0, 7000.0, 20000.0])
def test_nothing_is_handed_out_beyond_the_budget_or_the_ceilings(watts: float) -> None:
    cells = {("ml/high", "n1"): cell("n1", 3000.0, ceiling=2800.0), ("ml/low", "n2"): cell("n2", 500.0,
                                                                                           ceiling=2800.0)}
    result = share(THREE, [Domain("rack", watts, frozenset({"n1", "n2"}))], cells)
    assert total(result.budgets) <= watts
    assert all(budget <= 2800 for budget in result.budgets.values())
