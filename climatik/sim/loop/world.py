"""A scenario made real: simulated nodes with their traces, and each policy's GPUs, ready to be stepped."""

from __future__ import annotations

import random
from dataclasses import dataclass

from climatik.sim.gpu import SimGpu
from climatik.sim.loop.scenario import GpuPlan, PolicyPlan, Scenario
from climatik.sim.naming import gpu_uuid
from climatik.sim.node import PodRef, SimNode
from climatik.sim.phases import Load
from climatik.sim.traces import Trace


@dataclass(frozen=True)
class PlacedGpu:
    """A GPU of the world with the node it is on, its trace, and the pod that uses it (if a policy selects one)."""

    node: SimNode
    gpu: SimGpu
    trace: Trace
    pod: PodRef | None
    group: str = ""

    @property
    def uuid(self) -> str:
        return self.gpu.uuid

    def upcoming_load(self) -> Load:
        """The load of the node's next step (traces answer the same for the same time, whoever asks)."""
        return self.trace.at(self.node.now_s)


class World:
    """The simulated nodes of one run. Every GPU steps once per step: `max_substep_s` is the run's step size."""

    def __init__(self, scenario: Scenario, *, dt_s: float, gpu_lag_s: float) -> None:
        self.scenario = scenario
        self.nodes: list[SimNode] = []
        self._placed: dict[str, PlacedGpu] = {}
        owners = {gpu: policy for policy in scenario.policies for gpu in policy.gpus}
        plans = {(plan.node, plan.index): plan for plan in scenario.gpus}
        for name, count in scenario.nodes.items():
            members = [plans.get((name, index)) or GpuPlan(name, index, scenario.idle) for index in range(count)]
            self._add_node(name, members, owners, dt_s=dt_s, gpu_lag_s=gpu_lag_s)
        self._by_policy = {
            policy.name: [self._placed[gpu_uuid(node, index)] for node, index in policy.gpus]
            for policy in scenario.policies
        }

    def _add_node(self, name: str, plans: list[GpuPlan], owners: dict[tuple[str, int], PolicyPlan], *,
                  dt_s: float, gpu_lag_s: float) -> None:
        seed = self.scenario.seed
        gpus = [SimGpu(profile=self.scenario.profile, uuid=gpu_uuid(name, plan.index), index=plan.index,
                       lag_s=gpu_lag_s) for plan in plans]
        traces = [plan.workload.build(random.Random(f"{seed}/{plan.draw or f'{name}/{plan.index}'}"))
                  for plan in plans]
        pods = [_pod(owners.get((name, plan.index)), name, plan.index) for plan in plans]
        node = SimNode(name=name, gpus=gpus, traces=traces, pods=[[pod] if pod else [] for pod in pods],
                       max_substep_s=dt_s)
        self.nodes.append(node)
        for gpu, trace, pod, plan in zip(gpus, traces, pods, plans, strict=True):
            self._placed[gpu.uuid] = PlacedGpu(node, gpu, trace, pod, plan.group)

    @property
    def policies(self) -> tuple[PolicyPlan, ...]:
        return self.scenario.policies

    def gpus_of(self, policy: str) -> list[PlacedGpu]:
        """The GPUs a policy's pods use, in the policy's order."""
        return self._by_policy[policy]

    def gpu(self, uuid: str) -> PlacedGpu:
        return self._placed[uuid]

    def all_gpus(self) -> list[PlacedGpu]:
        return list(self._placed.values())

    def node(self, name: str) -> SimNode:
        return next(node for node in self.nodes if node.name == name)


def _pod(policy: PolicyPlan | None, node: str, index: int) -> PodRef | None:
    if policy is None:
        return None
    return PodRef(namespace=policy.namespace, pod=f"{policy.name}-{node}-{index}", container="main")
