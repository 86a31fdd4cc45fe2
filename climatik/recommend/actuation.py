"""Whether a policy's targets reached its GPUs: the tuners' acknowledgements, read from the NodeFrequencies
objects, and how long the recommender has waited for each.

A node's tuner acknowledges a spec by writing the object's generation as status.observedGeneration. "Applied"
means exactly that: every node carrying the policy's entries (or losing them) acknowledged its latest spec, and
reports those entries Applied. A node that has not acknowledged within `timeout` seconds is late: its tuner is
down or stuck, and the policy says so by name. The wait is remembered per node from the moment it started (a
spec that keeps changing does not restart it), so it is lost on a restart of the recommender, which then waits
once more before calling a node late.

A deleted policy's finalizer waits the same way, within `release_timeout`, for the tuners that held its entries
to acknowledge their removal, so that a node whose tuner is down does not quietly stay capped; past the bound
the policy goes and the Event names the nodes that stay capped until their tuner returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from climatik.api import NodeFrequencies, NodeFrequenciesSpec
from climatik.api.nodefrequencies import APPLIED
from climatik.recommend.plan import Plan

_SHOWN = 5


@dataclass(frozen=True)
class Actuation:
    """Where a policy's targets stand: `pending` nodes still applying (within the bound), `late` nodes past it,
    `not_applied` entries a tuner reports it could not apply, when to look again (None: nothing to wait for), and
    the bound (seconds) `late` was judged by."""

    pending: tuple[str, ...] = ()
    late: tuple[str, ...] = ()
    not_applied: tuple[str, ...] = ()
    recheck_after: float | None = None
    bound: float = 0.0

    @property
    def acknowledged(self) -> bool:
        return not self.pending and not self.late


class Acknowledgements:
    """Since when each node has waited for its tuner; not thread-safe (the recommender's core holds its lock)."""

    def __init__(self, *, timeout: float = 30.0, release_timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.release_timeout = release_timeout
        self._waiting: dict[str, float] = {}
        self._releases: dict[str, tuple[float, frozenset[str]]] = {}

    def judge(self, key: str, planned: Plan, nodes: Sequence[NodeFrequencies],
              writes: Mapping[str, NodeFrequenciesSpec], now: float) -> Actuation:
        """The actuation of policy `key` once `writes` (this pass's specs) are made, at UNIX time `now`."""
        by_name = {_name(node): node for node in nodes}
        involved = _nodes_with(key, planned.specs.values()) | (_nodes_with(key, (n.spec for n in nodes)) & set(writes))
        pending, late, recheck = [], [], []
        for name in sorted(involved):
            if name not in writes and _acknowledged(by_name.get(name)):
                continue
            since = self._waiting.setdefault(name, now)
            if now - since > self.timeout:
                late.append(name)
            else:
                pending.append(name)
                recheck.append(self.timeout - (now - since))
        self._forget_acknowledged(nodes, writes)
        not_applied = [f"{entry} on {_name(node)}" for node in nodes if _name(node) in involved
                       and _name(node) not in writes and _acknowledged(node) for entry in _troubled(key, node)]
        return Actuation(tuple(pending), tuple(late), tuple(not_applied),
                         max(0.5, min(recheck)) if recheck else None, self.timeout)

    def late(self, now: float) -> set[str]:
        """The nodes that have waited for their tuner longer than the bound."""
        return {name for name, since in self._waiting.items() if now - since > self.timeout}

    def releasing(self, key: str, nodes: Sequence[NodeFrequencies], written: Iterable[str],
                  now: float) -> tuple[tuple[str, ...], bool]:
        """For a deleted policy whose entries were just removed (from the nodes `written`, this time or before):
        the nodes whose tuner has not acknowledged the removal yet, and whether the bound has passed."""
        started, held = self._releases.get(key, (now, frozenset()))
        held |= frozenset(written) | _nodes_with(key, (node.spec for node in nodes))
        self._releases[key] = (started, held)
        by_name = {_name(node): node for node in nodes}
        waiting = tuple(sorted(name for name in held if name in by_name and (
            key in _policies_of(by_name[name].spec) or not _acknowledged(by_name[name]))))
        return waiting, now - started > self.release_timeout

    def released(self, key: str) -> None:
        """The policy is gone: forget its release."""
        self._releases.pop(key, None)

    def _forget_acknowledged(self, nodes: Sequence[NodeFrequencies], writes: Mapping[str, NodeFrequenciesSpec]) -> None:
        for node in nodes:
            if _name(node) not in writes and _acknowledged(node):
                self._waiting.pop(_name(node), None)


def some(items: Sequence[str]) -> str:
    """The first few of `items`, and how many more."""
    shown = ", ".join(items[:_SHOWN])
    return shown if len(items) <= _SHOWN else f"{shown} and {len(items) - _SHOWN} more"


def _acknowledged(node: NodeFrequencies | None) -> bool:
    if node is None or node.status is None:
        return False
    observed, generation = node.status.observed_generation, node.metadata.generation
    return observed is not None and generation is not None and observed >= generation


def _troubled(key: str, node: NodeFrequencies) -> list[str]:
    """This policy's GPU entries the node's tuner reports as not applied."""
    mine = {entry.gpu_id for entry in node.spec.gpu_frequencies or [] if entry.policy == key}
    statuses = node.status.gpu_frequencies or [] if node.status else []
    return [f"{entry.gpu_id} {entry.status}" for entry in statuses if entry.gpu_id in mine
            and entry.status != APPLIED]


def _nodes_with(key: str, specs: Iterable[NodeFrequenciesSpec]) -> set[str]:
    return {spec.node_name for spec in specs if key in _policies_of(spec)}


def _policies_of(spec: NodeFrequenciesSpec) -> set[str | None]:
    gpus = {entry.policy for entry in spec.gpu_frequencies or []}
    return gpus | {entry.policy for entry in spec.cpu_frequencies or []}


def _name(node: NodeFrequencies) -> str:
    return node.spec.node_name or node.metadata.name
