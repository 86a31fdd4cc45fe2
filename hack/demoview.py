"""What every `make demo` scenario shows besides its own figures: the live line, and the node guard cutting before
the cluster loop has seen a violation.

A node guard cuts when one of its budgets' lever (NodeFrequencies status.budgets) goes from None to PowerLimit or
ClockCap. The cluster loop has seen the violation once the monitor says so: the policy's cappingActionRequired.
A cut reported while that flag is still not true is the leaf acting on its own, in a fraction of a second, where
the cluster loop needs a scrape, a sample and a status write first.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from loopenv import LoopEnv

CUTTING = ("PowerLimit", "ClockCap")


@dataclass(frozen=True)
class GuardCut:
    """A node guard began to hold a policy's budget on a node before the policy's status said capping is needed."""

    t: float
    node: str
    policy: str  # namespace/name
    lever: str
    budget: float
    power: float | None

    def __str__(self) -> str:
        power = "" if self.power is None else f", the node's GPUs of it at {self.power:.0f} W"
        return (f"t={self.t:6.1f}s  node guard on {self.node} cuts {self.policy} to its {self.budget:.0f} W budget "
                f"with {self.lever}{power}, before the cluster loop saw the violation")


class GuardWatch:
    """Reads every node's budgets once per look and reports the guards that began to cut since the last look."""

    def __init__(self, env: LoopEnv) -> None:
        self._env = env
        self._levers: dict[tuple[str, str], str] = {}
        self.cuts: list[GuardCut] = []

    def look(self, t: float) -> list[GuardCut]:
        """The cuts that began since the previous look (also kept in `cuts`)."""
        new = []
        flags: dict[str, Any] = {}
        for node in self._env.node_names:
            for budget in self._env.node_frequencies_status(node).get("budgets") or []:
                policy, lever = str(budget.get("policy")), str(budget.get("lever") or "None")
                before = self._levers.get((node, policy), "None")
                self._levers[(node, policy)] = lever
                if lever not in CUTTING or before in CUTTING:
                    continue
                if policy not in flags:
                    namespace, _, name = policy.partition("/")
                    flags[policy] = self._env.policy_status(name, namespace).get("cappingActionRequired")
                if flags[policy] is not True:
                    new.append(GuardCut(t, node, policy, lever, float(budget.get("watts") or 0),
                                        budget.get("powerMean")))
        self.cuts += new
        return new


class LiveLine:
    """On a terminal, one line rewritten in place, with events on lines of their own; elsewhere (a log, CI) a line
    every `every` seconds and the events."""

    def __init__(self, *, every: float = 5.0) -> None:
        self._tty = sys.stdout.isatty()
        self._every = every
        self._next = 0.0
        self._pending = False

    def show(self, t: float, text: str) -> None:
        if self._tty:
            print("\r" + text, end="", flush=True)
            self._pending = True
        elif t >= self._next:
            print(text, flush=True)
            self._next = t + self._every

    def event(self, text: str) -> None:
        self.end()
        print(text, flush=True)

    def end(self) -> None:
        if self._pending:
            print(flush=True)
            self._pending = False
