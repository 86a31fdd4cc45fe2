"""Which series a cycle reads: namespaces whole or pods by name, as selectors that find the workload under every
pod label pair, in queries of bounded size."""

from __future__ import annotations

import re

import pytest

from climatik.prom import PodKey, PodLabels, dcgm_profile
from climatik.prom.scope import EVERYTHING, MAX_CHUNK_BYTES, MAX_CHUNKS, Scope, alternation, selector_groups

POWER = "DCGM_FI_DEV_POWER_USAGE"
PAIRS = dcgm_profile().pod_labels


def test_a_few_selected_pods_are_read_by_name_and_a_crowd_by_namespace() -> None:
    scope = Scope.of({"ml": {"train-0", "train-1"}, "web": {f"web-{i}" for i in range(30)}},
                     running={"ml": 100, "web": 40})

    assert scope.namespaces == {"ml": {"train-0", "train-1"}, "web": None}
    assert scope.covers(PodKey("ml", "train-1")) and scope.covers(PodKey("web", "anything"))
    assert not scope.covers(PodKey("ml", "train-9")) and not scope.covers(PodKey("batch", "train-0"))


def test_every_pod_label_pair_gets_its_selector_so_any_scrape_shape_is_found() -> None:
    [group] = selector_groups(POWER, 'job="dcgm"', PAIRS, Scope({"ml": frozenset({"train-0"}), "web": None}))

    assert group.selectors() == [
        f'{POWER}{{job="dcgm",exported_namespace="web"}}',
        f'{POWER}{{job="dcgm",exported_namespace="ml",exported_pod="train-0"}}',
        f'{POWER}{{job="dcgm",namespace="web"}}',
        f'{POWER}{{job="dcgm",namespace="ml",pod="train-0"}}',
        f'{POWER}{{job="dcgm",pod_namespace="web"}}',
        f'{POWER}{{job="dcgm",pod_namespace="ml",pod_name="train-0"}}',
    ]


def test_extra_matchers_narrow_every_selector() -> None:
    [group] = selector_groups(POWER, "", (PodLabels("pod", "namespace"),), Scope({"ml": None}))

    assert group.selectors('instance="10.0.0.1:9400"') == [f'{POWER}{{instance="10.0.0.1:9400",namespace="ml"}}']


def test_everything_reads_the_bare_metric_and_an_empty_scope_reads_nothing() -> None:
    assert [g.selectors() for g in selector_groups(POWER, "", PAIRS, EVERYTHING)] == [[POWER]]
    assert selector_groups(POWER, "", PAIRS, Scope()) == []
    assert Scope().empty and not EVERYTHING.empty


def test_names_are_matched_literally() -> None:
    pattern = alternation(["a.b", "a-b"])

    assert pattern == "a-b|a\\\\.b"
    # What Prometheus sees once the PromQL string is unquoted: a dot that matches only a dot.
    regex = pattern.replace("\\\\", "\\")
    assert re.fullmatch(regex, "a.b") and not re.fullmatch(regex, "axb")


def test_many_names_are_split_into_queries_of_bounded_size() -> None:
    names = {f"svc-{i // 40}-{i % 40}" for i in range(2_000)}
    scope = Scope.of({"big": names}, running={"big": 80_000})

    groups = selector_groups(POWER, "", (PodLabels("pod", "namespace"),), scope)

    assert scope.namespaces["big"] == names
    assert 1 < len(groups) <= MAX_CHUNKS
    read = set()
    for group in groups:
        [one] = group.selectors()
        assert len(one) < MAX_CHUNK_BYTES + 200
        read |= set(re.search(r'pod=~"([^"]*)"', one).group(1).split("|"))  # type: ignore[union-attr]
    assert read == names


def test_names_too_many_for_the_query_budget_read_their_namespace_whole() -> None:
    names = {f"pod-with-a-long-name-{i}" for i in range(5_000)}

    scope = Scope.of({"big": names, "small": {"a"}}, running={"big": 1_000_000, "small": 100})

    assert scope.namespaces == {"big": None, "small": {"a"}}


@pytest.mark.parametrize("count", [1, 3])
def test_a_scope_of_namespaces_alone_is_one_query(count: int) -> None:
    scope = Scope.of({f"team-{i}": {"p"} for i in range(count)}, running={f"team-{i}": 1 for i in range(count)})

    [group] = selector_groups(POWER, "", (PodLabels("pod", "namespace"),), scope)

    assert len(group.selectors()) == 1
