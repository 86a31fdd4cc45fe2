"""Climatik: keep the power drawn by Kubernetes GPU workloads under a budget by tuning GPU and CPU clocks."""

__version__ = "0.1.0"
