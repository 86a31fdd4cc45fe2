"""The package's layers hold, and the tool that says so would notice if they did not: dependencies flow one way,
the controllers know nothing of each other, only the runtime imports `kubernetes`, and nothing that ships loads
the simulator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the project's contracts, on the `climatik` package found under `root`."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(REPO / "setup.cfg")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_a_controller_importing_the_simulator_breaks_the_layers(tmp_path: Path) -> None:
    shutil.copytree(REPO / "climatik", tmp_path / "climatik", ignore=shutil.ignore_patterns("__pycache__"))
    core = tmp_path / "climatik" / "monitor" / "core.py"
    core.write_text(core.read_text() + "\nfrom climatik.sim import physics  # noqa: E402\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0
    assert "2 kept, 1 broken" in result.stdout
    assert "climatik.monitor is not allowed to import climatik.sim" in result.stdout
    assert "climatik.monitor.core -> climatik.sim.physics" in result.stdout


def test_the_algorithms_may_not_talk_to_kubernetes(tmp_path: Path) -> None:
    shutil.copytree(REPO / "climatik", tmp_path / "climatik", ignore=shutil.ignore_patterns("__pycache__"))
    base = tmp_path / "climatik" / "algorithms" / "base.py"
    base.write_text(base.read_text() + "\nimport kubernetes  # noqa: E402\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0
    assert "climatik.algorithms is not allowed to import kubernetes" in result.stdout
    assert "climatik.algorithms.base -> kubernetes" in result.stdout


def test_the_command_line_loads_no_simulator_module() -> None:
    program = "import sys, climatik.cli; print(sorted(m for m in sys.modules if m.startswith('climatik')))"
    loaded = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                            check=True).stdout
    assert "climatik.monitor.app" in loaded and "climatik.tune.backends.sim" in loaded
    assert "climatik.sim" not in loaded.replace("climatik.tune.backends.sim", "")
