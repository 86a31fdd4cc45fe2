"""What a closed-loop benchmark run simulates: nodes, what each GPU runs, and the policies with their caps.

A scenario is a plain description; `build_world` turns it into simulated nodes. Every GPU's trace draws from
a random source seeded by (scenario seed, the GPU's `draw` key), so a run is reproducible and GPUs that share a
key (the ranks of one tensor-parallel replica) run exactly the same load.

The standard scenarios run on H100 nodes of 8 GPUs:

* step: a training job's load steps from 60 % of the cap to 30 % over it at 20 s, and back down at 100 s.
* llm: an LLM inference service, two tensor-parallel replicas of 4 GPUs, with request bursts.
* cap-drop: steady training while the cap is lowered by 30 % at 60 s.
* shared: two policies on different GPUs of the same two nodes, a training job with checkpoint pauses and an
  inference service.
* infeasible: steady training whose cap drops below what its GPUs draw at their lowest clock (and lowest power
  limit) for 40 s, and is then restored.

A scenario's `plant` says how the simulated GPUs differ from what the controllers' model assumes: another
power exponent, boards that draw more or less than the profile, noisy power readings (`plants()`). The default
plant is the profile itself, read without error.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from climatik.api import AlgorithmRef, LabelSelector, PolicySpec
from climatik.sim.gpu import FIRMWARE_TAU_S, SimGpu
from climatik.sim.node import PodRef, SimNode, gpu_uuid
from climatik.sim.physics import H100, GpuProfile, Load, Phase, PhaseMix, firmware_clock_mhz, power_w
from climatik.sim.traces import (
    Breakpoint,
    ConstantParams,
    InferenceParams,
    ScriptedParams,
    Trace,
    TrainingParams,
    Workload,
)


@dataclass(frozen=True)
class GpuPlan:
    """One GPU's work: on `node`, index `index`, running `workload` drawn from the source named `draw`.

    GPUs with the same non-empty `group` work in lockstep (the ranks of a tensor- or data-parallel job): the
    group progresses at the pace of its slowest member, so a GPU clocked higher than the others adds nothing.
    """

    node: str
    index: int
    workload: Workload
    draw: str = ""
    group: str = ""


@dataclass(frozen=True)
class CapChange:
    """From `at_s` on, the policy's powerCapLimit is `watts`."""

    at_s: float
    watts: int


@dataclass(frozen=True)
class PolicyPlan:
    """One PowerCappingPolicy: the GPUs its pods use, its cap over time, and its capping threshold (percent)."""

    name: str
    gpus: tuple[tuple[str, int], ...]
    caps: tuple[CapChange, ...]
    capping_threshold: int | None = None
    namespace: str = "bench"

    def __post_init__(self) -> None:
        if not self.gpus:
            raise ValueError(f"policy {self.name}: needs at least one GPU")
        if not self.caps or self.caps[0].at_s != 0.0:
            raise ValueError(f"policy {self.name}: the first cap must start at 0 s")
        if [c.at_s for c in self.caps] != sorted(c.at_s for c in self.caps):
            raise ValueError(f"policy {self.name}: cap changes must be in time order")

    def cap_at(self, t_s: float) -> int:
        """The cap in force at simulated time `t_s`."""
        cap = self.caps[0].watts
        for change in self.caps:
            if change.at_s <= t_s + 1e-9:
                cap = change.watts
        return cap

    def spec_at(self, t_s: float, algorithm: AlgorithmRef | None = None) -> PolicySpec:
        """The policy's spec as the controllers read it at `t_s`."""
        return PolicySpec(
            power_cap_limit=self.cap_at(t_s),
            selector=LabelSelector(match_labels={"app": self.name}),
            capping_threshold=self.capping_threshold,
            custom_algorithms=[algorithm] if algorithm is not None else None,
        )


@dataclass(frozen=True)
class Plant:
    """The simulated GPUs as they really are, against the model the algorithms assume (the profile's curves, the
    same on every board, read exactly).

    alpha: the power exponent of every phase (None: the profile's, 2.7).
    p_max_spread: each board draws its profile's above-idle power times a factor drawn uniformly within
      1 +- p_max_spread, once per board, from the scenario seed and its UUID.
    noise: the relative standard deviation of each power reading (clipped at 3 sigma; the energy is exact).
    firmware_tau_s: how fast the boards' firmware enforces a power limit (an assumption, see climatik.sim.gpu).
    """

    name: str = "as modelled"
    alpha: float | None = None
    p_max_spread: float = 0.0
    noise: float = 0.0
    firmware_tau_s: float = FIRMWARE_TAU_S

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_max_spread < 1.0 or self.noise < 0.0 or self.firmware_tau_s < 0.0:
            raise ValueError(f"plant {self.name}: need 0 <= p_max_spread < 1, noise >= 0 and firmware_tau_s >= 0")

    def profile_for(self, profile: GpuProfile, *, seed: int, uuid: str) -> GpuProfile:
        """The profile of one board of this plant."""
        board = profile if self.alpha is None else profile.with_alpha(self.alpha)
        if self.p_max_spread > 0.0:
            draw = random.Random(f"{seed}/board/{uuid}").uniform(-1.0, 1.0)
            board = board.scaled(1.0 + self.p_max_spread * draw)
        return board


