"""The node guard over a node's devices: limits written and given back, refusals kept by clocks, caps combined
with the algorithm's targets by the lower."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from climatik.api.nodefrequencies import APPLIED, BudgetStatus, GpuInventory, PowerBudget
from climatik.tune.backends.base import DeviceResult
from climatik.tune.guard import BudgetReports, NodeGuard
from climatik.tune.levers import CappedGpus, PowerLimitError, PowerState

CLOCKS = list(range(210, 1981, 15))


class Board:
    """GPUs that take limits between 200 and 700 W (unless refusing) and lock clocks; draw what the test says."""

    name = "fake"

    def __init__(self, draws: Mapping[str, float], *, refusing: frozenset[str] = frozenset()) -> None:
        self.draws = dict(draws)
        self.limits = dict.fromkeys(draws, 700.0)
        self.locks: dict[str, int | None] = dict.fromkeys(draws)
        self.refusing = refusing
        self.calls: list[tuple[str, str, float | None]] = []

    def power_states(self) -> dict[str, PowerState]:
        return {uuid: PowerState(power=watts, limit=self.limits[uuid], min_limit=200.0, max_limit=700.0)
                for uuid, watts in self.draws.items()}

    def set_power_limit(self, uuid: str, watts: float) -> None:
        if uuid in self.refusing:
            raise PowerLimitError("Insufficient Permissions")
        self.limits[uuid] = watts
        self.calls.append(("limit", uuid, watts))

    def inventory(self) -> list[GpuInventory]:
        return [GpuInventory(uuid=uuid, supported_frequencies=CLOCKS) for uuid in self.draws]

    def apply(self, uuid: str, max_mhz: int) -> DeviceResult:
        self.locks[uuid] = max_mhz
        self.calls.append(("lock", uuid, max_mhz))
        return DeviceResult(APPLIED, requested_mhz=max_mhz, applied_mhz=max_mhz)

    def reset(self, uuid: str) -> DeviceResult:
        self.locks[uuid] = None
        self.calls.append(("reset", uuid, None))
        return DeviceResult(APPLIED)

    def current_clock(self, uuid: str) -> int | None:
        return self.locks[uuid] or 1980

    def close(self) -> None:
        pass


def guard_of(board: Board) -> tuple[NodeGuard, CappedGpus, dict[str, float]]:
    clocks = CappedGpus(board)
    originals: dict[str, float] = {}
    return NodeGuard(board, clocks, originals=originals), clocks, originals


def test_a_budget_becomes_power_limits_and_the_originals_come_back_when_it_goes() -> None:
    board = Board({"a": 650.0, "b": 100.0, "c": 300.0})
    guard, _, originals = guard_of(board)

    tick = guard.tick([PowerBudget(policy="ml/infer", watts=1000, gpu_ids=["a", "b"])], now=0.0)

    assert sum(board.limits[u] for u in "ab") <= 1000
    assert board.limits["c"] == 700.0, "a GPU outside every budget is left alone"
    assert originals == {"a": 700.0, "b": 700.0}
    assert tick.budgets[0].lever == "PowerLimit" and tick.budgets[0].watts == 1000
    assert tick.limit_writes == 2

    gone = guard.tick([], now=0.1)
    assert board.limits == {"a": 700.0, "b": 700.0, "c": 700.0}
    assert originals == {} and gone.budgets == []


def test_a_steady_budget_writes_nothing_more() -> None:
    board = Board({"a": 400.0, "b": 400.0})
    guard, _, _ = guard_of(board)
    budget = [PowerBudget(policy="ml/infer", watts=900, gpu_ids=["a", "b"])]
    guard.tick(budget, now=0.0)
    board.calls.clear()

    for tick in range(1, 20):
        assert guard.tick(budget, now=tick * 0.1).limit_writes == 0
    assert board.calls == []


def test_a_gpu_that_refuses_limits_is_kept_by_its_clock_and_the_status_says_why() -> None:
    board = Board({"a": 700.0, "b": 700.0}, refusing=frozenset({"b"}))
    guard, clocks, _ = guard_of(board)
    clocks.apply("a", 1500)
    budget = [PowerBudget(policy="ml/train", watts=1000, gpu_ids=["a", "b"])]

    guard.tick(budget, now=0.0)
    status = guard.tick(budget, now=0.1).budgets[0]

    assert status.lever == "ClockCap"
    assert status.message is not None and "b: Insufficient Permissions" in status.message
    assert board.locks["b"] is not None and board.locks["b"] < 1980
    assert board.locks["a"] is not None and board.locks["a"] <= 1500
    assert board.limits["a"] == 200.0, "the GPU that takes limits is held at its lowest"


def test_the_lock_is_the_lower_of_the_target_and_the_cap() -> None:
    board = Board({"a": 500.0})
    clocks = CappedGpus(board)

    clocks.apply("a", 1500)
    clocks.cap("a", 1200)
    assert board.locks["a"] == 1200
    held = clocks.apply("a", 1400)
    assert board.locks["a"] == 1200 and held.requested_mhz == 1400
    assert held.message is not None and "held at 1200 MHz" in held.message
    clocks.apply("a", 900)
    assert board.locks["a"] == 900
    assert clocks.cap("a", 1000) is None, "a cap above the target does not move the lock"
    clocks.reset("a")
    assert board.locks["a"] == 1000, "without a target the cap still holds"
    clocks.cap("a", None)
    assert board.locks["a"] is None


def test_gpus_the_budget_names_that_are_not_on_the_node_are_reported() -> None:
    guard, _, _ = guard_of(Board({"a": 300.0}))
    status = guard.tick([PowerBudget(policy="ml/infer", watts=500, gpu_ids=["a", "gone"])], now=0.0).budgets[0]
    assert status.message is not None and "not on this node: gone" in status.message


def test_release_gives_back_every_limit_and_cap() -> None:
    board = Board({"a": 700.0, "b": 700.0})
    guard, _, originals = guard_of(board)
    budget = [PowerBudget(policy="ml/train", watts=300, gpu_ids=["a", "b"])]
    for tick in range(5):
        guard.tick(budget, now=tick * 0.1)
    assert board.locks["a"] is not None

    assert guard.release() > 0
    assert board.limits == {"a": 700.0, "b": 700.0}
    assert board.locks == {"a": None, "b": None}
    assert originals == {}


@pytest.mark.parametrize("watts", [600, 1000, 1500])
def test_limits_never_add_up_to_more_than_the_budget(watts: int) -> None:
    board = Board({"a": 690.0, "b": 20.0, "c": 350.0})
    guard, _, _ = guard_of(board)
    status = guard.tick([PowerBudget(policy="p/q", watts=watts, gpu_ids=["a", "b", "c"])], now=0.0).budgets[0]
    assert status.lever == "PowerLimit"
    assert sum(board.limits.values()) <= watts
    assert all(200.0 <= limit <= 700.0 for limit in board.limits.values())


def test_watts_moving_between_gpus_come_off_one_before_they_go_on_the_other() -> None:
    board = Board({"a": 100.0, "b": 640.0})
    guard, _, _ = guard_of(board)
    budget = [PowerBudget(policy="p/q", watts=900, gpu_ids=["a", "b"])]
    guard.tick(budget, now=0.0)
    assert board.limits["b"] > board.limits["a"]

    board.draws = {"a": 640.0, "b": 100.0}  # the burst moves to the GPU that sorts first
    sums = []
    original = board.set_power_limit

    def watched(uuid: str, watts: float) -> None:
        original(uuid, watts)
        sums.append(sum(board.limits.values()))

    board.set_power_limit = watched  # type: ignore[method-assign]
    for tick in range(1, 12):
        guard.tick(budget, now=tick * 0.1)
    assert board.limits["a"] > board.limits["b"]
    assert sums and max(sums) <= 900, sums


def test_a_budget_under_the_lowest_limits_holds_every_gpu_at_its_lowest_limit() -> None:
    board = Board({"a": 690.0, "b": 20.0, "c": 350.0})
    guard, _, _ = guard_of(board)
    status = guard.tick([PowerBudget(policy="p/q", watts=500, gpu_ids=["a", "b", "c"])], now=0.0).budgets[0]
    assert status.lever == "ClockCap"
    assert board.limits == dict.fromkeys("abc", 200.0)


def kept(watts: int = 1000, *, power: float = 900.0, lever: str = "PowerLimit", met: bool = True) -> BudgetStatus:
    return BudgetStatus(policy="ml/infer", watts=watts, power_mean=power, power_max=power, lever=lever, met=met)


def test_budget_statuses_are_written_when_they_say_something_new() -> None:
    reports = BudgetReports()
    assert reports.due([kept()], now=0.0), "the first report"
    reports.written([kept()], now=0.0)

    assert not reports.due([kept(power=910.0)], now=0.2), "a steady budget costs no writes"
    assert not reports.due([kept(power=910.0)], now=60.0), "nor do readings that barely move"
    assert reports.due([kept(watts=800)], now=0.2), "a new budget is acknowledged at once"
    assert not reports.due([kept(lever="ClockCap")], now=0.5), "a changed lever waits a second ..."
    assert reports.due([kept(lever="ClockCap")], now=1.0), "... then goes out"
    assert not reports.due([kept(power=700.0)], now=4.0), "moved readings wait a few seconds ..."
    assert reports.due([kept(power=700.0)], now=5.0), "... then go out"


def test_the_node_power_counts_every_gpu_budgeted_or_not_and_is_written_when_it_moves() -> None:
    board = Board({"a": 400.0, "b": 300.0, "c": 100.0})
    guard, _, _ = guard_of(board)
    tick = guard.tick([PowerBudget(policy="ml/infer", watts=1000, gpu_ids=["a"])], now=0.0)
    assert tick.power is not None and (tick.power.mean, tick.power.max) == (800.0, 800.0)
    assert tick.scale == 2100.0

    reports = BudgetReports()
    assert reports.due(tick.budgets, 0.0, power=tick.power, scale=tick.scale)
    reports.written(tick.budgets, 0.0, power=tick.power)
    board.draws["c"] = 110.0
    small = guard.tick([PowerBudget(policy="ml/infer", watts=1000, gpu_ids=["a"])], now=6.0)
    assert not reports.due(small.budgets, 6.0, power=small.power, scale=small.scale)
    board.draws["c"] = 600.0
    large = guard.tick([PowerBudget(policy="ml/infer", watts=1000, gpu_ids=["a"])], now=12.0)
    assert reports.due(large.budgets, 12.0, power=large.power, scale=large.scale)


def test_a_refused_limit_leaves_no_original_behind() -> None:
    board = Board({"a": 700.0, "b": 700.0}, refusing=frozenset({"b"}))
    guard, _, originals = guard_of(board)

    guard.tick([PowerBudget(policy="ml/train", watts=1000, gpu_ids=["a", "b"])], now=0.0)

    assert "b" not in originals, "nothing was changed on b, so a restart must not try to give anything back"
    assert originals == {"a": 700.0}
