"""A simulated GPU world: GPU physics on simulated time, workload traces, nodes, and a DCGM-format exporter.

The physics (phases, profiles, model, meter, gpu, traces, node) does no I/O; `server`, `client`, `runner`
and `cluster` put simulated nodes on the network for controllers, Prometheus and tests.
"""

from climatik.sim.cluster import (
    ClusterConfig,
    GpuConfig,
    NodeConfig,
    RealTimeRunner,
    SimCluster,
    SimulatedTimeDriver,
    build_node,
    build_nodes,
    start_cluster,
)
from climatik.sim.exporter import ExporterOptions, LabelShape, render_metrics
from climatik.sim.gpu import SimGpu
from climatik.sim.node import GpuState, PodRef, SimNode
from climatik.sim.physics import A100, H100, H200, GpuProfile, Load, Phase, PhaseCurve, PhaseMix, profile_by_key
from climatik.sim.traces import (
    Breakpoint,
    ConstantParams,
    ConstantTrace,
    InferenceParams,
    ScriptedParams,
    ScriptedTrace,
    Trace,
    TrainingParams,
    Workload,
)

__all__ = [
    "A100",
    "H100",
    "H200",
    "Breakpoint",
    "ClusterConfig",
    "ConstantParams",
    "ConstantTrace",
    "ExporterOptions",
    "GpuConfig",
    "GpuProfile",
    "GpuState",
    "InferenceParams",
    "LabelShape",
    "Load",
    "NodeConfig",
    "Phase",
    "PhaseCurve",
    "PhaseMix",
    "PodRef",
    "RealTimeRunner",
    "ScriptedParams",
    "ScriptedTrace",
    "SimCluster",
    "SimGpu",
    "SimNode",
    "SimulatedTimeDriver",
    "Trace",
    "TrainingParams",
    "Workload",
    "build_node",
    "build_nodes",
    "profile_by_key",
    "render_metrics",
    "start_cluster",
]
