"""Objects from the cache are read-only, keys round-trip, and thawed copies are free to edit."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest

from climatik.kube.store import freeze, make_key, object_key, split_key, thaw, thaw_object


def pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}, "finalizers": ["f"]},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1}}}]},
    }


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.__setitem__("spec", {}),
        lambda o: o["metadata"]["labels"].update(app="y"),
        lambda o: o["metadata"].pop("name"),
        lambda o: o["metadata"]["finalizers"].append("g"),
        lambda o: o["spec"]["containers"][0]["resources"]["limits"].clear(),
        lambda o: o["metadata"].setdefault("annotations", {}),
        lambda o: o["spec"]["containers"].sort(),
        lambda o: o["metadata"]["finalizers"].__iadd__(["g"]),
    ],
)
def test_a_frozen_object_refuses_every_change(mutate: Any) -> None:
    frozen = freeze(pod())
    with pytest.raises(TypeError, match="read-only"):
        mutate(frozen)
    assert frozen == pod()


def test_a_frozen_object_still_reads_and_serialises_like_a_dict() -> None:
    frozen = freeze(pod())
    assert isinstance(frozen, dict)
    assert frozen["metadata"]["labels"].get("app") == "x"
    assert json.loads(json.dumps(frozen)) == pod()
    assert pickle.loads(pickle.dumps(frozen)) == pod()


def test_thawed_and_deep_copied_objects_are_editable_and_do_not_touch_the_original() -> None:
    frozen = freeze(pod())
    for editable in (thaw(frozen), thaw_object(frozen), copy.deepcopy(frozen)):
        editable["metadata"]["labels"]["app"] = "changed"
        editable["metadata"]["finalizers"].append("g")
    assert frozen == pod()


def test_freezing_twice_shares_the_frozen_object() -> None:
    frozen = freeze(pod())
    assert freeze(frozen) is frozen


def test_keys_are_namespace_slash_name_or_just_name() -> None:
    assert object_key(pod()) == "ns/p"
    assert object_key({"metadata": {"name": "node-1"}}) == "node-1"
    assert split_key("ns/p") == ("ns", "p")
    assert split_key("node-1") == (None, "node-1")
    assert make_key("p", "ns") == "ns/p"
    assert make_key("node-1") == "node-1"


@pytest.mark.parametrize("key", ["/p", "ns/", "a/b/c"])
def test_malformed_keys_are_rejected(key: str) -> None:
    with pytest.raises(ValueError):
        split_key(key)


def test_an_object_without_a_name_has_no_key() -> None:
    with pytest.raises(ValueError):
        object_key({"metadata": {}})
