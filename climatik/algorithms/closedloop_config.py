"""The closed-loop controller's parameters: names, defaults, bounds, and their validated form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from climatik.algorithms.params import ParamReader

NAME = "closed-loop"
PARAMETERS = ("margin-percent", "deadband-percent", "min-frequency", "uniform", "settle-seconds", "stale-seconds",
              "max-step-up-percent", "exponent", "cpu-step-percent", "cpu-min-percent", "max-step-down-percent",
              "settle-max-seconds")


@dataclass(frozen=True)
class ClosedLoopConfig:
    """Validated parameters; fractions are 0..1 here, percent in the spec."""

    margin: float = 0.01
    deadband: float = 0.01
    min_frequency: int | None = None
    uniform: bool = True
    settle_seconds: float = 2.0
    stale_seconds: float = 180.0
    max_step_up: float = 0.25
    exponent: float = 2.7
    cpu_step: float = 0.1
    cpu_floor: float = 0.5
    max_step_down: float = 0.4
    settle_max_seconds: float = 60.0

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str] | None) -> ClosedLoopConfig:
        read = ParamReader(NAME, parameters, PARAMETERS)
        settle = read.number("settle-seconds", 2.0, minimum=0.0, maximum=3600.0)
        return cls(
            margin=read.number("margin-percent", 1.0, minimum=0.0, maximum=50.0) / 100.0,
            deadband=read.number("deadband-percent", 1.0, minimum=0.0, maximum=20.0) / 100.0,
            min_frequency=read.integer("min-frequency", None, minimum=1, maximum=10000),
            uniform=read.boolean("uniform", True),
            settle_seconds=settle,
            stale_seconds=read.number("stale-seconds", 180.0, minimum=1.0, maximum=86400.0),
            max_step_up=read.number("max-step-up-percent", 25.0, minimum=1.0, maximum=100.0) / 100.0,
            exponent=read.number("exponent", 2.7, minimum=1.0, maximum=4.0),
            cpu_step=read.number("cpu-step-percent", 10.0, minimum=1.0, maximum=50.0) / 100.0,
            cpu_floor=read.number("cpu-min-percent", 50.0, minimum=10.0, maximum=100.0) / 100.0,
            max_step_down=read.number("max-step-down-percent", 40.0, minimum=5.0, maximum=90.0) / 100.0,
            settle_max_seconds=read.number("settle-max-seconds", max(60.0, settle), minimum=settle,
                                           maximum=86400.0),
        )
