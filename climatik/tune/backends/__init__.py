"""Hardware backends of the tuner: NVML and simulated GPUs, cpufreq sysfs CPUs, behind two small protocols."""

from climatik.tune.backends.base import (
    BackendUnavailableError,
    CpuBackend,
    DeviceResult,
    Fit,
    GpuBackend,
    fit_to_range,
    fit_to_steps,
)

__all__ = ["BackendUnavailableError", "CpuBackend", "DeviceResult", "Fit", "GpuBackend", "fit_to_range", "fit_to_steps"]
