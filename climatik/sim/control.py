"""The JSON shapes of the simulator's control API, shared by its server and its client."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from climatik.sim.node import GpuReading
from climatik.sim.phases import Load, PhaseMix


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as GET /sim/gpus lists it: inventory plus the clock state the tuner cares about."""

    uuid: str
    index: int
    model: str
    min_clock_mhz: int
    max_clock_mhz: int
    default_clock_mhz: int
    supported_clocks_mhz: tuple[int, ...]
    mem_clock_mhz: int
    power_limit_w: float
    current_clock_mhz: int
    locked_clock_mhz: int | None
    power_w: float
    utilisation: float

    @classmethod
    def from_reading(cls, reading: GpuReading) -> GpuInfo:
        """Describe a node's reading."""
        profile = reading.profile
        return cls(
            uuid=reading.uuid,
            index=reading.index,
            model=profile.model_name,
            min_clock_mhz=profile.min_sm_mhz,
            max_clock_mhz=profile.max_sm_mhz,
            default_clock_mhz=profile.default_sm_mhz,
            supported_clocks_mhz=profile.supported_clocks(),
            mem_clock_mhz=reading.mem_clock_mhz,
            power_limit_w=reading.power_limit_w,
            current_clock_mhz=reading.sm_clock_mhz,
            locked_clock_mhz=reading.locked_max_mhz,
            power_w=round(reading.power_w, 3),
            utilisation=reading.utilisation,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GpuInfo:
        """Parse one entry of GET /sim/gpus."""
        locked = data.get("locked_clock_mhz")
        return cls(
            uuid=str(data["uuid"]),
            index=int(data["index"]),
            model=str(data["model"]),
            min_clock_mhz=int(data["min_clock_mhz"]),
            max_clock_mhz=int(data["max_clock_mhz"]),
            default_clock_mhz=int(data["default_clock_mhz"]),
            supported_clocks_mhz=tuple(int(mhz) for mhz in data["supported_clocks_mhz"]),
            mem_clock_mhz=int(data["mem_clock_mhz"]),
            power_limit_w=float(data["power_limit_w"]),
            current_clock_mhz=int(data["current_clock_mhz"]),
            locked_clock_mhz=None if locked is None else int(locked),
            power_w=float(data["power_w"]),
            utilisation=float(data["utilisation"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object for this GPU."""
        return {
            "uuid": self.uuid,
            "index": self.index,
            "model": self.model,
            "min_clock_mhz": self.min_clock_mhz,
            "max_clock_mhz": self.max_clock_mhz,
            "default_clock_mhz": self.default_clock_mhz,
            "supported_clocks_mhz": list(self.supported_clocks_mhz),
            "mem_clock_mhz": self.mem_clock_mhz,
            "power_limit_w": self.power_limit_w,
            "current_clock_mhz": self.current_clock_mhz,
            "locked_clock_mhz": self.locked_clock_mhz,
            "power_w": self.power_w,
            "utilisation": self.utilisation,
        }


def parse_positive(data: object, key: str) -> float:
    """`data[key]` as a finite positive number, or ValueError with a message fit for a 400 answer."""
    if not isinstance(data, dict) or key not in data:
        raise ValueError(f"body must be a JSON object with {key!r}")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key!r} must be a positive number, got {value!r}")
    return float(value)


def parse_load(data: object) -> tuple[str | None, Load]:
    """The body of POST /sim/load: {"uuid": optional, "utilisation": 0..1, "mix": {"prefill": 0.3, ...}}."""
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    uuid = data.get("uuid")
    if uuid is not None and not isinstance(uuid, str):
        raise ValueError("'uuid' must be a string")
    utilisation = data.get("utilisation")
    if isinstance(utilisation, bool) or not isinstance(utilisation, int | float):
        raise ValueError("'utilisation' must be a number within 0..1")
    mix = data.get("mix", {"idle": 1.0} if utilisation == 0 else None)
    if not isinstance(mix, dict) or not all(isinstance(v, int | float) for v in mix.values()):
        raise ValueError("'mix' must map phase names to fractions")
    return uuid, Load(float(utilisation), PhaseMix.from_mapping(mix))
