"""Metric profiles: defaults, overrides, and configuration mistakes caught before any query is sent."""

from __future__ import annotations

import pytest

from climatik.prom import PodKey, PodLabels, dcgm_profile, kepler_profile, profile_named
from climatik.prom.profiles import label_list
from climatik.prom.sampler import cpu_power_query, power_query, sm_clock_query


def test_dcgm_defaults_query_dcgm_exporter_metrics():
    profile = dcgm_profile()

    assert (power_query(profile), sm_clock_query(profile)) == ("DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_SM_CLOCK")
    assert cpu_power_query(profile) is None


def test_the_kepler_profile_reads_gpu_power_from_dcgm_and_adds_keplers_cpu_power():
    profile = profile_named("kepler")

    assert (power_query(profile), sm_clock_query(profile)) == ("DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_SM_CLOCK")
    assert cpu_power_query(profile) == 'kepler_pod_cpu_watts{zone=~"package.*",state!="terminated"}'
    assert profile.cpu_pod_of({"pod_name": "p", "pod_namespace": "ns"}) == PodKey("ns", "p")


def test_label_names_come_from_configuration_text():
    pairs = PodLabels.parse("exported_pod:exported_namespace, pod_name:pod_namespace")
    profile = dcgm_profile(pod_labels=pairs, uuid_labels=label_list("uuid"), power_matchers='job="dcgm"')

    assert profile.pod_of({"pod_name": "p", "pod_namespace": "ns"}) == PodKey("ns", "p")
    assert profile.pod_of({"pod": "p", "namespace": "ns"}) is None
    assert profile.uuid_of({"UUID": "GPU-x", "uuid": "GPU-y"}) == "GPU-y"
    assert power_query(profile) == 'DCGM_FI_DEV_POWER_USAGE{job="dcgm"}'
    with pytest.raises(ValueError, match="pod:namespace"):
        PodLabels.parse("pod")


def test_first_pair_with_both_labels_set_names_the_pod():
    profile = dcgm_profile()

    exported = {"exported_pod": "w", "exported_namespace": "team", "pod": "exporter", "namespace": "ops"}
    assert profile.pod_of(exported) == PodKey("team", "w")
    assert profile.pod_of({"exported_pod": "w", "pod": "p", "namespace": "ns"}) == PodKey("ns", "p")
    assert profile.pod_of({"pod": "", "namespace": ""}) is None


def test_cpu_power_can_be_added_to_either_profile():
    profile = kepler_profile().with_cpu_power("my_cpu_watts", matchers='job="k"', pod_labels=(PodLabels("p", "n"),))

    assert cpu_power_query(profile) == 'my_cpu_watts{job="k"}'
    assert profile.cpu_pod_of({"p": "a", "n": "b"}) == PodKey("b", "a")


@pytest.mark.parametrize(
    "overrides",
    [
        {"power_metric": "DCGM-POWER"},
        {"power_metric": ""},
        {"sm_clock_metric": "1clock"},
        {"uuid_labels": ("UUID ",)},
        {"uuid_labels": ()},
        {"pod_labels": ()},
        {"pod_labels": (PodLabels("pod", "name-space"),)},
    ],
)
def test_names_prometheus_cannot_hold_are_refused(overrides):
    with pytest.raises(ValueError):
        dcgm_profile(**overrides)


def test_an_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="dcgm, kepler"):
        profile_named("nvml")
