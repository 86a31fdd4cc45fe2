"""When the domains are split: at most once per interval while only readings move, at once when a domain is
edited, never without domains."""

from __future__ import annotations

import datetime as dt
from typing import Any

from climatik.api import PowerCappingPolicy
from climatik.api.domain import PowerDomain
from climatik.recommend.sharing import Sharing

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
LABELS = {"n1": {"rack": "r1"}}


def rack(budget: int, version: str) -> PowerDomain:
    body: dict[str, Any] = {"metadata": {"name": "rack", "resourceVersion": version, "generation": int(version)},
                            "spec": {"budget": budget, "nodeSelector": {"matchLabels": {"rack": "r1"}}}}
    return PowerDomain.from_api(body)


def later(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def test_moving_readings_are_split_at_most_once_per_interval() -> None:
    sharing = Sharing(interval=1.0)
    first, _ = sharing.update([rack(1000, "1")], LABELS, {}, [], now=NOW)
    again, wait = sharing.update([rack(1000, "1")], {"n1": {"rack": "r1", "new": "label"}}, {}, [], now=later(0.3))
    assert again is first and wait is not None and abs(wait - 0.7) < 1e-6
    fresh, wait = sharing.update([rack(1000, "1")], {"n1": {"rack": "r1", "new": "label"}}, {}, [], now=later(1.0))
    assert fresh is not first and wait is None


def test_an_edited_domain_is_split_at_once() -> None:
    sharing = Sharing(interval=1.0)
    first, _ = sharing.update([rack(1000, "1")], LABELS, {}, [], now=NOW)
    lowered, wait = sharing.update([rack(600, "2")], LABELS, {}, [], now=later(0.1))
    assert lowered is not first and wait is None
    assert lowered is not None and lowered.tree.domains["rack"].budget == 600.0


def test_nothing_is_split_without_domains() -> None:
    assert Sharing().update([], LABELS, {}, [], now=NOW) == (None, None)


def test_a_policy_newly_on_a_domains_nodes_is_split_at_once() -> None:
    policy = PowerCappingPolicy.from_api({
        "metadata": {"name": "chat", "namespace": "ml", "resourceVersion": "7"},
        "spec": {"powerCapLimit": 2000, "selector": {"matchLabels": {"app": "chat"}}},
        "status": {"nodes": [{"name": "n1", "gpus": [{"uuid": "GPU-a", "power": 300.0}]}]}})
    sharing = Sharing(interval=1.0)
    first, _ = sharing.update([rack(1000, "1")], LABELS, {}, [], now=NOW)
    joined, wait = sharing.update([rack(1000, "1")], LABELS, {"ml/chat": policy}, [], now=later(0.1))
    assert joined is not first and wait is None
    assert joined is not None and joined.takes_part("ml/chat")
