"""The delays between a GPU's power and the clock the controllers set in answer, as parameters.

    GPU power --1 s average--> DCGM exporter (collect every exporter_interval_s, at exporter_phase_s)
      --scrape every scrape_interval_s, at scrape_phase_s--> Prometheus
      --monitor cycle every monitor_interval_s (the control period), at monitor_phase_s--> policy status
      --monitor_latency_s (query, status write, watch event)--> recommender runs the algorithm
      --recommend_latency_s (NodeFrequencies write, watch event)--> tuner
      --apply_latency_s (NVML calls)--> locked clock requested --gpu_lag_s--> clock changed

Phases are offsets within each interval, so that the stages are not artificially aligned. The policy status
carries the sample time as lastUpdated, RFC 3339 with whole seconds, so the algorithm sees it truncated to the
second, as in a cluster. Simulated time 0 is UNIX time `epoch_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class DataPath:
    """Measurement and actuation delays of the production data path (seconds)."""

    exporter_interval_s: float = 1.0
    exporter_phase_s: float = 0.0
    scrape_interval_s: float = 1.0
    scrape_phase_s: float = 0.3
    monitor_interval_s: float = 1.0
    monitor_phase_s: float = 0.6
    monitor_latency_s: float = 0.05
    recommend_latency_s: float = 0.05
    apply_latency_s: float = 0.2
    gpu_lag_s: float = 0.03
    epoch_s: float = 1_700_000_000.0

    def __post_init__(self) -> None:
        for name in ("exporter_interval_s", "scrape_interval_s", "monitor_interval_s"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be positive")
        for name in ("exporter_phase_s", "scrape_phase_s", "monitor_phase_s", "monitor_latency_s",
                     "recommend_latency_s", "apply_latency_s", "gpu_lag_s"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must be >= 0")

    def with_period(self, monitor_interval_s: float) -> DataPath:
        """The same path with another control period (the monitor's phase kept within it)."""
        return replace(self, monitor_interval_s=monitor_interval_s,
                       monitor_phase_s=min(self.monitor_phase_s, monitor_interval_s))

    def unix(self, sim_s: float) -> float:
        """UNIX time of simulated time `sim_s`."""
        return self.epoch_s + sim_s

    def describe(self) -> str:
        """One line naming every delay, for benchmark output."""
        return (f"exporter collect {self.exporter_interval_s:g} s (phase {self.exporter_phase_s:g} s), "
                f"scrape {self.scrape_interval_s:g} s (phase {self.scrape_phase_s:g} s), "
                f"monitor period {self.monitor_interval_s:g} s (phase {self.monitor_phase_s:g} s), "
                f"monitor->recommender {self.monitor_latency_s:g} s, "
                f"recommender->tuner {self.recommend_latency_s:g} s, tuner apply {self.apply_latency_s:g} s, "
                f"GPU clock lag {self.gpu_lag_s:g} s; power is the 1 s average; lastUpdated in whole seconds")
