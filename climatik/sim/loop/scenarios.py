"""The benchmark's standard scenarios, on H100 nodes of 8 GPUs.

* step: a training job's load steps from 60 % of the cap to 30 % over it at 20 s, and back down at 100 s.
* llm: an LLM inference service, two tensor-parallel replicas of 4 GPUs, with request bursts.
* cap-drop: steady training while the cap is lowered by 30 % at 60 s.
* shared: two policies on different GPUs of the same two nodes, a training job with checkpoint pauses and an
  inference service.
"""

from __future__ import annotations

from climatik.sim.loop.scenario import CapChange, GpuPlan, PolicyPlan, Scenario
from climatik.sim.model import firmware_clock_mhz, power_w
from climatik.sim.phases import Load, Phase, PhaseMix
from climatik.sim.profiles import H100, GpuProfile
from climatik.sim.traces import Breakpoint, InferenceParams, ScriptedParams, TrainingParams

#: Per-GPU spread of a training job's load (a straggler, a faster rank): the GPUs are not identical.
_SPREAD = (1.0, 0.97, 1.03, 0.95, 1.05, 0.99, 1.01, 1.0)
_TRAINING = PhaseMix.only(Phase.TRAINING)
_SERVING = InferenceParams(base_rps=2.0, burst_rps=8.0, mean_burst_gap_s=40.0, mean_burst_s=15.0)


def uncapped_power(profile: GpuProfile, load: Load) -> float:
    """What one GPU draws under `load` at its default clock (within its board limit)."""
    clock = firmware_clock_mhz(profile, profile.default_sm_mhz, load, profile.power_limit_w)
    return power_w(profile, clock, load)


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


def standard(seed: int = 0) -> list[Scenario]:
    """Every standard scenario."""
    return [step(seed=seed), llm(seed=seed), cap_drop(seed=seed), shared(seed=seed)]
