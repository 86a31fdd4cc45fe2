"""What the recommender reports about its decision in a policy's status.recommendation."""

from __future__ import annotations

from climatik.algorithms import Targets
from climatik.api import Recommendation


def recommendation(*, algorithm: str, targets: Targets, state_text: str | None, applied: bool, changed: bool,
                   previous: Recommendation | None, now: str) -> Recommendation:
    """The status summary of one decision. `applied` is False in dry-run, in conflict or when invalid;
    `now` (RFC 3339) becomes lastChanged only when the targets changed, so a steady policy's status is stable."""
    gpu_values = set(targets.gpu_entries().values())
    cpu_values = set(targets.cpu_entries().values())
    last_changed = now if changed or previous is None else previous.last_changed
    return Recommendation(
        algorithm=algorithm,
        gpu_frequency=next(iter(gpu_values)) if len(gpu_values) == 1 else None,
        cpu_frequency=next(iter(cpu_values)) if len(cpu_values) == 1 else None,
        target_count=len(targets.gpu_entries()) + len(targets.cpu_entries()),
        applied=applied,
        last_changed=last_changed,
        state=state_text or None,
    )
