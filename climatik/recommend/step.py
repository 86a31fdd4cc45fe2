"""One policy's step as the recommender runs it: validate, check that the data may drive a change, run the
algorithm, and classify what it did. Pure: the caller hands in the objects, the time and the last result.

The framework's fail-safe is enforced here for every algorithm, plug-ins included: when the monitor reports
MetricsAvailable=False, or when the policy's observation is missing or older than `max_observation_age`, the
algorithm is not run and the policy holds exactly the bounds it holds now. No data never raises a clock. The
one exception is a fresh observation the monitor calls incomplete (some GPUs had no reading): the algorithm
runs, but its result is kept only if it raises no bound, because lowering on part of the power is always safe
and a workload must not run uncapped over its budget just because one exporter is down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from climatik.algorithms import (
    AlgorithmError,
    AlgorithmInput,
    AlgorithmRegistry,
    StepResult,
    Targets,
    algorithm_input,
    algorithm_name,
    decode_state,
    encode_state,
    policy_targets,
    run_step,
)
from climatik.api import NodeFrequencies, PolicySpec, PowerCappingPolicy
from climatik.api.conditions import INCOMPLETE_DATA, METRICS_AVAILABLE
from climatik.api.constants import DEFAULT_RELEASE_BAND

LOWER = "lower"
RAISE = "raise"
RELEASE = "release"
HOLD = "hold"
ACTIONS = (LOWER, RAISE, RELEASE, HOLD)

#: `unsafe_reason` for an observation the monitor calls incomplete: the step runs, but may only lower bounds.
INCOMPLETE = "metrics incomplete"


@dataclass(frozen=True)
class StepSettings:
    """How the recommender steps policies: `release_band` as the monitor's; observations older than
    `max_observation_age` seconds never drive a step. A spec that changed again within `churn_window` seconds of
    its previous change is churning: until it has been left alone for `churn_quiet` seconds, steps may only lower
    bounds, so that a flapping limit cannot swing the clocks up and down. A node whose tuner has not acknowledged
    its spec within `ack_timeout` seconds is late; a deleted policy waits up to `release_timeout` seconds for the
    tuners to remove its caps. Power domains are split at most every `domain_interval` seconds. A policy's pass
    plans the nodes it touches; every `full_plan_interval` seconds (and after a new domain split) a pass plans
    every node, which mends any drift."""

    release_band: int = DEFAULT_RELEASE_BAND
    max_observation_age: float = 180.0
    churn_window: float = 10.0
    churn_quiet: float = 5.0
    ack_timeout: float = 30.0
    release_timeout: float = 60.0
    domain_interval: float = 1.0
    full_plan_interval: float = 60.0


@dataclass(frozen=True)
class Decision:
    """What one step decided for a policy.

    `output` is None when the policy is invalid or its algorithm failed: it then holds what it holds (see
    climatik.recommend.plan). `held` says why the algorithm was not run (the fail-safe), `failure` why it
    failed, `problems` what is wrong with the spec. `action` compares the new bounds with those held before.
    """

    output: StepResult | None
    action: str = HOLD
    problems: tuple[str, ...] = ()
    held: str | None = None
    failure: str | None = None
    before: Targets = field(default_factory=Targets)


def spec_problems(spec: PolicySpec, registry: AlgorithmRegistry) -> list[str]:
    """What is wrong with `spec` that the schema cannot catch (selector operators, the algorithm's name and
    parameters); [] when valid."""
    problems = spec.selector.problems()
    try:
        registry.create(spec.algorithm)
    except AlgorithmError as exc:
        problems.append(str(exc))
    return problems


def decide(policy: PowerCappingPolicy, nodes: Iterable[NodeFrequencies], *, registry: AlgorithmRegistry,
           previous: StepResult | None, now: float, settings: StepSettings, lower_only: str | None = None) -> Decision:
    """The step of `policy` at `now` (UNIX seconds), given its last result in this process (None after a start).
    With `lower_only` (why), a result that raises any bound is not kept: the policy holds what it holds."""
    node_list = list(nodes)
    problems = spec_problems(policy.spec, registry)
    if problems:
        return Decision(output=None, problems=tuple(problems), before=policy_targets(policy.key, node_list))
    name = algorithm_name(policy.spec.algorithm)
    state, state_text = _state(policy, previous)
    inp = algorithm_input(policy, node_list, state=state, now=now,
                          current=previous.targets if previous is not None else None,
                          release_band=settings.release_band)
    unsafe = unsafe_reason(policy, inp, settings.max_observation_age)
    if unsafe is not None and unsafe != INCOMPLETE:
        return Decision(output=_hold(name, inp, state_text, unsafe), held=unsafe, before=inp.current)
    try:
        algorithm = registry.create(policy.spec.algorithm)
        result = run_step(algorithm, inp)
    except AlgorithmError as err:
        return Decision(output=None, failure=str(err), before=inp.current)
    if unsafe == INCOMPLETE:
        lower_only = "metrics incomplete"
    if lower_only is not None and raises(inp.current, result.targets):
        held = f"{lower_only}: only lowering is allowed"
        return Decision(output=_hold(name, inp, state_text, held), held=held, before=inp.current)
    if result.waiting_for_inventory and not result.changed:
        # The step could not act on GPUs whose tuner has not reported yet; forgetting that it saw this
        # observation lets the inventory's arrival (which re-queues the policy) act on it at once.
        result = replace(result, state=dict(state), state_text=state_text)
    return Decision(output=result, action=classify(inp.current, result.targets), before=inp.current)


def unsafe_reason(policy: PowerCappingPolicy, inp: AlgorithmInput, max_age: float) -> str | None:
    """Why the policy's data may not drive a change now (a stable text, fit for a condition), or None."""
    at = inp.observation.at
    if at is None or inp.observation.power is None:
        return "no power observation yet"
    if inp.now - at > max_age:
        return f"the last observation is older than {max_age:.0f} s"
    for condition in (policy.status.conditions or []) if policy.status else []:
        if condition.type == METRICS_AVAILABLE and condition.status == "False":
            return INCOMPLETE if condition.reason == INCOMPLETE_DATA else f"metrics unavailable ({condition.reason})"
    return None