def plants() -> list[Plant]:
    """The default plant and the ones the model does not match: power exponents 2.0 and 3.5, boards +-6 % apart,
    power readings with 1 % noise."""
    return [Plant(), Plant("power exponent 2.0", alpha=2.0), Plant("power exponent 3.5", alpha=3.5),
            Plant("boards +-6 %", p_max_spread=0.06), Plant("readings 1 % noise", noise=0.01)]


@dataclass(frozen=True)
class Scenario:
    """A benchmark scenario. GPUs of `nodes` not named in `gpus` stay idle; `plant` is what the GPUs really are."""

    name: str
    title: str
    nodes: Mapping[str, int]
    gpus: tuple[GpuPlan, ...]
    policies: tuple[PolicyPlan, ...]
    duration_s: float
    profile: GpuProfile = H100
    seed: int = 0
    notes: str = ""
    idle: Workload = field(default_factory=ConstantParams)
    plant: Plant = field(default_factory=Plant)

    def __post_init__(self) -> None:
        placed = [(g.node, g.index) for g in self.gpus]
        if len(set(placed)) != len(placed):
            raise ValueError(f"scenario {self.name}: a GPU is planned twice")
        for node, index in placed + [gpu for policy in self.policies for gpu in policy.gpus]:
            if node not in self.nodes or not 0 <= index < self.nodes[node]:
                raise ValueError(f"scenario {self.name}: no GPU {index} on node {node!r}")
        owners = [gpu for policy in self.policies for gpu in policy.gpus]
        if len(set(owners)) != len(owners):
            raise ValueError(f"scenario {self.name}: policies must use different GPUs")


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
        # GPUs that draw from the same source run the same trace: one object answers for all of them.
        self._traces: dict[tuple[str, Workload], Trace] = {}
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
        seed, plant = self.scenario.seed, self.scenario.plant
        gpus = []
        for plan in plans:
            uuid = gpu_uuid(name, plan.index)
            gpus.append(SimGpu(profile=plant.profile_for(self.scenario.profile, seed=seed, uuid=uuid), uuid=uuid,
                               index=plan.index, lag_s=gpu_lag_s, firmware_tau_s=plant.firmware_tau_s,
                               noise=plant.noise, noise_seed=f"{seed}/noise/{uuid}"))
        traces = [self._trace(plan.workload, f"{seed}/{plan.draw or f'{name}/{plan.index}'}") for plan in plans]
        pods = [_pod(owners.get((name, plan.index)), name, plan.index) for plan in plans]
        node = SimNode(name=name, gpus=gpus, traces=traces, pods=[[pod] if pod else [] for pod in pods],
                       max_substep_s=dt_s)
        self.nodes.append(node)
        for gpu, trace, pod, plan in zip(gpus, traces, pods, plans, strict=True):
            self._placed[gpu.uuid] = PlacedGpu(node, gpu, trace, pod, plan.group)

    def _trace(self, workload: Workload, source: str) -> Trace:
        key = (source, workload)
        if key not in self._traces:
            self._traces[key] = workload.build(random.Random(source))
        return self._traces[key]

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


#: Per-GPU spread of a training job's load (a straggler, a faster rank): the GPUs are not identical.
_SPREAD = (1.0, 0.97, 1.03, 0.95, 1.05, 0.99, 1.01, 1.0)
_TRAINING = PhaseMix.only(Phase.TRAINING)
#: One replica's requests: about 16 % of the time prefilling and a third of the decode batch between bursts;
#: prefill around 60 % and a full batch in a burst.
_SERVING = InferenceParams(base_rps=1.0, burst_rps=4.0, mean_burst_gap_s=40.0, mean_burst_s=15.0)


def uncapped_power(profile: GpuProfile, load: Load) -> float:
    """What one GPU draws under `load` at its default clock (within its board limit)."""
    clock = firmware_clock_mhz(profile, profile.default_sm_mhz, load, profile.power_limit_w)
    return power_w(profile, clock, load)


def floor_power(profile: GpuProfile, load: Load) -> float:
    """What one GPU draws under `load` at its lowest clock: no clock cap can bring it lower."""
    return power_w(profile, profile.min_sm_mhz, load)


def training_utilisation(profile: GpuProfile, watts: float) -> float:
    """The training utilisation at which one uncapped GPU draws `watts` (bisection: power grows with it)."""
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2.0
        if uncapped_power(profile, Load(middle, _TRAINING)) < watts:
            low = middle
        else:
            high = middle
    return low


