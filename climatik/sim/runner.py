"""Drivers that advance simulated nodes: by wall-clock time in a thread, or by simulated time at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import structlog

from climatik.clock import Clock
from climatik.sim.node import SimNode


class RealTimeRunner:
    """Steps nodes by the time that passed on `clock` since the previous tick, every `tick_s`.

    Used when real processes (controllers, Prometheus) watch the simulation. `tick()` does one round so
    tests drive it with a fake clock; `start()` loops in a daemon thread until `stop()`.
    """

    def __init__(self, nodes: Sequence[SimNode], *, clock: Clock, tick_s: float = 0.05) -> None:
        if tick_s <= 0:
            raise ValueError(f"tick_s must be positive, got {tick_s}")
        self._nodes = list(nodes)
        self._clock = clock
        self._tick_s = tick_s
        self._last_s = clock.now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = structlog.get_logger(__name__)

    def tick(self) -> float:
        """Advance every node by the clock time elapsed since the last tick; returns that time."""
        now = self._clock.now()
        elapsed = max(0.0, now - self._last_s)
        self._last_s = now
        for node in self._nodes:
            node.step(elapsed)
        return elapsed

    def start(self) -> None:
        """Tick in a daemon thread until `stop()`."""
        self._stop.clear()
        self._last_s = self._clock.now()
        self._thread = threading.Thread(target=self._loop, name="sim-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and wait for the thread to finish its round."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                # A broken trace must not silently freeze every node's clock; log it and keep time moving.
                self._log.exception("simulation_step_failed")
            self._clock.sleep(self._tick_s)


class SimulatedTimeDriver:
    """Steps nodes on simulated time only, as fast as the CPU allows; for benchmarks and tests.

    `run(duration_s, dt_s, on_step)` calls `on_step(now_s)` after every step, which is where a benchmark
    reads power and runs its controller.
    """

    def __init__(self, nodes: Sequence[SimNode]) -> None:
        self._nodes = list(nodes)
        self._now_s = min((node.now_s for node in self._nodes), default=0.0)

    @property
    def now_s(self) -> float:
        """Simulated time reached."""
        return self._now_s

    def run(self, duration_s: float, *, dt_s: float = 0.1, on_step: Callable[[float], None] | None = None) -> None:
        """Advance `duration_s` simulated seconds in steps of at most `dt_s`."""
        if dt_s <= 0:
            raise ValueError(f"dt_s must be positive, got {dt_s}")
        end = self._now_s + duration_s
        while end - self._now_s > 1e-9:
            step = min(dt_s, end - self._now_s)
            for node in self._nodes:
                node.step(step)
            self._now_s += step
            if on_step is not None:
                on_step(self._now_s)
