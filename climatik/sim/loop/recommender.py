"""The recommender on simulated time: on each new status it builds the algorithm's input the production way
(`algorithm_input` from the policy and the NodeFrequencies objects), runs the production step (`run_step`),
keeps the state as the JSON text the status persists, and writes changed targets to NodeFrequencies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from climatik.algorithms.base import Algorithm
from climatik.algorithms.inputs import algorithm_input
from climatik.algorithms.runner import run_step
from climatik.algorithms.state import decode_state
from climatik.api import AlgorithmRef, ObjectMeta, PolicyStatus, PowerCappingPolicy
from climatik.sim.loop.actuation import NodeFrequenciesStore
from climatik.sim.loop.datapath import DataPath
from climatik.sim.loop.scenario import PolicyPlan
from climatik.sim.loop.world import World


@dataclass(frozen=True)
class StepLog:
    """One algorithm step: when, on which power, what it decided and why."""

    at_s: float
    policy: str
    power: float | None
    targets: dict[str, int]
    changed: bool
    reason: str


class SimRecommender:
    """Runs `algorithm` for each policy; `on_write(now_s, nodes)` is told which nodes' specs a step changed."""

    def __init__(self, world: World, datapath: DataPath, store: NodeFrequenciesStore, *, algorithm: Algorithm,
                 ref: AlgorithmRef | None, on_write: Callable[[float, set[str]], None]) -> None:
        self._world = world
        self._datapath = datapath
        self._store = store
        self._algorithm = algorithm
        self._ref = ref
        self._on_write = on_write
        self._status: dict[str, PolicyStatus] = {}
        self._state_text: dict[str, str] = {}
        self.log: list[StepLog] = []

    def observe(self, policy: str, status: PolicyStatus) -> None:
        """The monitor's latest status of `policy` reached the recommender."""
        self._status[policy] = status

    def reconcile(self, plan: PolicyPlan, now_s: float) -> None:
        """One step of the policy's algorithm at simulated time `now_s`."""
        policy = PowerCappingPolicy(metadata=ObjectMeta(name=plan.name, namespace=plan.namespace),
                                    spec=plan.spec_at(now_s, self._ref), status=self._status.get(plan.name))
        inp = algorithm_input(policy, self._store.objects(), state=decode_state(self._state_text.get(plan.name)),
                              now=self._datapath.unix(now_s))
        result = run_step(self._algorithm, inp)
        self._state_text[plan.name] = result.state_text
        self.log.append(StepLog(now_s, plan.name, inp.observation.power, result.targets.gpu_entries(),
                                result.changed, result.reason))
        if result.changed:
            node_of = {p.uuid: p.node.name for p in self._world.gpus_of(plan.name)}
            nodes = self._store.write(policy.key, result.targets, node_of)
            if nodes:
                self._on_write(now_s, nodes)
