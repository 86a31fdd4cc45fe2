"""The production control loop on simulated time: monitor, recommender (running a registered algorithm) and
tuners, joined by the data path's delays."""

from __future__ import annotations

from collections.abc import Callable

from climatik.algorithms.base import Algorithm
from climatik.api import AlgorithmRef, PolicyStatus
from climatik.sim.loop.actuation import NodeFrequenciesStore, SimTuner
from climatik.sim.loop.harness import RunContext
from climatik.sim.loop.monitor import SimMonitor
from climatik.sim.loop.recommender import SimRecommender, StepLog
from climatik.sim.loop.scenario import PolicyPlan
from climatik.sim.loop.telemetry import ORDER_MONITOR, ORDER_RECOMMEND, ORDER_TUNE


class ProductionLoop:
    """Runs `algorithm` for every policy of the scenario the way the three controllers do in a cluster.

    The monitor runs every control period; each status it writes reaches the recommender after the monitor
    latency; a NodeFrequencies change reaches the GPUs after the recommend and apply latencies (then the GPU's
    own clock lag); a cap change (a spec change) makes the recommender run at once on the status it has.
    """

    instant = False

    def __init__(self, algorithm: Algorithm, *, ref: AlgorithmRef | None = None, label: str | None = None) -> None:
        self.label = label or algorithm.name
        self._algorithm = algorithm
        self._ref = ref
        self._recommender: SimRecommender | None = None
        self._tuner: SimTuner | None = None

    @property
    def log(self) -> list[StepLog]:
        """Every algorithm step of the run."""
        return self._recommender.log if self._recommender is not None else []

    @property
    def applies(self) -> int:
        """How many GPU clock changes the tuners made."""
        return self._tuner.applies if self._tuner is not None else 0

    def start(self, ctx: RunContext) -> None:
        """Wire monitor, recommender and tuners to the run's schedule."""
        world, schedule, datapath = ctx.world, ctx.schedule, ctx.datapath
        store = NodeFrequenciesStore(world)
        tuner = SimTuner(world, store)
        actuation_s = datapath.recommend_latency_s + datapath.apply_latency_s

        def spec_written(now_s: float, nodes: set[str]) -> None:
            schedule.at(now_s + actuation_s, lambda _: tuner.apply(nodes), order=ORDER_TUNE)

        recommender = SimRecommender(world, datapath, store, algorithm=self._algorithm, ref=self._ref,
                                     on_write=spec_written)
        plans = {policy.name: policy for policy in world.policies}

        def status_written(policy: str, now_s: float, status: PolicyStatus) -> None:
            def seen(at_s: float) -> None:
                recommender.observe(policy, status)
                recommender.reconcile(plans[policy], at_s)

            schedule.at(now_s + datapath.monitor_latency_s, seen, order=ORDER_RECOMMEND)

        monitor = SimMonitor(world, ctx.telemetry, datapath, status_written)
        schedule.every(datapath.monitor_interval_s, monitor.cycle, phase_s=datapath.monitor_phase_s,
                       order=ORDER_MONITOR)
        def spec_changed(plan: PolicyPlan) -> Callable[[float], None]:
            return lambda now_s: recommender.reconcile(plan, now_s)

        for policy in world.policies:
            for change in policy.caps[1:]:
                schedule.at(change.at_s, spec_changed(policy), order=ORDER_RECOMMEND)
        self._recommender, self._tuner = recommender, tuner

    def before_step(self, now_s: float) -> None:
        return None
