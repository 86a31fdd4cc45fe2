"""Plots of the control benchmark: per scenario and policy, each controller's power against the cap and its
GPUs' mean SM clock over time (one seed, the default plant, the first telemetry setting)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from climatik.sim.loop import PolicySeries, Recording, Scenario

#: Power is drawn as the mean over this window, so that 50 ms steps of bursty loads stay readable.
SMOOTH_S = 0.5


def plot_scenario(scenario: Scenario, rows: list[tuple[str, Recording]], oracle: Recording,
                  out_dir: Path) -> list[Path]:
    """One PNG per policy: a row per controller, power vs cap on the left and mean SM clock on the right."""
    written = []
    for policy in scenario.policies:
        reference = oracle.policies[policy.name]
        figure, axes = plt.subplots(len(rows), 2, figsize=(14, 1.9 * len(rows)), sharex=True, squeeze=False)
        for row, (title, recording) in enumerate(rows):
            series = recording.policies[policy.name]
            _power(axes[row][0], series, reference, title)
            _clock(axes[row][1], series, reference)
        axes[-1][0].set_xlabel("simulated time (s)")
        axes[-1][1].set_xlabel("simulated time (s)")
        figure.suptitle(f"{scenario.name}/{policy.name}: {scenario.title}")
        figure.tight_layout()
        path = out_dir / f"{scenario.name}-{policy.name}.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        written.append(path)
    return written


def _power(ax: Axes, series: PolicySeries, oracle: PolicySeries, title: str) -> None:
    ax.plot(oracle.end_s, _smooth(oracle), color="0.75", linewidth=0.8, label="oracle")
    ax.plot(series.end_s, _smooth(series), color="tab:red", linewidth=0.8, label="power")
    ax.plot(series.end_s, series.prom, color="tab:blue", linewidth=0.6, alpha=0.6, label="Prometheus")
    ax.plot(series.end_s, series.cap, color="black", linestyle="--", linewidth=0.8, label="cap")
    ax.set_ylabel("W")
    ax.set_title(title, fontsize=9, loc="left")
    ax.legend(fontsize=6, loc="lower right", ncol=4)


def _clock(ax: Axes, series: PolicySeries, oracle: PolicySeries) -> None:
    ax.plot(oracle.end_s, oracle.clock, color="0.75", linewidth=0.8, label="oracle")
    ax.plot(series.end_s, series.clock, color="tab:green", linewidth=0.8, label="mean SM clock")
    ax.set_ylabel("MHz")
    ax.legend(fontsize=6, loc="lower right", ncol=2)


def _smooth(series: PolicySeries) -> list[float]:
    out, window, energy, span = [], [], 0.0, 0.0
    for power, dt in zip(series.power, series.dt_s, strict=True):
        window.append((power, dt))
        energy, span = energy + power * dt, span + dt
        while span - window[0][1] >= SMOOTH_S - 1e-9:
            first_power, first_dt = window.pop(0)
            energy, span = energy - first_power * first_dt, span - first_dt
        out.append(energy / span)
    return out
