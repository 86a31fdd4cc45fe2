"""What a policy is told about a shared GPU: who drives it, and which part of the rule decided."""

from __future__ import annotations

from climatik.api import PowerCappingPolicy
from climatik.recommend.conflicts import conflict_report
from climatik.recommend.plan import Conflict


def a_policy(name: str, *, priority: int = 0, created: str = "2025-01-01T00:00:00Z") -> PowerCappingPolicy:
    return PowerCappingPolicy.from_api({"metadata": {"name": name, "namespace": "ml", "creationTimestamp": created},
                                        "spec": {"powerCapLimit": 1000, "selector": {}, "priority": priority}})


def test_the_loser_hears_who_drives_the_gpu_and_why() -> None:
    policies = {p.key: p for p in (a_policy("high", priority=10), a_policy("low"))}
    report = conflict_report("ml/low", [Conflict("GPU-a", "n1", winner="ml/high", loser="ml/low")], policies)

    assert report.active and report.reason == "LosesSharedGpus" and report.lost == ("GPU-a",)
    assert report.message == "GPU-a on n1 is also claimed by ml/high; ml/high drives it (higher priority: 10 over 0)"


def test_the_winner_hears_it_too_and_age_or_name_can_decide() -> None:
    policies = {p.key: p for p in (a_policy("old", created="2024-01-01T00:00:00Z"), a_policy("new"),
                                   a_policy("twin", created="2024-01-01T00:00:00Z"))}
    by_age = conflict_report("ml/old", [Conflict("GPU-a", None, winner="ml/old", loser="ml/new")], policies)
    by_name = conflict_report("ml/old", [Conflict("GPU-b", None, winner="ml/old", loser="ml/twin")], policies)

    assert by_age.reason == "WinsSharedGpus" and by_age.lost == ()
    assert "this policy drives it (older: created 2024-01-01T00:00:00Z" in by_age.message
    assert "lower namespace/name wins" in by_name.message


def test_no_shared_gpu_is_no_conflict() -> None:
    report = conflict_report("ml/a", [Conflict("GPU-a", None, winner="ml/b", loser="ml/c")], {})

    assert not report.active and report.reason == "NoSharedGpus"
