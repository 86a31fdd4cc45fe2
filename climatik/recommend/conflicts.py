"""What a policy is told about GPUs it shares with other policies: the Conflict condition's reason and message.

The rule that decides who drives a shared GPU lives in plan.py; this module only explains its outcome, naming
the other policy and which part of the rule decided (priority, age, name), in a message that stays the same
while the situation does, so that the condition is not rewritten on every pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from climatik.api import PowerCappingPolicy
from climatik.recommend.plan import Conflict

LOSES = "LosesSharedGpus"
WINS = "WinsSharedGpus"
NONE = "NoSharedGpus"

_SHOWN = 5


@dataclass(frozen=True)
class ConflictReport:
    """The Conflict condition of one policy, and the GPUs it does not drive because another policy does."""

    active: bool
    reason: str
    message: str
    lost: tuple[str, ...] = ()


def conflict_report(key: str, conflicts: Sequence[Conflict],
                    policies: Mapping[str, PowerCappingPolicy]) -> ConflictReport:
    """The report for policy `key`, given the conflicts it takes part in."""
    mine = [c for c in conflicts if key in (c.winner, c.loser)]
    if not mine:
        return ConflictReport(False, NONE, "no GPU of this policy is claimed by another policy")
    lines = [_line(key, c, policies) for c in mine[:_SHOWN]]
    if len(mine) > _SHOWN:
        lines.append(f"and {len(mine) - _SHOWN} more")
    lost = tuple(sorted({c.gpu for c in mine if c.loser == key}))
    return ConflictReport(True, LOSES if lost else WINS, "; ".join(lines), lost)


def _line(key: str, conflict: Conflict, policies: Mapping[str, PowerCappingPolicy]) -> str:
    other = conflict.loser if conflict.winner == key else conflict.winner
    where = f" on {conflict.node}" if conflict.node else ""
    who = "this policy drives it" if conflict.winner == key else f"{other} drives it"
    return f"{conflict.gpu}{where} is also claimed by {other}; {who} ({_rule(conflict, policies)})"


def _rule(conflict: Conflict, policies: Mapping[str, PowerCappingPolicy]) -> str:
    """Which part of plan.py's rule decided: priority, then creation time, then namespace/name."""
    winner, loser = policies.get(conflict.winner), policies.get(conflict.loser)
    if winner is None or loser is None:
        return "ranked by priority, age and name"
    high, low = winner.spec.priority or 0, loser.spec.priority or 0
    if high != low:
        return f"higher priority: {high} over {low}"
    born, later = winner.metadata.creation_timestamp, loser.metadata.creation_timestamp
    if born and later and born != later:
        return f"older: created {born}, the other {later}"
    return "equal priority and age: the lower namespace/name wins"
