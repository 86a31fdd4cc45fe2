"""Objects are decoded once per resourceVersion; a new version, a vanished object or a bad one is handled."""

from __future__ import annotations

from typing import Any

from climatik.api import PowerCappingPolicy
from climatik.api.codec import DecodedCache


def policy(name: str, version: str, limit: Any = 1000) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
            "spec": {"powerCapLimit": limit, "selector": {}}}


def test_an_unchanged_version_is_not_decoded_again() -> None:
    calls: list[str] = []

    def decode(obj: dict[str, Any]) -> PowerCappingPolicy:
        calls.append(obj["metadata"]["resourceVersion"])
        return PowerCappingPolicy.from_api(obj)

    cache = DecodedCache(decode)
    first = cache.decode_all([policy("a", "1")])
    again = cache.decode_all([policy("a", "1")])
    assert first[0] is again[0] and calls == ["1"]
    newer = cache.decode_all([policy("a", "2", limit=900)])
    assert isinstance(newer[0], PowerCappingPolicy) and newer[0].spec.power_cap_limit == 900
    assert calls == ["1", "2"]


def test_undecodable_objects_come_back_as_errors_without_stopping_the_rest() -> None:
    cache = DecodedCache(PowerCappingPolicy.from_api)
    bad, good = cache.decode_all([policy("bad", "1", limit="lots"), policy("good", "1")])
    assert isinstance(bad, ValueError) and "powerCapLimit" in str(bad)
    assert isinstance(good, PowerCappingPolicy)
