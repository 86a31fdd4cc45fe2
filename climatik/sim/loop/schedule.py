"""Events on simulated time: one-off and periodic actions, run in time order when the simulation reaches them.

The physics advances in fixed steps; an action due inside a step runs at the end of that step but is told its
own nominal time, so that timestamps (scrape times, observation times) stay exact. Actions due at the same
moment run by `order` (collect before scrape before query ...) and then in the order they were scheduled.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

#: How close to a step's end an action must be due to run in that step (float noise in summed step sizes).
_EPSILON_S = 1e-6

Action = Callable[[float], None]


@dataclass(order=True)
class _Entry:
    when_s: float
    order: int
    seq: int
    action: Action = field(compare=False)


class Schedule:
    """A time-ordered queue of actions on simulated seconds."""

    def __init__(self) -> None:
        self._queue: list[_Entry] = []
        self._seq = itertools.count()

    def at(self, when_s: float, action: Action, *, order: int = 0) -> None:
        """Run `action(when_s)` once the simulation reaches `when_s`."""
        if not math.isfinite(when_s):
            raise ValueError(f"event time must be finite, got {when_s}")
        heapq.heappush(self._queue, _Entry(when_s, order, next(self._seq), action))

    def every(self, interval_s: float, action: Action, *, phase_s: float = 0.0, order: int = 0) -> None:
        """Run `action(t)` at `phase_s`, `phase_s + interval_s`, ... for as long as the simulation runs."""
        if interval_s <= 0.0 or phase_s < 0.0:
            raise ValueError(f"need a positive interval and a phase >= 0, got {interval_s} and {phase_s}")
        counter = itertools.count()

        def tick(now_s: float) -> None:
            action(now_s)
            self.at(phase_s + next(counter) * interval_s, tick, order=order)

        # Times are phase + k * interval, never a running sum, so long runs do not drift.
        next(counter)
        self.at(phase_s, tick, order=order)

    def run_due(self, now_s: float) -> int:
        """Run every action due at or before `now_s`, in time order (new ones included); returns how many ran."""
        ran = 0
        while self._queue and self._queue[0].when_s <= now_s + _EPSILON_S:
            entry = heapq.heappop(self._queue)
            entry.action(entry.when_s)
            ran += 1
        return ran
