"""Stable, realistic-looking names for simulated GPUs: UUIDs and device nodes."""

from __future__ import annotations

import uuid

# A fixed namespace makes the same node and index give the same UUID in every process and run.
_GPU_NAMESPACE = uuid.UUID("6f1d2c3a-8b4e-5a7f-9c0d-1e2f3a4b5c6d")


def gpu_uuid(node_name: str, index: int) -> str:
    """The UUID NVML would report for GPU `index` of `node_name`, e.g. "GPU-5fd4c8a1-...".

    Derived from the names so that a simulated cluster is reproducible without storing anything.
    """
    return f"GPU-{uuid.uuid5(_GPU_NAMESPACE, f'{node_name}/{index}')}"


def device_name(index: int) -> str:
    """The device node name DCGM reports, e.g. "nvidia0"."""
    return f"nvidia{index}"