def step(*, cap: int = 4000, seed: int = 0) -> Scenario:
    """Load steps from 60 % of the cap to 130 % of it at 20 s and back at 100 s; 150 s."""
    gpus = []
    for index, spread in enumerate(_SPREAD):
        light = training_utilisation(H100, 0.6 * cap / len(_SPREAD) * spread)
        heavy = training_utilisation(H100, 1.3 * cap / len(_SPREAD) * spread)
        points = (Breakpoint(0.0, light, _TRAINING), Breakpoint(20.0, heavy, _TRAINING),
                  Breakpoint(100.0, light, _TRAINING))
        gpus.append(GpuPlan("node-a", index, ScriptedParams(points), group="train"))
    policy = PolicyPlan("train", tuple(("node-a", i) for i in range(8)), (CapChange(0.0, cap),))
    return Scenario(name="step", title="load step to 130% of the cap at 20 s, back at 100 s",
                    nodes={"node-a": 8}, gpus=tuple(gpus), policies=(policy,), duration_s=150.0, seed=seed)


def llm(*, cap: int = 3200, seed: int = 0) -> Scenario:
    """Two 4-GPU replicas serving an LLM with bursts of requests; 300 s."""
    gpus = tuple(GpuPlan("node-a", i, _SERVING, draw=f"replica-{i // 4}", group=f"replica-{i // 4}")
                 for i in range(8))
    policy = PolicyPlan("serve", tuple(("node-a", i) for i in range(8)), (CapChange(0.0, cap),))
    return Scenario(name="llm", title="LLM inference, 2 replicas x TP4, request bursts", nodes={"node-a": 8},
                    gpus=gpus, policies=(policy,), duration_s=300.0, seed=seed)


def cap_drop(*, cap: int = 5000, seed: int = 0) -> Scenario:
    """Steady training; the cap drops by 30 % at 60 s; 150 s."""
    work = TrainingParams(utilisation=0.9, jitter=0.02)
    gpus = tuple(GpuPlan("node-a", i, work, group="train") for i in range(8))
    lowered = round(cap * 0.7)
    policy = PolicyPlan("train", tuple(("node-a", i) for i in range(8)),
                        (CapChange(0.0, cap), CapChange(60.0, lowered)))
    return Scenario(name="cap-drop", title=f"training, cap lowered from {cap} W to {lowered} W at 60 s",
                    nodes={"node-a": 8}, gpus=gpus, policies=(policy,), duration_s=150.0, seed=seed)


def shared(*, train_cap: int = 4000, serve_cap: int = 3200, seed: int = 0) -> Scenario:
    """Training on GPUs 0-3 and serving on GPUs 4-7 of two nodes, one policy each; 240 s."""
    nodes = ("node-a", "node-b")
    work = TrainingParams(utilisation=0.9, jitter=0.02, checkpoint_every_s=60.0, checkpoint_s=10.0)
    gpus = [GpuPlan(node, i, work, group="train") for node in nodes for i in range(4)]
    gpus += [GpuPlan(node, i, _SERVING, draw=f"replica-{node}", group=f"replica-{node}")
             for node in nodes for i in range(4, 8)]
    policies = (
        PolicyPlan("train", tuple((node, i) for node in nodes for i in range(4)), (CapChange(0.0, train_cap),)),
        PolicyPlan("serve", tuple((node, i) for node in nodes for i in range(4, 8)), (CapChange(0.0, serve_cap),)),
    )
    return Scenario(name="shared", title="training and serving on different GPUs of the same 2 nodes",
                    nodes={node: 8 for node in nodes}, gpus=tuple(gpus), policies=policies, duration_s=240.0,
                    seed=seed)


#: The infeasible scenario's load: steady training at 90 %.
INFEASIBLE_LOAD = Load(0.9, _TRAINING)


def infeasible(*, cap: int = 8000, low: int = 1200, seed: int = 0) -> Scenario:
    """Steady training under a cap it never reaches; at 30 s the cap drops to `low`, under what the GPUs draw at
    their lowest clock and lowest power limit, and at 70 s it is restored; 130 s."""
    work = TrainingParams(utilisation=INFEASIBLE_LOAD.utilisation, jitter=0.01)
    gpus = tuple(GpuPlan("node-a", i, work, group="train") for i in range(8))
    policy = PolicyPlan("train", tuple(("node-a", i) for i in range(8)),
                        (CapChange(0.0, cap), CapChange(30.0, low), CapChange(70.0, cap)))
    floor = 8 * max(floor_power(H100, INFEASIBLE_LOAD), H100.power_limit_range[0])
    return Scenario(name="infeasible", title=f"training; cap {cap} W dropped to {low} W (under the {floor:.0f} W the "
                    "GPUs draw at their floor) from 30 s to 70 s", nodes={"node-a": 8}, gpus=gpus,
                    policies=(policy,), duration_s=130.0, seed=seed)


def standard(seed: int = 0) -> list[Scenario]:
    """Every standard scenario whose caps can be met."""
    return [step(seed=seed), llm(seed=seed), cap_drop(seed=seed), shared(seed=seed)]
