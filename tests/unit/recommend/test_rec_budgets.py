"""Splitting a policy's budget over its nodes: by demand, with headroom handed out, donors lowered before
receivers are raised, and the sum never above the budget, in flight either."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from climatik.api.nodefrequencies import BudgetStatus, GpuInventory
from climatik.recommend.budgets import NodeDemand, allocate, floor_of

TOTAL = 2700.0  # 90 % of a 3000 W cap


def node(name: str, demand: float | None, current: int | None = None, *, acknowledged: int | None = None,
         floor: float = 400.0, ceiling: float = 2800.0, pressed: bool = False, reporting: bool = True) -> NodeDemand:
    return NodeDemand(node=name, floor=floor, ceiling=ceiling, demand=demand, pressed=pressed, current=current,
                      acknowledged=acknowledged if acknowledged is not None else current, reporting=reporting)


def test_wants_that_fit_are_met_and_the_rest_is_handed_out_as_headroom() -> None:
    result = allocate(TOTAL, [node("a", 1000.0), node("b", 500.0)])

    assert sum(result.budgets.values()) <= TOTAL
    assert sum(result.budgets.values()) >= TOTAL - 2, "no watt left unused"
    assert result.budgets["a"] >= 1050 and result.budgets["b"] >= 525
    assert result.infeasible_floor is None


def test_wants_that_do_not_fit_share_what_is_above_the_floors() -> None:
    result = allocate(TOTAL, [node("a", 2000.0), node("b", 1000.0)])

    assert sum(result.budgets.values()) <= TOTAL
    a, b = result.budgets["a"], result.budgets["b"]
    assert (a - 400) / (b - 400) == pytest.approx((2100 - 400) / (1050 - 400), rel=0.01)


def test_a_donor_is_lowered_first_and_the_receiver_raised_once_it_acknowledged() -> None:
    pressed = node("a", 1350.0, 1350, pressed=True)
    idle = node("b", 300.0, 1350)
    first = allocate(TOTAL, [pressed, idle])
    assert first.budgets["b"] < 1350, "the donor comes down at once"
    assert "a" not in first.budgets or first.budgets["a"] == 1350, "the receiver waits for the donor's tuner"
    assert first.waiting == ("a",)

    acknowledged = replace(idle, current=first.budgets["b"], acknowledged=first.budgets["b"])
    second = allocate(TOTAL, [pressed, acknowledged])
    assert second.budgets["a"] > 1350
    assert second.budgets["a"] + first.budgets["b"] <= TOTAL


def test_a_node_whose_tuner_stopped_reporting_keeps_its_budget() -> None:
    result = allocate(TOTAL, [node("a", 2500.0, 1350, pressed=True), node("silent", None, 1350, reporting=False)])

    assert "silent" not in result.budgets
    assert result.budgets.get("a", 1350) <= TOTAL - 1350


def test_a_new_node_starts_from_what_is_free() -> None:
    result = allocate(TOTAL, [node("a", 2600.0, 2700, pressed=True), node("new", 800.0)])

    assert result.budgets["new"] == 0, "nothing is free until the others have come down"
    assert result.budgets["a"] < 2700
    later = allocate(TOTAL, [node("a", 2600.0, result.budgets["a"], pressed=True),
                             node("new", 800.0, 0)])
    assert later.budgets["new"] > 0


def test_floors_over_the_budget_cannot_be_met_and_say_so() -> None:
    result = allocate(1000.0, [node("a", 2000.0, floor=800.0), node("b", 2000.0, floor=800.0)])

    assert result.infeasible_floor == 1600.0
    assert sum(result.budgets.values()) <= 1000


def test_small_moves_are_not_written() -> None:
    first = allocate(TOTAL, [node("a", 1000.0), node("b", 1000.0)])
    steady = allocate(TOTAL, [node("a", 1010.0, first.budgets["a"]), node("b", 990.0, first.budgets["b"])])

    assert steady.budgets == {}


def test_the_sum_in_flight_never_exceeds_the_budget_whatever_the_demand_and_the_tuners_do() -> None:
    rng = random.Random(7)
    names = ["a", "b", "c"]
    current: dict[str, int | None] = dict.fromkeys(names)
    acknowledged: dict[str, int | None] = dict.fromkeys(names)
    for _ in range(2000):
        demands = {n: rng.uniform(200, 1800) for n in names}
        nodes = [node(n, demands[n], current[n], acknowledged=acknowledged[n],
                      pressed=current[n] is not None and demands[n] >= 0.97 * (current[n] or 0),
                      reporting=rng.random() > 0.05 or current[n] is None) for n in names]
        result = allocate(TOTAL, nodes)
        current.update(result.budgets)
        for n in names:  # each tuner acknowledges its spec now and then
            if rng.random() < 0.5:
                acknowledged[n] = current[n]
        in_flight = sum(max(current[n] or 0, acknowledged[n] or 0) for n in names)
        assert in_flight <= TOTAL, (current, acknowledged)


def h100(uuid: str) -> GpuInventory:
    return GpuInventory(uuid=uuid, power_limit=700, min_power_limit=200, max_power_limit=700)


def test_until_the_tuner_measures_a_floor_busy_gpus_count_their_lowest_limits_and_idle_ones_what_they_draw() -> None:
    gpus = [h100("a"), h100("b"), h100("c"), h100("d")]
    busy = BudgetStatus(policy="ml/train", watts=2000, power_mean=1900.0, power_max=1950.0, lever="PowerLimit")
    idle = replace(busy, power_mean=240.0, power_max=260.0)
    measured = replace(busy, watts=600, lever="ClockCap", floor=812.5)

    assert floor_of(None, gpus) == 800.0
    assert floor_of(busy, gpus) == 800.0
    assert floor_of(idle, gpus) == 240.0
    assert floor_of(measured, gpus) == 812.5
    assert floor_of(None, [GpuInventory(uuid="x", power_limit=300)]) == 30.0, "no lowest limit known: idle power"
