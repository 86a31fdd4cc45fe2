"""The control loop in simulated time: production algorithms driven through a model of the real data path
(exporter, Prometheus, monitor, recommender, tuner, each with its delay), against baselines and an oracle, with
the control-quality metrics the benchmark reports. Nothing here sleeps or does I/O."""

from climatik.sim.loop.baselines import NoCapping, Oracle, StaticClock, StaticPowerLimit
from climatik.sim.loop.harness import DEFAULT_DT_S, Controller, DataPath, PolicySeries, Recording, RunContext, run
from climatik.sim.loop.production import ProductionLoop
from climatik.sim.loop.quality import Episode, InfeasibleMetrics, PolicyMetrics, infeasible_metrics, policy_metrics
from climatik.sim.loop.scenario import CapChange, GpuPlan, Plant, PolicyPlan, Scenario, plants

__all__ = [
    "DEFAULT_DT_S",
    "CapChange",
    "Controller",
    "DataPath",
    "Episode",
    "GpuPlan",
    "InfeasibleMetrics",
    "NoCapping",
    "Oracle",
    "Plant",
    "PolicyMetrics",
    "PolicyPlan",
    "PolicySeries",
    "ProductionLoop",
    "Recording",
    "RunContext",
    "Scenario",
    "StaticClock",
    "StaticPowerLimit",
    "infeasible_metrics",
    "plants",
    "policy_metrics",
    "run",
]