def raises(before: Targets, after: Targets) -> bool:
    """Whether `after` lifts or drops any bound of `before`."""
    old, new = _bounds(before), _bounds(after)
    return any(key not in new or new[key] > mhz for key, mhz in old.items())


def classify(before: Targets, after: Targets) -> str:
    """lower: some bound is new or lower; release: every bound is gone; raise: some bound is higher or gone."""
    old, new = _bounds(before), _bounds(after)
    if any(key not in old or mhz < old[key] for key, mhz in new.items()):
        return LOWER
    if any(key not in new or new[key] > mhz for key, mhz in old.items()):
        return RAISE if new else RELEASE
    return HOLD


def _bounds(targets: Targets) -> dict[str, int]:
    gpus = {f"gpu/{uuid}": mhz for uuid, mhz in targets.gpu_entries().items()}
    return {**gpus, **{f"cpu/{node}/{cpu}": mhz for (node, cpu), mhz in targets.cpu_entries().items()}}


def _state(policy: PowerCappingPolicy, previous: StepResult | None) -> tuple[Mapping[str, Any], str]:
    """The algorithm's state: this process's last one, else what the status persisted (a restart resumes)."""
    if previous is not None:
        return previous.state, previous.state_text
    text = policy.status.recommendation.state if policy.status and policy.status.recommendation else None
    state = decode_state(text)
    return state, _encoded(state)


def _encoded(state: Mapping[str, Any]) -> str:
    try:
        return encode_state(state)
    except ValueError:
        return ""


def _hold(name: str, inp: AlgorithmInput, state_text: str, reason: str) -> StepResult:
    observed = {gpu.uuid for gpu in inp.observation.gpus}
    return StepResult(algorithm=name, targets=inp.current, state=dict(inp.state), state_text=state_text,
                      reason=f"holding: {reason}", changed=False,
                      waiting_for_inventory=tuple(sorted(observed - set(inp.inventory.gpus))))
