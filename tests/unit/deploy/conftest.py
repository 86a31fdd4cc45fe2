"""The raw manifests under manifests/, read as YAML for the deployment tests (no kustomize, no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
COMPONENTS = ("monitor", "recommend", "tune")


class Manifests:
    """Every object in the component directories' YAML files, with lookups by kind and name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = [obj for path in sorted(root.glob("*/*.yaml")) if path.name != "kustomization.yaml"
                        for obj in yaml.safe_load_all(path.read_text()) if obj]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        return found

    def workload(self, component: str) -> dict[str, Any]:
        """The Deployment or DaemonSet that runs `climatik <component>`."""
        kind = "DaemonSet" if component == "tune" else "Deployment"
        return self.get(kind, f"climatik-{component}")

    def container(self, component: str) -> dict[str, Any]:
        (only,) = self.workload(component)["spec"]["template"]["spec"]["containers"]
        return only  # type: ignore[no-any-return]

    def kustomization(self, overlay: str) -> dict[str, Any]:
        return yaml.safe_load((self.root / overlay / "kustomization.yaml").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def manifests() -> Manifests:
    return Manifests(REPO / "manifests")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO

