"""One algorithm step as the framework runs it: call the algorithm, then enforce what no algorithm may break.

Whatever an algorithm (a plug-in included) returns, the result only bounds GPUs the policy uses (observed now
or targeted already), only CPUs of those GPUs' nodes and only when the spec tunes CPUs, stays within the
hardware's limits on supported steps, and carries state that fits the status field. The caller supplies the
time (`inp.now`), so the benchmark can run steps against a simulated clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from climatik.algorithms.base import Algorithm, AlgorithmInput, AlgorithmOutput, CpuKey, Targets
from climatik.algorithms.clamp import clamp_targets
from climatik.algorithms.errors import AlgorithmError, AlgorithmFailedError
from climatik.algorithms.state import StateTooLargeError, encode_state


@dataclass(frozen=True)
class StepResult:
    """The checked outcome of one step.

    `changed` says the bounds differ from the policy's current ones. `waiting_for_inventory` lists the policy's
    GPUs whose tuner has not reported limits yet (they get no target); `out_of_scope` lists GPUs and CPUs the
    algorithm targeted although the policy does not use them (dropped).
    """

    algorithm: str
    targets: Targets
    state: dict[str, Any]
    state_text: str
    reason: str
    changed: bool
    waiting_for_inventory: tuple[str, ...] = ()
    out_of_scope: tuple[str, ...] = ()


def run_step(algorithm: Algorithm, inp: AlgorithmInput) -> StepResult:
    """Run one step of `algorithm` on `inp`; raises AlgorithmFailedError when the algorithm misbehaves."""
    name = getattr(algorithm, "name", type(algorithm).__name__)
    try:
        output = algorithm.step(inp)
    except AlgorithmError:
        raise
    except Exception as err:
        raise AlgorithmFailedError(name, f"{type(err).__name__}: {err}") from err
    if not isinstance(output, AlgorithmOutput):
        raise AlgorithmFailedError(name, f"step returned {type(output).__name__}, not AlgorithmOutput")
    _check_values(name, output.targets)
    scoped, out_of_scope = _scope(output.targets, inp)
    clamped = clamp_targets(scoped, inp.inventory)
    try:
        state_text = encode_state(output.state)
    except StateTooLargeError as err:
        raise AlgorithmFailedError(name, str(err)) from None
    observed = {gpu.uuid for gpu in inp.observation.gpus}
    waiting = sorted(set(clamped.waiting_for_inventory) | {u for u in observed if u not in inp.inventory.gpus})
    dropped = out_of_scope + [f"{node}/cpu{cpu}" for node, cpu in clamped.cpus_without_inventory]
    return StepResult(
        algorithm=name,
        targets=clamped.targets,
        state=dict(output.state),
        state_text=state_text,
        reason=output.reason,
        changed=not clamped.targets.same_as(inp.current),
        waiting_for_inventory=tuple(waiting),
        out_of_scope=tuple(dropped),
    )


def _check_values(name: str, targets: Targets) -> None:
    for key, mhz in [*targets.gpus.items(), *targets.cpus.items()]:
        if mhz is None:
            continue
        if isinstance(mhz, bool) or not isinstance(mhz, (int, float)) or not math.isfinite(mhz) or mhz <= 0:
            raise AlgorithmFailedError(name, f"target {mhz!r} for {key} is not a positive number of MHz")


def _scope(targets: Targets, inp: AlgorithmInput) -> tuple[Targets, list[str]]:
    gpus_in_scope = {gpu.uuid for gpu in inp.observation.gpus} | set(inp.current.gpus)
    nodes = {gpu.node for gpu in inp.observation.gpus} | {node for node, _ in inp.current.cpus}
    tune_cpus = bool(inp.spec.tune_cpus)
    gpus = {uuid: mhz for uuid, mhz in targets.gpus.items() if uuid in gpus_in_scope}
    cpus: dict[CpuKey, int | None] = {}
    dropped = sorted(uuid for uuid, mhz in targets.gpus.items() if uuid not in gpus_in_scope and mhz is not None)
    for key, mhz in targets.cpus.items():
        if mhz is None or (tune_cpus and key[0] in nodes):
            cpus[key] = mhz
        else:
            dropped.append(f"{key[0]}/cpu{key[1]}")
    return Targets(gpus, cpus), dropped
