"""Monitor cycles seen from outside: the monitor's counters polled every 100 ms, cut into cycles.

A cycle is one Prometheus sample (the `monitor-sampler` reconcile, which queries Prometheus, builds the
snapshot and queues every policy) followed by the policy reconciles it queued. Its length is the sampler's own
duration (from its histogram) plus the time from the sample's end to the last policy reconcile of the cycle.
Both ends are known to within the polling period; the two errors partly cancel.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from scrape import MonitorCounters, fetch_text, parse_monitor, served_whole


class CounterPoller:
    """Reads the monitor's counters every `period` seconds in a thread and keeps every look.

    Each look costs the monitor a rendering of what `url` asks (a few counters by name: a few milliseconds; the
    whole of /metrics: tens of milliseconds at hundreds of policies, and a tree that serves no `name[]` filter
    answers whole, which `whole` then says), so with `rest` = (reconciles per cycle, sampling interval) the
    poller rests once a cycle's reconciles are done until just before the next sample is due: the cycles' ends
    are still seen to within `period`, and the monitor is disturbed only while a cycle runs."""

    def __init__(self, url: str, *, period: float = 0.1, rest: tuple[int, float] | None = None) -> None:
        self._url = url
        self._period = period
        self._rest = rest
        self._looks: list[MonitorCounters] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counter-poller", daemon=True)
        self.errors = 0
        self.fetch_seconds: list[float] = []
        self.whole = False

    def start(self) -> CounterPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def looks(self) -> list[MonitorCounters]:
        with self._lock:
            return list(self._looks)

    def latest(self) -> MonitorCounters | None:
        with self._lock:
            return self._looks[-1] if self._looks else None

    def wait_for_samples(self, count: float, *, timeout: float, alive: Callable[[], None]) -> MonitorCounters:
        """Wait until the monitor has taken `count` samples; `alive` raises if the monitor died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive()
            latest = self.latest()
            if latest is not None and latest.samples >= count:
                return latest
            time.sleep(self._period)
        raise TimeoutError(f"the monitor did not reach {count:.0f} samples in {timeout:.0f} s")

    def _run(self) -> None:
        cycle: tuple[float, float] | None = None  # (when the cycle's sample began, reconciles before it)
        while not self._stop.is_set():
            started = time.monotonic()
            pause = self._period
            try:
                text = fetch_text(self._url)
            except OSError:
                self.errors += 1
            else:
                self.fetch_seconds.append(time.monotonic() - started)
                self.whole = self.whole or served_whole(text)
                look = parse_monitor(text, started)
                with self._lock:
                    before = self._looks[-1] if self._looks else None
                    self._looks.append(look)
                if before is not None and look.samples > before.samples:
                    cycle = ((before.at + look.at) / 2, before.reconciles)
                if self._rest is not None and cycle is not None and look.reconciles - cycle[1] >= self._rest[0]:
                    pause = max(self._period, cycle[0] + self._rest[1] - 0.5 - started)
                    cycle = None
            self._stop.wait(max(0.0, pause - (time.monotonic() - started)))


@dataclass(frozen=True)
class Cycle:
    sample_s: float
    total_s: float
    reconciles: float
    reconcile_s: float


def cut_cycles(looks: list[MonitorCounters], first: int, count: int) -> list[Cycle]:
    """Cycles `first` .. `first + count - 1` (the n-th cycle starts with the monitor's n-th sample); every look
    up to the sample that follows the last cycle must be there."""
    cycles = []
    for k in range(first, first + count):
        start = _first_index(looks, k)
        after = _first_index(looks, k + 1)
        if start < 1:
            raise ValueError(f"no look before sample {k}")
        before, last = looks[start - 1], looks[after - 1]
        sample_s = looks[start].sample_seconds - before.sample_seconds
        done = next(i for i in range(start - 1, after) if looks[i].reconciles >= last.reconciles)
        sample_end = (before.at + looks[start].at) / 2
        end = (looks[done - 1].at + looks[done].at) / 2 if done >= start else sample_end
        cycles.append(Cycle(sample_s=sample_s, total_s=sample_s + max(0.0, end - sample_end),
                            reconciles=last.reconciles - before.reconciles,
                            reconcile_s=last.reconcile_seconds - before.reconcile_seconds))
    return cycles


def sample_period(looks: list[MonitorCounters], first: int, count: int) -> float:
    """Mean seconds from one sample to the next over cycles `first` .. `first + count - 1`."""
    return (looks[_first_index(looks, first + count)].at - looks[_first_index(looks, first)].at) / count


def _first_index(looks: list[MonitorCounters], samples: int) -> int:
    for index, look in enumerate(looks):
        if look.samples >= samples:
            return index
    raise ValueError(f"no look at or after sample {samples}")


def query_seconds(first: MonitorCounters, last: MonitorCounters) -> dict[str, tuple[float, float]]:
    """Per successful query kind between two looks: (seconds per cycle, queries per cycle), a cycle being one
    sample."""
    cycles = last.samples - first.samples
    found = {}
    for query, seconds in last.query_seconds.items():
        if not query.endswith("/success") or cycles <= 0:
            continue
        count = last.query_count.get(query, 0.0) - first.query_count.get(query, 0.0)
        if count > 0:
            found[query.removesuffix("/success")] = ((seconds - first.query_seconds.get(query, 0.0)) / cycles,
                                                     count / cycles)
    return found


def summary(values: list[float]) -> tuple[float, float]:
    """(median, max)."""
    return statistics.median(values), max(values)
