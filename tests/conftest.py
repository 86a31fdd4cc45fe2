"""Shared test set-up: hack/ (the test control plane and simulators) is importable from every test."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))
