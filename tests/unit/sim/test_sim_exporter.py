"""The DCGM-format exporter text: exact metric names, labels, types and pod attribution."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from climatik.sim import (
    H100,
    ConstantTrace,
    ExporterOptions,
    LabelShape,
    Load,
    Phase,
    PhaseMix,
    PodRef,
    SimGpu,
    SimNode,
    render_metrics,
)
from climatik.sim.node import gpu_uuid

DEFAULT_METRICS = {
    "DCGM_FI_DEV_SM_CLOCK": "gauge",
    "DCGM_FI_DEV_MEM_CLOCK": "gauge",
    "DCGM_FI_DEV_GPU_UTIL": "gauge",
    "DCGM_FI_DEV_POWER_USAGE": "gauge",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "counter",
}
BASE_LABELS = {"gpu", "UUID", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"}
SERVING = PodRef(namespace="llm", pod="vllm-0", container="server")


def make_node(pods: list[tuple[PodRef, ...]]) -> SimNode:
    gpus = [SimGpu(profile=H100, uuid=gpu_uuid("node-a", i), index=i) for i in range(len(pods))]
    load = Load(0.5, PhaseMix.only(Phase.PREFILL))
    node = SimNode(name="node-a", gpus=gpus, traces=[ConstantTrace(load) for _ in gpus], pods=pods)
    node.step(2.0)
    return node


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    parsed = {}
    for family in text_string_to_metric_families(text):
        parsed[family.name] = [(sample.labels, sample.value) for sample in family.samples]
    return parsed


def test_text_parses_with_the_exact_names_types_and_labels() -> None:
    node = make_node([(SERVING,), ()])
    text = render_metrics("node-a", node.readings(), ExporterOptions(driver_version="550.54.15"))
    parsed = {family.name: family for family in text_string_to_metric_families(text)}
    assert {name: family.type for name, family in parsed.items()} == DEFAULT_METRICS
    for family in parsed.values():
        assert family.documentation
        for sample in family.samples:
            assert set(sample.labels) == BASE_LABELS | {"pod", "namespace", "container"}
    first = parsed["DCGM_FI_DEV_SM_CLOCK"].samples[0].labels
    assert first == {
        "gpu": "0",
        "UUID": gpu_uuid("node-a", 0),
        "device": "nvidia0",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": "node-a",
        "DCGM_FI_DRIVER_VERSION": "550.54.15",
        "container": "server",
        "namespace": "llm",
        "pod": "vllm-0",
    }


def test_energy_counter_keeps_dcgm_name_without_total_suffix() -> None:
    text = render_metrics("node-a", make_node([()]).readings(), ExporterOptions())
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter" in text
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total" not in text


def test_values_are_in_dcgm_units() -> None:
    node = make_node([()])
    parsed = families(render_metrics("node-a", node.readings(), ExporterOptions()))
    power = parsed["DCGM_FI_DEV_POWER_USAGE"][0][1]
    assert power == pytest.approx(node.readings()[0].power_w, abs=0.001)
    assert parsed["DCGM_FI_DEV_GPU_UTIL"][0][1] == 50
    assert parsed["DCGM_FI_DEV_SM_CLOCK"][0][1] == 1980
    # mJ: two seconds at the power just read.
    assert parsed["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"][0][1] == pytest.approx(2000 * power, rel=1e-3)


def test_unassigned_gpus_carry_empty_pod_labels() -> None:
    parsed = families(render_metrics("node-a", make_node([()]).readings(), ExporterOptions()))
    labels, _ = parsed["DCGM_FI_DEV_POWER_USAGE"][0]
    assert (labels["pod"], labels["namespace"], labels["container"]) == ("", "", "")


def test_time_sliced_gpu_appears_once_per_pod_with_the_same_uuid() -> None:
    other = PodRef(namespace="llm", pod="vllm-1", container="server")
    parsed = families(render_metrics("node-a", make_node([(SERVING, other)]).readings(), ExporterOptions()))
    series = parsed["DCGM_FI_DEV_POWER_USAGE"]
    assert {labels["pod"] for labels, _ in series} == {"vllm-0", "vllm-1"}
    assert len({labels["UUID"] for labels, _ in series}) == 1


def test_exported_label_shape_moves_workload_labels() -> None:
    options = ExporterOptions(label_shape=LabelShape.EXPORTED)
    parsed = families(render_metrics("node-a", make_node([(SERVING,)]).readings(), options))
    labels, _ = parsed["DCGM_FI_DEV_POWER_USAGE"][0]
    assert (labels["exported_pod"], labels["exported_namespace"], labels["exported_container"]) == (
        "vllm-0",
        "llm",
        "server",
    )
    assert labels["namespace"] == "gpu-operator"
    assert labels["pod"] != "vllm-0"


def test_optional_fields_are_off_by_default() -> None:
    readings = make_node([()]).readings()
    assert "DCGM_FI_DEV_POWER_USAGE_INSTANT" not in render_metrics("node-a", readings, ExporterOptions())
    options = ExporterOptions(include_instant_power=True, include_power_limit=True)
    parsed = families(render_metrics("node-a", readings, options))
    assert parsed["DCGM_FI_DEV_POWER_USAGE_INSTANT"][0][1] == pytest.approx(readings[0].instant_power_w, abs=0.001)
    assert parsed["DCGM_FI_DEV_POWER_MGMT_LIMIT"][0][1] == 700.0
    assert parsed["DCGM_FI_DEV_ENFORCED_POWER_LIMIT"][0][1] == 700.0


def test_label_values_are_escaped() -> None:
    odd = PodRef(namespace="ns", pod='we"ird\\pod', container="c")
    parsed = families(render_metrics("node-a", make_node([(odd,)]).readings(), ExporterOptions()))
    assert parsed["DCGM_FI_DEV_SM_CLOCK"][0][0]["pod"] == 'we"ird\\pod'
