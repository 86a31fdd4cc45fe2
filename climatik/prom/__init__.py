"""Prometheus access for the monitor: an HTTP API client, and the mapping of DCGM or Kepler series into
per-GPU readings attributed to pods. Nothing here imports Kubernetes."""

from climatik.prom.client import (
    BearerTokenFile,
    PromClient,
    PromQueryMetrics,
    PromSettings,
    QueryObserver,
    QueryResult,
    Sample,
    make_session,
)
from climatik.prom.errors import (
    PromAuthError,
    PromConnectionError,
    PromError,
    PromNoDataError,
    PromQueryError,
    PromResponseError,
    PromTimeoutError,
    PromUnavailableError,
)
from climatik.prom.profiles import (
    PROFILE_NAMES,
    MetricProfile,
    PodKey,
    PodLabels,
    dcgm_profile,
    kepler_profile,
    profile_named,
)
from climatik.prom.sampler import GpuSampler
from climatik.prom.snapshot import GpuReading, GpuSnapshot, PowerTotal, ProblemKind, SampleProblem

__all__ = [
    "PROFILE_NAMES",
    "BearerTokenFile",
    "GpuReading",
    "GpuSampler",
    "GpuSnapshot",
    "MetricProfile",
    "PodKey",
    "PodLabels",
    "PowerTotal",
    "ProblemKind",
    "PromAuthError",
    "PromClient",
    "PromConnectionError",
    "PromError",
    "PromNoDataError",
    "PromQueryError",
    "PromQueryMetrics",
    "PromResponseError",
    "PromSettings",
    "PromTimeoutError",
    "PromUnavailableError",
    "QueryObserver",
    "QueryResult",
    "Sample",
    "SampleProblem",
    "dcgm_profile",
    "kepler_profile",
    "make_session",
    "profile_named",
]
