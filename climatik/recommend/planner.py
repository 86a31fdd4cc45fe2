"""Re-planning every NodeFrequencies spec from the cached policies and objects and the remembered results, and
writing the specs that changed. Runs under the memory's lock: one plan and its writes at a time.

Every pass plans the whole cluster, not only the nodes of the policy being reconciled: the plan is cheap, a
pass that changes nothing writes nothing, and a spec left behind by an earlier failure is mended by the next
pass whatever triggered it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from climatik.api import PowerCappingPolicy
from climatik.api.decoded import DecodedCache
from climatik.kube.store import CacheReader
from climatik.recommend.memory import Memory
from climatik.recommend.metrics import RecommendMetrics
from climatik.recommend.nodes import NodeWriter
from climatik.recommend.plan import Plan, plan

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Planned:
    """A pass's plan, the policies it was made for (by key) and the nodes whose spec it wrote."""

    plan: Plan
    policies: dict[str, PowerCappingPolicy]
    written: tuple[str, ...]


class Planner:
    """Plans and writes. `enqueue` is told about policies (other than the one reconciled) whose conflicts
    changed, so that their Conflict condition follows without waiting for an event of their own."""

    def __init__(self, *, policies: CacheReader, writer: NodeWriter, memory: Memory,
                 enqueue: Callable[[str], None], metrics: RecommendMetrics | None = None) -> None:
        self._policies = policies
        self._writer = writer
        self._memory = memory
        self._enqueue = enqueue
        self._metrics = metrics
        # Every pass reads every policy; decoding each only when its resourceVersion moved keeps a pass cheap.
        self._decode_cache: DecodedCache[PowerCappingPolicy] = DecodedCache(PowerCappingPolicy.from_api)

    def replan(self, *, origin: str) -> Planned:
        """One pass on behalf of policy `origin`; raises when a write fails (the reconcile is retried)."""
        with self._memory.lock:
            policies = self._decoded()
            nodes = self._writer.objects()
            result = plan(policies.values(), self._memory.targets(), nodes)
            written = self._writer.write(result.changed(nodes))
            moved = self._memory.swap_conflicts(result.conflicts, policies)
        if self._metrics is not None:
            self._metrics.conflicting_gpus.set(len({c.gpu for c in result.conflicts}))
        for key in sorted(moved - {origin}):
            self._enqueue(key)
        return Planned(plan=result, policies=policies, written=tuple(written))

    def _decoded(self) -> dict[str, PowerCappingPolicy]:
        policies = {}
        for decoded in self._decode_cache.decode_all(self._policies.list()):
            if isinstance(decoded, Exception):
                # The schema makes this all but impossible; such a policy is left out like a deleted one.
                log.warning("policy_undecodable", controller="recommend", error=str(decoded))
                continue
            policies[decoded.key] = decoded
        return policies
