"""Faults injected into the whole loop with real processes: what the policy's status, its Events and the GPUs say
while a controller, Prometheus or a tuner is gone.

One loop for the module (two simulated nodes, a busy inference service on two GPUs of each), one policy over the
service. The tests run in order, each leaving the loop healthy for the next: a monitor restart and a Prometheus
stall while the clocks-only loop caps (the flag and the condition must never read "released"), a tuner killed
while the spec changes (the policy must name it within 30 s), and a policy deleted while a tuner is down (the
finalizer waits up to 60 s, then the returning tuner restores its node's defaults).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from loopenv import LoopConfig, LoopEnv, running

from climatik.kube.client import POLICIES
from climatik.sim.physics import PhaseMix
from climatik.sim.server import GpuInfo
from climatik.sim.traces import ConstantParams

pytestmark = pytest.mark.e2e

POLICY = "faults"
NAMESPACE = "default"
KEY = f"{NAMESPACE}/{POLICY}"
DOWN_NODE = "gpu-node-2"
BUSY = ConstantParams(utilisation=0.9, mix=PhaseMix.inference(0.3))
CLOCKS_ONLY, NODE_BUDGETS = "ClocksOnly", "NodeBudgets"
# The bounds the controllers promise (recommend's Acknowledgements) and the slack a loaded 2-core machine needs.
TUNER_BOUND_S, RELEASE_BOUND_S, SLACK_S = 30.0, 60.0, 20.0

T = TypeVar("T")


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopEnv]:
    config = LoopConfig(workdir=tmp_path_factory.mktemp("faults"), nodes=2, gpus_per_node=4,
                        service_gpus_per_node=2, service_workload=BUSY)
    with running(config) as env:
        yield env


@pytest.fixture(scope="module")
def uncapped(loop: LoopEnv) -> float:
    """The service's power before any policy (its GPUs' one-second averages, once they ran a full second)."""
    time.sleep(max(0.0, loop.started + 3 - time.monotonic()))
    return poll(loop, lambda: loop.read(POLICY).power or None, timeout=30, what="the service's power")


# -- looking at the loop --------------------------------------------------------------------------------------

def poll(loop: LoopEnv, look: Callable[[], T | None], *, timeout: float, what: str | Callable[[], str],
         every: float = 0.5) -> T:
    """The first non-None answer of `look`, asked every `every` seconds for up to `timeout`; `what` describes
    what was awaited (a callable: asked on failure, to tell the last state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert loop.processes is not None
        loop.processes.check()
        answer = look()
        if answer is not None:
            return answer
        time.sleep(every)
    said = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {said}; logs in {loop.config.workdir}")


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def service_gpus(loop: LoopEnv, node: str) -> list[GpuInfo]:
    return [gpu for gpu in loop.gpus(node) if gpu.uuid in loop.service_gpus[node]]


def capped(gpu: GpuInfo) -> bool:
    """Held below its defaults by a locked clock or a lowered power limit."""
    return gpu.locked_clock_mhz is not None or gpu.power_limit_w < gpu.default_power_limit_w


def at_defaults(gpu: GpuInfo) -> bool:
    return gpu.locked_clock_mhz is None and gpu.power_limit_w == gpu.default_power_limit_w


def event_counts(loop: LoopEnv, *reasons: str) -> Counter[str]:
    """How often each reason was recorded about the policy (repeats are folded into one Event's count)."""
    counts: Counter[str] = Counter(dict.fromkeys(reasons, 0))
    for event in loop.events(POLICY, NAMESPACE):
        if event.get("reason") in reasons:
            counts[event["reason"]] += int(event.get("count") or 1)
    return counts


def warnings_about(loop: LoopEnv, reason: str) -> list[str]:
    return [str(e.get("message")) for e in loop.events(POLICY, NAMESPACE)
            if e.get("reason") == reason and e.get("type") == "Warning"]


def apply(loop: LoopEnv, cap: int, enforcement: str) -> int:
    """Apply the policy; its generation. Its release level is far under its threshold, so that once capping is
    required it stays required while the loop holds the service at the threshold: a fault that made the monitor
    say "released" would show, whatever the path the clocks took to get there."""
    loop.apply({"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
                "metadata": {"name": POLICY, "namespace": NAMESPACE},
                "spec": {"powerCapLimit": cap, "selector": {"matchLabels": {"app": "llm-inference"}},
                         "releaseThreshold": 50, "enforcement": enforcement}})
    policy = loop.get(POLICIES, POLICY, NAMESPACE)
    assert policy is not None
    return int(policy["metadata"]["generation"])


def capping(loop: LoopEnv, cap: int, enforcement: str, *, hold: float = 5.0) -> None:
    """The policy applied and every service GPU held below its defaults for `hold` seconds, with (clocks only)
    cappingActionRequired true: the loop in the state a fault should not disturb."""
    apply(loop, cap, enforcement)
    since: list[float] = []
    last: list[Look] = []

    def held() -> bool | None:
        status = loop.policy_status(POLICY)
        last[:] = [look(loop, time.monotonic())]
        ok = all(capped(g) for node in loop.node_names for g in service_gpus(loop, node)) and (
            enforcement != CLOCKS_ONLY or status.get("cappingActionRequired") is True) and condition(
            status, "Actuated").get("status") == "True"
        if not ok:
            since.clear()
            return None
        since.append(time.monotonic())
        return True if since[-1] - since[0] >= hold else None

    poll(loop, held, timeout=180,
         what=lambda: f"the service capped under {cap} W ({enforcement}); last {last} {loop.policy_status(POLICY)}")


@dataclass(frozen=True)
class Look:
    """One look at the policy and the service's GPUs."""

    t: float
    flag: bool | None
    capping_required: tuple[str | None, str | None]
    gpus: tuple[tuple[str, int | None, float], ...]  # uuid, locked clock, power limit

    def __str__(self) -> str:
        return f"t={self.t:.1f} flag={self.flag} CappingRequired={self.capping_required} gpus={self.gpus}"


def look(loop: LoopEnv, since: float) -> Look:
    status = loop.policy_status(POLICY)
    required = condition(status, "CappingRequired")
    gpus = tuple((g.uuid[-4:], g.locked_clock_mhz, g.power_limit_w)
                 for node in loop.node_names for g in service_gpus(loop, node))
    return Look(time.monotonic() - since, status.get("cappingActionRequired"),
                (required.get("status"), required.get("reason")), gpus)


def trace(looks: list[Look]) -> str:
    return "\n".join(str(x) for x in looks[-40:])


# -- the faults, in order -------------------------------------------------------------------------------------

def test_a_restarted_monitor_keeps_capping_required_and_records_no_release(loop: LoopEnv, uncapped: float) -> None:
    assert loop.processes is not None
    capping(loop, int(uncapped * 0.8), CLOCKS_ONLY)
    before = event_counts(loop, "CappingReleased", "MetricsLost")
    restarts = loop.processes.restarts()["monitor"]

    killed = time.monotonic()
    loop.processes.kill("monitor")
    looks: list[Look] = []
    judged_at = None
    # Through the restart, and on until the new monitor has judged the policy for 10 s.
    while judged_at is None or time.monotonic() - judged_at < 10:
        assert time.monotonic() - killed < 90, f"the restarted monitor never judged the policy\n{trace(looks)}"
        looks.append(look(loop, killed))
        verdict = loop.processes.metric("monitor", "climatik_monitor_policy_capping", policy=KEY)
        if verdict is not None and judged_at is None:
            judged_at = time.monotonic()
            assert verdict == 1, f"the restarted monitor's first verdict is 'not required'\n{trace(looks)}"
        time.sleep(0.25)

    print(f"\nmonitor killed: its successor judged the policy {judged_at - killed:.1f} s later; "
          f"{len(looks)} looks, flags seen {sorted({str(x.flag) for x in looks})}")
    assert loop.processes.restarts()["monitor"] == restarts + 1
    assert all(x.flag is True for x in looks), f"cappingActionRequired left true\n{trace(looks)}"
    assert all(locked is not None for x in looks for _, locked, _ in x.gpus), f"a clock uncapped\n{trace(looks)}"
    assert event_counts(loop, "CappingReleased", "MetricsLost") == before


def test_a_stalled_prometheus_makes_capping_unknown_never_released(loop: LoopEnv, uncapped: float) -> None:
    capping(loop, int(uncapped * 0.8), CLOCKS_ONLY)
    released_before = event_counts(loop, "CappingReleased")
    start = look(loop, time.monotonic())
    locks = {uuid: locked for uuid, locked, _ in start.gpus}
    looks: list[Look] = []

    stalled = time.monotonic()
    with loop.prometheus_stalled():
        while time.monotonic() - stalled < 30:
            looks.append(look(loop, stalled))
            time.sleep(0.5)
    resumed = time.monotonic()

    def decided() -> Look | None:
        looks.append(look(loop, stalled))
        return looks[-1] if looks[-1].capping_required[0] == "True" else None

    back = poll(loop, decided, timeout=90, what="CappingRequired True again after the stall")

    unknown = [x.t for x in looks if x.capping_required == ("Unknown", "NoFreshData")]
    print(f"\nPrometheus stalled 30 s: CappingRequired Unknown from {min(unknown, default=-1):.1f} s to "
          f"{max(unknown, default=-1):.1f} s, True again {back.t:.1f} s after the stall began")
    assert all(x.flag is True for x in looks), f"cappingActionRequired left true\n{trace(looks)}"
    assert ("Unknown", "NoFreshData") in {x.capping_required for x in looks if x.t < resumed - stalled}, (
        f"CappingRequired never went Unknown during the stall\n{trace(looks)}")
    raised = [(x.t, uuid, locked) for x in looks if x.t < resumed - stalled for uuid, locked, _ in x.gpus
              if locked is None or locked > (locks[uuid] or 0)]
    assert not raised, f"clocks went up during the stall (from {locks}): {raised}"
    assert back.flag is True
    assert event_counts(loop, "CappingReleased") == released_before


def test_a_dead_tuner_is_named_within_the_bound_and_recovers(loop: LoopEnv, uncapped: float) -> None:
    assert loop.processes is not None
    capping(loop, int(uncapped * 0.8), CLOCKS_ONLY)
    loop.processes.kill(f"tune-{DOWN_NODE}", keep_down=True)
    # New targets for every node (node budgets, a lower cap): one node's tuner can no longer acknowledge them.
    generation = apply(loop, int(uncapped * 0.7), NODE_BUDGETS)
    changed = time.monotonic()
    said: list[tuple[float, int, str | None, str | None, Any]] = []

    def named() -> dict[str, Any] | None:
        status = loop.policy_status(POLICY)
        actuated = condition(status, "Actuated")
        said.append((time.monotonic() - changed, actuated.get("observedGeneration", 0), actuated.get("status"),
                     actuated.get("reason"), (status.get("recommendation") or {}).get("applied")))
        if said[-1][1] >= generation:
            assert actuated.get("status") != "True", f"Actuated True with a tuner down: {said[-5:]}"
            assert said[-1][4] is not True, f"recommendation.applied with a tuner down: {said[-5:]}"
        return actuated if actuated.get("reason") == "TunerNotResponding" else None

    actuated = poll(loop, named, timeout=TUNER_BOUND_S + SLACK_S, what="Actuated TunerNotResponding")
    took = time.monotonic() - changed
    print(f"\ntuner of {DOWN_NODE} down: Actuated TunerNotResponding {took:.1f} s after the spec changed")
    assert took >= TUNER_BOUND_S - 1, f"called late before the bound: {said[-5:]}"
    judged = [t for t, seen, *_ in said if seen >= generation]
    assert judged and judged[0] < 10, f"the new spec was judged only at {judged[:1]} s: {said[:5]}"
    assert DOWN_NODE in actuated["message"] and "gpu-node-1" not in actuated["message"], actuated["message"]
    assert actuated["status"] == "False"
    assert any(DOWN_NODE in message for message in warnings_about(loop, "TunerNotResponding"))

    loop.processes.revive(f"tune-{DOWN_NODE}")

    def recovered() -> bool | None:
        status = loop.policy_status(POLICY)
        actuated = condition(status, "Actuated")
        applied = (status.get("recommendation") or {}).get("applied")
        return True if actuated.get("status") == "True" and applied is True else None

    poll(loop, recovered, timeout=60, what="Actuated True once the tuner is back")
    assert loop.node_frequencies_status(DOWN_NODE).get("observedGeneration") is not None


def test_deleting_a_policy_with_a_tuner_down_waits_then_the_tuner_restores_defaults_on_return(
        loop: LoopEnv, uncapped: float) -> None:
    assert loop.processes is not None and loop.client is not None
    capping(loop, int(uncapped * 0.7), NODE_BUDGETS)
    loop.processes.kill(f"tune-{DOWN_NODE}", keep_down=True)
    assert any(capped(g) for g in service_gpus(loop, DOWN_NODE)), "nothing capped on the node to begin with"

    loop.client.delete(POLICIES, POLICY, namespace=NAMESPACE)
    deleted = time.monotonic()
    releasing: list[str] = []

    def gone() -> bool | None:
        policy = loop.get(POLICIES, POLICY, NAMESPACE)
        if policy is None:
            return True
        actuated = condition(policy.get("status") or {}, "Actuated")
        if actuated.get("reason") == "Releasing":
            releasing.append(actuated["message"])
        return None

    poll(loop, gone, timeout=RELEASE_BOUND_S + SLACK_S, what="the deleted policy to go")
    took = time.monotonic() - deleted
    # The live node's tuner acknowledges the removal within moments: from then on only the down node is named.
    assert releasing and all(DOWN_NODE in m for m in releasing), releasing
    assert "gpu-node-1" not in releasing[-1], releasing
    assert took >= RELEASE_BOUND_S - 5, f"the finalizer let go after {took:.0f} s, before the bound"
    assert any(DOWN_NODE in message for message in warnings_about(loop, "NodesStillCapped")), loop.events(POLICY)
    assert all(at_defaults(g) for g in service_gpus(loop, "gpu-node-1")), service_gpus(loop, "gpu-node-1")
    assert any(capped(g) for g in service_gpus(loop, DOWN_NODE)), "the down node lost its caps without a tuner"

    loop.processes.revive(f"tune-{DOWN_NODE}")
    revived = time.monotonic()
    poll(loop, lambda: True if all(at_defaults(g) for g in service_gpus(loop, DOWN_NODE)) else None,
         timeout=60, what=f"{DOWN_NODE}'s GPUs back at their default clocks and power limits")
    print(f"\npolicy deleted with a tuner down: gone after {took:.1f} s; the returning tuner restored its GPUs "
          f"{time.monotonic() - revived:.1f} s after it started")
