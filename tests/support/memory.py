"""Memory a cache holds per object, measured in process: what the pod-cache test and the monitor benchmark
report."""

from __future__ import annotations

import sys
from typing import Any


def cached_bytes(objects: list[Any]) -> float:
    """Bytes per object, counting what objects share (interned strings, shared parts) once."""
    seen: set[int] = set()

    def size(value: Any) -> int:
        if id(value) in seen:
            return 0
        seen.add(id(value))
        total = sys.getsizeof(value)
        if isinstance(value, dict):
            total += sum(size(k) + size(v) for k, v in value.items())
        elif isinstance(value, list):
            total += sum(size(v) for v in value)
        return total

    return sum(size(obj) for obj in objects) / max(1, len(objects))
