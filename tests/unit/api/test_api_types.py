"""Parsing API dicts into typed objects: defaults, derived values and clear errors for bad shapes."""

from __future__ import annotations

import pytest

from climatik.api import DecodeError, LabelSelector, PowerCappingPolicy, SelectorRequirement


def make_policy(**spec: object) -> PowerCappingPolicy:
    base = {"powerCapLimit": 1000, "selector": {"matchLabels": {"app": "llm"}}}
    return PowerCappingPolicy.from_api({"metadata": {"name": "p", "namespace": "ns"}, "spec": {**base, **spec}})


def test_threshold_defaults_to_90_percent_of_the_limit() -> None:
    assert make_policy().spec.threshold_watts == 900.0


def test_release_band_defaults_below_the_threshold_and_can_be_set() -> None:
    assert make_policy(cappingThreshold=80).spec.release_percent(default_band=5) == 75
    assert make_policy(cappingThreshold=80, releaseThreshold=70).spec.release_percent(default_band=5) == 70


def test_first_custom_algorithm_is_the_one_used() -> None:
    policy = make_policy(customAlgorithms=[{"name": "a"}, {"name": "b"}])
    assert policy.spec.algorithm is not None and policy.spec.algorithm.name == "a"
    assert make_policy().spec.algorithm is None


def test_key_is_namespace_and_name() -> None:
    assert make_policy().key == "ns/p"


def test_bad_shapes_name_the_field() -> None:
    with pytest.raises(DecodeError, match=r"spec\.powerCapLimit: expected an integer, got 'x'"):
        make_policy(powerCapLimit="x")
    with pytest.raises(DecodeError, match=r"spec\.customAlgorithms\[0\]\.parameters\.f: expected str"):
        make_policy(customAlgorithms=[{"name": "a", "parameters": {"f": 0.8}}])


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        (LabelSelector(), {"anything": "x"}, True),
        (LabelSelector(match_labels={"app": "llm"}), {"app": "llm", "tier": "a"}, True),
        (LabelSelector(match_labels={"app": "llm"}), {"app": "web"}, False),
        (LabelSelector(match_expressions=[SelectorRequirement("tier", "In", ["a", "b"])]), {"tier": "b"}, True),
        (LabelSelector(match_expressions=[SelectorRequirement("tier", "In", ["a"])]), {}, False),
        (LabelSelector(match_expressions=[SelectorRequirement("tier", "NotIn", ["a"])]), {}, True),
        (LabelSelector(match_expressions=[SelectorRequirement("tier", "NotIn", ["a"])]), {"tier": "a"}, False),
        (LabelSelector(match_expressions=[SelectorRequirement("gpu", "Exists")]), {"gpu": ""}, True),
        (LabelSelector(match_expressions=[SelectorRequirement("gpu", "DoesNotExist")]), {"gpu": ""}, False),
        (LabelSelector(match_labels={"app": "llm"},
                       match_expressions=[SelectorRequirement("exempt", "DoesNotExist")]),
         {"app": "llm", "exempt": "yes"}, False),
    ],
)
def test_label_selector_semantics(selector: LabelSelector, labels: dict[str, str], selected: bool) -> None:
    assert selector.matches(labels) is selected


def test_selector_problems_are_reported() -> None:
    selector = LabelSelector(match_expressions=[SelectorRequirement("a", "Near"), SelectorRequirement("b", "In")])
    assert selector.problems() == ["operator 'Near' is not one of In, NotIn, Exists, DoesNotExist",
                                   "operator In on key 'b' needs at least one value"]
