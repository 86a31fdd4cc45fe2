"""The image's install steps work: there is no container engine here, so the Dockerfile's steps run in clean
virtualenvs instead. The wheel is built from exactly what the Dockerfile copies into its build context, installed
without test or dev extras, and every subcommand the image's ENTRYPOINT serves starts far enough to print its help.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEV_ONLY = {"pytest", "pytest-mock", "ruff", "mypy", "matplotlib", "types-requests", "types-pyyaml"}


def dockerfile_instructions() -> list[list[str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    return [shlex.split(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def build_context(target: Path) -> Path:
    """Copy what the Dockerfile's COPY instructions take from the context, and nothing else."""
    target.mkdir()
    for words in dockerfile_instructions():
        if words[0] == "COPY" and not any(word.startswith("--from") for word in words):
            for source in words[1:-1]:
                path = REPO / source
                if path.is_dir():
                    shutil.copytree(path, target / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(path, target / source)
    return target


def build_tool_requirement() -> str:
    requirement: str
    (requirement,) = {match for words in dockerfile_instructions() if words[0] == "RUN"
                      for match in re.findall(r"build[<>=!~][^\s]+", " ".join(words))}
    return requirement


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run([str(arg) for arg in args], check=False, capture_output=True, text=True, timeout=300,
                            cwd=cwd, env=environment)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


def venv(path: Path) -> Path:
    run(sys.executable, "-m", "venv", path)
    return path / "bin"


def subcommands(help_text: str) -> list[str]:
    section = help_text.split("Commands:", 1)[1]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()]


def test_built_wheel_installs_without_extras_and_serves_every_subcommand(tmp_path: Path) -> None:
    context = build_context(tmp_path / "context")
    builder = venv(tmp_path / "build")
    run(builder / "pip", "install", "--quiet", build_tool_requirement())
    run(builder / "python", "-m", "build", "--wheel", "--outdir", tmp_path / "dist", ".", cwd=context)
    (wheel,) = (tmp_path / "dist").glob("climatik-*.whl")

    runtime = venv(tmp_path / "runtime")
    run(runtime / "pip", "install", "--quiet", wheel)
    installed = {package["name"].lower() for package in
                 json.loads(run(runtime / "pip", "list", "--format=json").stdout)}
    assert "climatik" in installed
    assert not installed & DEV_ONLY

    top = run(runtime / "climatik", "--help", cwd=tmp_path).stdout
    commands = subcommands(top)
    assert {"monitor", "recommend", "tune"} <= set(commands)
    for command in commands:
        shown = run(runtime / "climatik", command, "--help", cwd=tmp_path)
        assert "Usage:" in shown.stdout
