"""The control benchmark's own code on a tiny matrix: it runs, measures every row against its baselines, and
prints a verdict for every target, whatever the loop it finds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "hack" / "bench" / "control"))

import bench_control
from cases import INFEASIBLE, TELEMETRY, Config, Job, run_job, two_level_available

from climatik.sim.loop import Plant


def test_a_tiny_matrix_prints_tables_and_a_verdict_for_every_target(capsys: pytest.CaptureFixture[str]) -> None:
    code = bench_control.main(["--seeds", "0", "--plants", "default,noise", "--telemetry", "1s", "--scenarios",
                               "step", "--duration", "30", "--jobs", "1", "--no-plots", "--no-tuned"])
    out = capsys.readouterr().out
    assert code == 0
    assert "== baselines | plant: as modelled" in out
    assert "== telemetry 1s" in out and "plant: readings 1 % noise" in out
    assert "closed-loop, cluster loop:" in out
    assert ("PASS" in out) or ("MISS" in out)
    assert "ERROR" not in out
    assert ("two-level" in out) == two_level_available()


def test_the_infeasible_scenario_is_measured_against_its_uncapped_run() -> None:
    job = Job(INFEASIBLE, 0, Plant(), config=Config("closed-loop, cluster loop", "closed-loop"),
              telemetry=TELEMETRY[0], duration_s=40.0)
    marks = run_job(job).policies["train"].infeasible
    assert marks is not None
    assert marks.to_floor_s is not None and marks.to_floor_s < 10.0
    assert marks.recovery_s is None  # the cap is restored only at 70 s
