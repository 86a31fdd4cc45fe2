"""The whole loop with real processes: real API server and Prometheus, simulated GPU nodes, the three controllers.

The service's power must end under the cap, and its clocks must come back when the load falls.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopenv import LoopConfig, LoopEnv, running

from climatik.sim.physics import PhaseMix
from climatik.sim.traces import ConstantParams

pytestmark = pytest.mark.e2e

BUSY = ConstantParams(utilisation=0.9, mix=PhaseMix.inference(0.3))


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopEnv]:
    config = LoopConfig(workdir=tmp_path_factory.mktemp("loop"), nodes=2, gpus_per_node=4,
                        service_gpus_per_node=2, service_workload=BUSY)
    with running(config) as env:
        yield env


def policy(name: str, cap: int, algorithm: list[dict[str, object]] | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"powerCapLimit": cap, "selector": {"matchLabels": {"app": "llm-inference"}}}
    if algorithm:
        spec["customAlgorithms"] = algorithm
    return {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def wait_until(env: LoopEnv, name: str, predicate, *, timeout: float, what: str, hold: float = 0.0):  # type: ignore[no-untyped-def]
    """Poll the loop until `predicate(reading)` holds for `hold` seconds; the last reading."""
    deadline = time.monotonic() + timeout
    since = None
    history = []
    while time.monotonic() < deadline:
        assert env.processes is not None
        env.processes.check()
        reading = env.read(name)
        history.append(reading)
        if predicate(reading):
            since = since if since is not None else time.monotonic()
            if time.monotonic() - since >= hold:
                return reading
        else:
            since = None
        time.sleep(0.5)
    tail = "\n".join(f"t={r.t:.1f} power={r.power:.0f} status={r.reported_power} capping={r.capping} "
                     f"clocks={r.clocks} caps={r.caps}" for r in history[-12:])
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}\nlogs: {env.config.workdir}")


def test_power_ends_under_the_cap_and_clocks_come_back_when_load_falls(loop: LoopEnv) -> None:
    uncapped = wait_until(loop, "e2e", lambda r: r.power > 0, timeout=30, what="power readings").power
    cap = int(uncapped * 0.8)
    loop.apply_policy(policy("e2e", cap))
    capped = wait_until(loop, "e2e", lambda r: r.power <= cap and r.capping is not None, timeout=120,
                        what=f"power under the {cap} W cap", hold=5.0)
    assert any(c is not None for c in capped.caps), "power fell without any clock cap"
    loop.set_service_load(0.15, {"decode": 1.0})
    released = wait_until(loop, "e2e", lambda r: all(c is None for c in r.caps), timeout=180,
                          what="clock caps released after the load fell")
    assert released.power < cap
    assert max(released.clocks) == 1980


def test_stopping_the_tuners_restores_default_clocks(loop: LoopEnv, tmp_path: Path) -> None:
    cap = int(wait_until(loop, "e2e", lambda r: r.power > 0, timeout=30, what="power").power * 0.5)
    loop.set_service_load(0.9, {"prefill": 0.3, "decode": 0.7})
    loop.apply_policy(policy("e2e", max(cap, 50)))
    wait_until(loop, "e2e", lambda r: any(c is not None for c in r.caps), timeout=120, what="clock caps set")
    assert loop.processes is not None
    codes = loop.processes.stop()
    assert all(code == 0 for code in codes.values()), codes
    assert all(gpu.locked_clock_mhz is None for node in loop.node_names for gpu in loop.gpus(node))
