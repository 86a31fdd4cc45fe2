"""Jittered exponential back-off that forgets past failures after a healthy period (as client-go's
jittered back-off manager does for reflectors)."""

from __future__ import annotations

import random

from climatik.clock import Clock


class Backoff:
    """Delays of `initial * factor**n`, capped at `cap`, each stretched by up to `jitter` (a fraction).

    `n` counts the failures since the last `reset()`; it also restarts from zero when no delay has been asked
    for during `reset_after` seconds, so a connection that was healthy for a while starts again gently.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        initial: float = 0.8,
        cap: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        reset_after: float = 120.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or cap < initial or factor < 1 or jitter < 0:
            raise ValueError("back-off needs 0 < initial <= cap, factor >= 1 and jitter >= 0")
        self._clock = clock
        self._initial = initial
        self._cap = cap
        self._factor = factor
        self._jitter = jitter
        self._reset_after = reset_after
        self._rng = rng or random.Random()
        self._failures = 0
        self._last: float | None = None

    @property
    def failures(self) -> int:
        return self._failures

    def next_delay(self) -> float:
        """The delay to wait before the next attempt; each call counts one more failure."""
        now = self._clock.now()
        if self._last is not None and now - self._last > self._reset_after:
            self._failures = 0
        self._last = now
        base = min(self._cap, self._initial * self._factor**self._failures)
        self._failures += 1
        return base * (1.0 + self._jitter * self._rng.random())

    def reset(self) -> None:
        self._failures = 0
        self._last = None
