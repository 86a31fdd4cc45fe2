"""What the recommender remembers between reconciles, shared by its workers: each policy's last step result
and the conflicts each policy was last planned with.

Only this process's results are here. After a restart a policy has none until its first step, and plan.py
keeps the entries it holds in the meantime; its algorithm state comes back from status.recommendation.state.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from climatik.algorithms import StepResult, Targets
from climatik.recommend.plan import Conflict


class Memory:
    """Thread-safe. `lock` also serialises planning and writing, so that two workers never write specs planned
    from different results."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._results: dict[str, StepResult] = {}
        self._conflicts: dict[str, frozenset[Conflict]] = {}

    def get(self, key: str) -> StepResult | None:
        with self.lock:
            return self._results.get(key)

    def put(self, key: str, result: StepResult) -> None:
        with self.lock:
            self._results[key] = result

    def forget(self, key: str) -> None:
        """Drop the policy's result: plan.py then holds the entries it has (or drops them, if it is gone)."""
        with self.lock:
            self._results.pop(key, None)

    def targets(self) -> dict[str, Targets]:
        """Each remembered policy's targets, by key (plan.py's `outputs`)."""
        with self.lock:
            return {key: result.targets for key, result in self._results.items()}

    def swap_conflicts(self, conflicts: Sequence[Conflict], keys: Mapping[str, object]) -> set[str]:
        """Remember the conflicts of the policies in `keys` (all that exist); return those whose set changed."""
        fresh: dict[str, set[Conflict]] = {key: set() for key in keys}
        for conflict in conflicts:
            for key in (conflict.winner, conflict.loser):
                fresh.setdefault(key, set()).add(conflict)
        with self.lock:
            changed = {key for key, found in fresh.items() if self._conflicts.get(key, frozenset()) != found}
            self._conflicts = {key: frozenset(found) for key, found in fresh.items() if found}
            return changed
