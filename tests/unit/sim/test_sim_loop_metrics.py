"""Control-quality metrics on hand-made series: energy and time above the cap, violation spans from the first
true step above the cap (and the former time from Prometheus showing it), a loop under an unreachable cap, and
lockstep groups' useful work."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from climatik.sim.gpu import SimGpu
from climatik.sim.loop import PolicySeries, infeasible_metrics, policy_metrics
from climatik.sim.loop.harness import useful_work
from climatik.sim.loop.scenario import PlacedGpu
from climatik.sim.node import SimNode
from climatik.sim.physics import H100, Load, Phase, PhaseMix
from climatik.sim.traces import ConstantTrace

NAN = float("nan")


def series(power: list[float], prom: list[float], *, cap: float = 1000.0, dt: float = 0.5) -> PolicySeries:
    n = len(power)
    return PolicySeries(end_s=[dt * (i + 1) for i in range(n)], dt_s=[dt] * n, power=power, cap=[cap] * n,
                        prom=prom, clock=[1980.0] * n, work=[1.0] * n)


def test_energy_and_time_above_the_cap_count_only_the_excess() -> None:
    s = series([900.0, 1100.0, 1300.0, 1000.0], [NAN] * 4)
    m = policy_metrics(s)
    assert m.energy_above_cap_j == pytest.approx((100.0 + 300.0) * 0.5)
    assert m.cap_energy_j == pytest.approx(1000.0 * 2.0)
    assert m.energy_above_cap_share == pytest.approx(200.0 / 2000.0)
    assert m.time_above_cap_s == pytest.approx(1.0)
    assert m.time_above_cap_share == pytest.approx(0.5)
    assert m.work == pytest.approx(4.0)


def test_a_span_runs_from_the_first_true_step_over_the_cap_and_includes_the_detection_delay() -> None:
    # Over from 1.0 s; Prometheus shows it at the end of the step ending at 2.0 s; back under from 3.0 s.
    power = [900.0, 900.0, 1300.0, 1300.0, 1300.0, 1300.0, 950.0, 950.0, 950.0, 950.0]
    prom = [900.0, 900.0, 900.0, 1300.0, 1300.0, 1300.0, 1300.0, 950.0, 950.0, 950.0]
    m = policy_metrics(series(power, prom))
    (episode,) = m.episodes
    assert (episode.start_s, episode.visible_s, episode.end_s) == pytest.approx((1.0, 2.0, 3.0))
    assert episode.span_s == pytest.approx(2.0)
    assert m.worst_span_s == pytest.approx(2.0)
    # The former measure starts only when Prometheus shows the violation.
    assert episode.after_shown_s == pytest.approx(1.0)


def test_any_excess_over_the_cap_starts_a_span_unless_a_tolerance_is_asked_for() -> None:
    power = [1300.0, 1300.0, 1015.0, 1015.0, 1015.0]
    prom = [1300.0] * 5
    assert policy_metrics(series(power, prom)).worst_span_s == pytest.approx(2.5), "over to the end of the run"
    assert policy_metrics(series(power, prom), tolerance=0.02).worst_span_s == pytest.approx(1.0)


def test_an_episode_still_open_when_the_run_ends_counts_to_the_end_of_the_run() -> None:
    power = [900.0] * 8 + [1100.0, 1100.0]  # over in the run's last second: not known to end
    (episode,) = policy_metrics(series(power, [NAN] * 10)).episodes
    assert episode.end_s is None
    assert episode.span_s == pytest.approx(1.0), "a lower bound, not an infinite span"
    assert math.isinf(replace(episode, run_end_s=None).span_s)


def test_a_run_that_never_goes_over_has_no_span() -> None:
    m = policy_metrics(series([900.0, 1000.0, 950.0], [NAN] * 3))
    assert m.episodes == ()
    assert m.worst_span_s == 0.0


def test_a_dip_shorter_than_the_hold_time_does_not_end_the_episode() -> None:
    power = [1300.0, 900.0, 1300.0, 900.0, 900.0, 900.0]
    prom = [1300.0] * 6
    (episode,) = policy_metrics(series(power, prom)).episodes
    assert episode.end_s == pytest.approx(1.5)
    assert episode.span_s == pytest.approx(1.5)


def test_a_spike_over_before_prometheus_shows_it_has_no_time_to_under_but_its_energy_counts() -> None:
    power = [900.0, 1500.0, 900.0, 900.0, 900.0]
    prom = [900.0, 900.0, 900.0, 1100.0, 900.0]
    m = policy_metrics(series(power, prom))
    (episode,) = m.episodes
    assert not episode.visible
    assert episode.time_to_under_s is None
    assert m.worst_time_to_under_s is None
    assert m.energy_above_cap_j == pytest.approx(250.0)


def test_a_violation_that_never_ends_takes_for_ever() -> None:
    m = policy_metrics(series([1300.0] * 4, [NAN, 1300.0, 1300.0, 1300.0]))
    assert math.isinf(m.worst_time_to_under_s or 0.0)


def test_separate_violations_are_separate_episodes() -> None:
    power = [1300.0, 900.0, 900.0, 900.0, 1300.0, 1300.0, 900.0, 900.0]
    prom = [1300.0, 1300.0, 900.0, 900.0, 900.0, 1300.0, 1300.0, 900.0]
    m = policy_metrics(series(power, prom))
    assert [e.start_s for e in m.episodes] == pytest.approx([0.0, 2.0])
    assert m.times_to_under_s == pytest.approx([0.0, 0.0])


def commanded(clocks: list[float], limits: list[float], work: list[float], *, dt: float = 1.0) -> PolicySeries:
    n = len(clocks)
    return PolicySeries(end_s=[dt * (i + 1) for i in range(n)], dt_s=[dt] * n, power=[1.0] * n, cap=[1.0] * n,
                        prom=[NAN] * n, clock=list(clocks), work=list(work), target=list(clocks), limit=list(limits))


def test_a_loop_under_an_unreachable_cap_is_timed_to_its_floor_counted_for_reversals_and_timed_back() -> None:
    # Cap unreachable from 2 s to 8 s: clocks fall to the floor (210 MHz) at 5 s, bounce once, and after the
    # restore the work rate is back at the uncapped rate from 10 s.
    clocks = [1980.0, 1980.0, 1200.0, 600.0, 210.0, 210.0, 400.0, 210.0, 600.0, 1980.0, 1980.0, 1980.0]
    work = [1.0, 1.0, 0.7, 0.4, 0.2, 0.2, 0.3, 0.2, 0.4, 1.0, 1.0, 1.0]
    m = infeasible_metrics(commanded(clocks, [5600.0] * 12, work), commanded(clocks, [5600.0] * 12, [1.0] * 12),
                           drop_s=2.0, restore_s=8.0, floor_mhz=210.0, step_mhz=15.0)
    assert m.to_floor_s == pytest.approx(3.0)
    assert m.reversals == 2
    assert m.recovery_s == pytest.approx(2.0)


def test_a_loop_that_never_reaches_its_floor_or_recovers_says_so() -> None:
    clocks = [1980.0, 1500.0, 1500.0, 1500.0, 1500.0]
    m = infeasible_metrics(commanded(clocks, [1.0] * 5, [1.0, 0.5, 0.5, 0.5, 0.5]),
                           commanded(clocks, [1.0] * 5, [1.0] * 5), drop_s=0.5, restore_s=3.0, floor_mhz=210.0,
                           step_mhz=15.0)
    assert (m.to_floor_s, m.reversals, m.recovery_s) == (None, 0, None)


def placed(node: SimNode, index: int, group: str) -> PlacedGpu:
    return PlacedGpu(node, node.gpus[index], ConstantTrace(Load.idle()), None, group)


def test_a_lockstep_group_progresses_at_its_slowest_members_pace() -> None:
    busy = Load(0.5, PhaseMix.only(Phase.TRAINING))
    gpus = [SimGpu(profile=H100, uuid=f"g{i}", index=i) for i in range(3)]
    node = SimNode(name="n", gpus=gpus, traces=[ConstantTrace(busy)] * 3)
    node.step(1.0)
    group = [placed(node, 0, "tp"), placed(node, 1, "tp")]
    # Each busy half of the second; the first did 2 units per busy second, the second only 1.
    assert useful_work(group, {"g0": 1.0, "g1": 0.5}, 1.0) == pytest.approx(1.0 * (0.5 + 0.5))
    alone = [placed(node, 2, "")]
    assert useful_work(alone, {"g2": 0.7}, 1.0) == pytest.approx(0.7)
