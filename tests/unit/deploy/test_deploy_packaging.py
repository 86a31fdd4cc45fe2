"""The image is built from what the package needs, runs `climatik` as a non-root user, and is tagged in one place."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path

import climatik

IMAGE = "ghcr.io/climatik-project/climatik"


def dockerfile(repo: Path) -> list[str]:
    """Dockerfile instructions, one per entry, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (repo / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def final_stage(repo: Path) -> list[str]:
    lines = dockerfile(repo)
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def copied_sources(repo: Path) -> set[str]:
    """Paths the Dockerfile copies from the build context (not from other stages)."""
    sources: set[str] = set()
    for line in dockerfile(repo):
        words = shlex.split(line)
        if words[0].upper() == "COPY" and not any(word.startswith("--from") for word in words):
            sources.update(word.rstrip("/") for word in words[1:-1] if not word.startswith("--"))
    return sources


def test_default_overlay_sets_the_image_tag_to_the_package_version(manifests) -> None:  # type: ignore[no-untyped-def]
    (image,) = manifests.kustomization("default")["images"]
    assert image == {"name": IMAGE, "newTag": climatik.__version__}


def test_image_version_label_defaults_to_the_package_version(repo: Path) -> None:
    assert f"ARG VERSION={climatik.__version__}" in final_stage(repo)
    assert any('org.opencontainers.image.version="${VERSION}"' in line for line in final_stage(repo))


def test_image_labels_name_source_version_and_licence(repo: Path) -> None:
    labels = " ".join(line for line in final_stage(repo) if line.startswith("LABEL "))
    for key in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels


def test_base_image_is_a_pinned_slim_python_of_the_supported_minor(repo: Path) -> None:
    (arg,) = [line for line in dockerfile(repo) if line.startswith("ARG PYTHON_IMAGE=")]
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-[a-z]+", arg)


def test_entrypoint_is_climatik_in_exec_form(repo: Path) -> None:
    (entrypoint,) = [line for line in final_stage(repo) if line.startswith("ENTRYPOINT ")]
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == ["climatik"]


def test_image_runs_as_the_non_root_user_the_controllers_expect(repo: Path, manifests) -> None:  # type: ignore[no-untyped-def]
    users = [line.split()[1] for line in final_stage(repo) if line.startswith("USER ")]
    uid, gid = users[-1].split(":")
    assert int(uid) != 0 and int(gid) != 0
    pod_security = manifests.workload("monitor")["spec"]["template"]["spec"]["securityContext"]
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (int(uid), int(gid))


def test_image_installs_no_test_or_dev_extras(repo: Path) -> None:
    installs = [line for line in dockerfile(repo) if "pip install" in line and "climatik" in line]
    assert installs
    assert not any(re.search(r"\[[^\]]*(test|dev|plot)", line) for line in installs)


def test_build_context_holds_every_file_the_package_build_reads(repo: Path) -> None:
    config = configparser.ConfigParser()
    config.read(repo / "setup.cfg")
    metadata = config["metadata"]
    read_by_build = {"pyproject.toml", "setup.cfg", "climatik", metadata["license_files"].strip()}
    read_by_build |= {name.strip() for name in metadata["long_description"].removeprefix("file:").split(",")}
    assert read_by_build <= copied_sources(repo)
    assert all((repo / source).exists() for source in copied_sources(repo))


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies(repo: Path) -> None:
    patterns = [line.strip() for line in (repo / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"  # an allow-list: tests, virtualenvs and caches never reach the daemon
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert allowed == copied_sources(repo)
