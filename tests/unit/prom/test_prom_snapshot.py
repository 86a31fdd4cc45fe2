"""From DCGM and Kepler series (served by a stub Prometheus) to per-GPU readings attributed to pods."""

from __future__ import annotations

import math

import pytest

from climatik.prom import (
    GpuSampler,
    GpuSnapshot,
    PodKey,
    PodLabels,
    ProblemKind,
    PromNoDataError,
    dcgm_profile,
    kepler_profile,
)

POWER = "DCGM_FI_DEV_POWER_USAGE"
CLOCK = "DCGM_FI_DEV_SM_CLOCK"
TRAIN = PodKey("ml", "train-0")
SERVE = PodKey("ml", "serve-0")


def gpu(uuid: str, index: str = "0", pod: PodKey | None = None, **extra: str) -> dict[str, str]:
    """Labels dcgm-exporter puts on a series, as Prometheus stores them with honor_labels (empty ones absent)."""
    labels = {"UUID": uuid, "gpu": index, "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "node-a"}
    labels |= {"instance": "10.0.0.1:9400", "job": "dcgm-exporter"}
    if pod is not None:
        labels |= {"pod": pod.name, "namespace": pod.namespace, "container": "main"}
    return labels | extra


@pytest.fixture
def sampler(client):
    return GpuSampler(client, dcgm_profile(), max_sample_age_s=30)


def test_a_few_queries_serve_every_pod_and_each_reading_keeps_its_scrape_time(prom, sampler):
    prom.answer_series(POWER, [(gpu("GPU-a", "0", TRAIN), 310.5), (gpu("GPU-b", "1", SERVE), 120.0, 12)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", "0", TRAIN), 1980.0), (gpu("GPU-b", "1", SERVE), 1410.0)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    # Per metric: the values, the scrape times per target, and (the target's series disagree) each series' time.
    assert len(prom.requests) == 5
    assert all(r.params["time"] == f"{prom.eval_time:.3f}" for r in prom.requests)
    a = snap.gpus["GPU-a"]
    assert (a.uuid, a.gpu_index, a.model, a.hostname) == ("GPU-a", "0", "NVIDIA H100 80GB HBM3", "node-a")
    assert (a.power_watts, a.sm_clock_mhz, a.timestamp, a.pods) == (310.5, 1980.0, prom.eval_time - 5, {TRAIN})
    assert snap.gpus["GPU-b"].timestamp == prom.eval_time - 12
    assert snap.pod_gpus == {TRAIN: {"GPU-a"}, SERVE: {"GPU-b"}}
    assert snap.problems == ()
    assert set(snap.durations) == {"gpu_power", "sm_clock"}


def test_an_unallocated_gpu_is_read_but_belongs_to_no_pod(prom, sampler):
    prom.answer_series(POWER, [(gpu("GPU-a", pod=TRAIN), 300.0), (gpu("GPU-idle", "1"), 60.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", pod=TRAIN), 1980.0), (gpu("GPU-idle", "1"), 345.0)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    assert snap.gpus["GPU-idle"].pods == frozenset()
    assert snap.pod_gpus == {TRAIN: {"GPU-a"}}


def test_a_gpu_shared_by_time_slicing_is_counted_once(prom, sampler):
    # dcgm-exporter repeats a time-sliced GPU's series once per pod using it.
    prom.answer_series(POWER, [(gpu("GPU-a", pod=TRAIN), 400.0), (gpu("GPU-a", pod=SERVE), 400.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", pod=TRAIN), 1980.0), (gpu("GPU-a", pod=SERVE), 1980.0)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)
    total = snap.total_for([TRAIN, SERVE])

    assert snap.pod_gpus == {TRAIN: {"GPU-a"}, SERVE: {"GPU-a"}}
    assert snap.gpus["GPU-a"].pods == {TRAIN, SERVE}
    assert (total.gpu_watts, total.gpus, total.complete) == (400.0, {"GPU-a"}, True)
    assert snap.total_for([SERVE]).watts == 400.0


def test_a_pod_set_is_summed_once_per_snapshot_whoever_asks(prom, sampler, mocker):
    # The sample checks each policy's power, and the policy's reconcile sums the same pods again.
    prom.answer_series(POWER, [(gpu("GPU-a", pod=TRAIN), 400.0), (gpu("GPU-b", "1", SERVE), 100.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", pod=TRAIN), 1980.0), (gpu("GPU-b", "1", SERVE), 1410.0)])
    snap = sampler.fetch_gpu_samples(prom.eval_time)
    gpus_of = mocker.spy(GpuSnapshot, "gpus_of")

    first = snap.total_for([TRAIN, SERVE])
    again = snap.total_for((SERVE, TRAIN))
    alone = snap.total_for([SERVE])

    assert again is first and first.gpu_watts == 500.0
    assert alone.gpu_watts == 100.0
    assert gpus_of.call_count == 2  # the pair once, the single pod once


def test_a_gpu_under_two_exporters_is_deduplicated_to_the_freshest(prom, sampler):
    # While the exporter DaemonSet rolls, the old and the new pod both expose the GPU.
    old = gpu("GPU-a", pod=TRAIN, instance="10.0.0.1:9400")
    new = gpu("GPU-a", pod=TRAIN, instance="10.0.0.2:9400")
    prom.answer_series(POWER, [(old, 280.0, 20), (new, 300.0, 1)])
    prom.answer_series(CLOCK, [(old, 1900.0, 20), (new, 1980.0, 1)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    assert list(snap.gpus) == ["GPU-a"]
    assert (snap.gpus["GPU-a"].power_watts, snap.gpus["GPU-a"].sm_clock_mhz) == (300.0, 1980.0)
    assert snap.total_for([TRAIN]).watts == 300.0


def test_workload_labels_moved_to_exported_labels_are_found(prom, sampler):
    # Scraped without honor_labels: pod/namespace name the exporter, exported_* the workload.
    exporter = {"pod": "dcgm-exporter-x7", "namespace": "gpu-operator"}
    series = gpu("GPU-a") | exporter | {"exported_pod": "train-0", "exported_namespace": "ml"}
    prom.answer_series(POWER, [(series, 300.0)])
    prom.answer_series(CLOCK, [(series, 1980.0)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    assert snap.pod_gpus == {TRAIN: {"GPU-a"}}


def test_only_the_exported_shape_keeps_unallocated_gpus_off_the_exporter_pod(prom, client):
    profile = dcgm_profile(pod_labels=(PodLabels("exported_pod", "exported_namespace"),))
    exporter = {"pod": "dcgm-exporter-x7", "namespace": "gpu-operator"}
    allocated = gpu("GPU-a") | exporter | {"exported_pod": "train-0", "exported_namespace": "ml"}
    prom.answer_series(POWER, [(allocated, 300.0), (gpu("GPU-idle", "1") | exporter, 60.0)])
    prom.answer_series(CLOCK, [(allocated, 1980.0)])

    snap = GpuSampler(client, profile).fetch_gpu_samples(prom.eval_time)

    assert snap.pod_gpus == {TRAIN: {"GPU-a"}}


@pytest.mark.parametrize(
    ("value", "age", "kind"),
    [
        (math.nan, 1, ProblemKind.NAN),
        (math.inf, 1, ProblemKind.INFINITE),
        (-4.0, 1, ProblemKind.NEGATIVE),
        (300.0, 31, ProblemKind.STALE),
    ],
)
def test_a_bad_power_reading_is_reported_and_never_summed(prom, sampler, value, age, kind):
    prom.answer_series(POWER, [(gpu("GPU-a", "0", TRAIN), 300.0), (gpu("GPU-b", "1", TRAIN), value, age)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", "0", TRAIN), 1980.0), (gpu("GPU-b", "1", TRAIN), 1980.0)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)
    total = snap.total_for([TRAIN])

    assert "GPU-b" not in snap.gpus
    assert (total.gpu_watts, total.missing_gpus, total.complete) == (300.0, {"GPU-b"}, False)
    [problem] = snap.problems
    assert (problem.kind, problem.metric, problem.key) == (kind, POWER, "GPU-b")
    assert problem.labels["UUID"] == "GPU-b" and problem.labels["pod"] == "train-0"
    assert problem.value == value or math.isnan(value)
    assert snap.problems_for([TRAIN]) == (problem,)
    assert snap.problems_for([SERVE]) == ()


def test_a_bad_clock_reading_leaves_the_power_reading_usable(prom, sampler):
    prom.answer_series(POWER, [(gpu("GPU-a", pod=TRAIN), 300.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", pod=TRAIN), math.nan)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    assert (snap.gpus["GPU-a"].power_watts, snap.gpus["GPU-a"].sm_clock_mhz) == (300.0, None)
    assert [(p.kind, p.metric) for p in snap.problems] == [(ProblemKind.NAN, CLOCK)]


def test_no_power_series_at_all_is_no_data(prom, sampler):
    prom.answer_series(POWER, [])

    with pytest.raises(PromNoDataError, match=POWER) as caught:
        sampler.fetch_gpu_samples(prom.eval_time)

    assert caught.value.reason == "PrometheusNoData"


def test_no_clock_series_is_reported_and_readings_go_without_clock(prom, sampler):
    prom.answer_series(POWER, [(gpu("GPU-a", pod=TRAIN), 300.0)])
    prom.answer_series(CLOCK, [])

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    assert snap.gpus["GPU-a"].sm_clock_mhz is None
    assert [(p.kind, p.metric) for p in snap.problems] == [(ProblemKind.EMPTY, CLOCK)]


def test_a_series_without_uuid_is_reported_and_its_pod_shows_a_gpu_missing(prom, sampler):
    prom.answer_series(POWER, [(gpu("", pod=TRAIN), 300.0)])
    prom.answer_series(CLOCK, [])

    snap = sampler.fetch_gpu_samples(prom.eval_time)
    total = snap.total_for([TRAIN])

    assert snap.gpus == {}
    assert ProblemKind.MISSING_LABEL in [p.kind for p in snap.problems]
    assert (total.watts, len(total.missing_gpus), total.complete) == (0.0, 1, False)


def test_without_a_time_the_evaluation_time_judges_staleness(prom, sampler):
    prom.answer_series(POWER, [(gpu("GPU-a", pod=TRAIN), 300.0, 40)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", pod=TRAIN), 1980.0, 40)])

    snap = sampler.fetch_gpu_samples()

    assert snap.query_time == prom.eval_time
    assert {p.kind for p in snap.problems} == {ProblemKind.STALE}
    assert prom.requests[1].params["time"] == f"{prom.eval_time:.3f}"


def test_cpu_power_of_pods_is_added_once_per_pod(prom, client):
    profile = dcgm_profile().with_cpu_power()
    prom.answer_series(POWER, [(gpu("GPU-a", pod=TRAIN), 300.0), (gpu("GPU-a", pod=SERVE), 300.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", pod=TRAIN), 1980.0)])
    kepler = {"pod_name": "train-0", "pod_namespace": "ml", "instance": "10.0.0.1:28282"}
    prom.answer_series(
        "kepler_pod_cpu_watts",
        [
            (kepler | {"zone": "package-0"}, 40.0),
            (kepler | {"zone": "package-1"}, 35.0),
            # A second Kepler pod, older, while the DaemonSet rolls: not added.
            (kepler | {"zone": "package-0", "instance": "10.0.0.9:28282"}, 39.0, 20),
        ],
    )

    snap = GpuSampler(client, profile).fetch_gpu_samples(prom.eval_time)
    total = snap.total_for([TRAIN, SERVE])

    assert all('zone=~"package.*"' in q for q in prom.queries() if "kepler_pod_cpu_watts" in q)
    assert snap.cpu_watts == {TRAIN: 75.0}
    assert (total.gpu_watts, total.cpu_watts, total.watts) == (300.0, 75.0, 375.0)
    assert (total.missing_cpu_pods, total.complete) == ({SERVE}, False)


def test_a_bad_cpu_reading_drops_that_pods_cpu_power(prom, client):
    profile = dcgm_profile(sm_clock_metric="").with_cpu_power(matchers="")
    prom.answer_series(POWER, [(gpu("GPU-a", pod=TRAIN), 300.0)])
    kepler = {"pod_name": "train-0", "pod_namespace": "ml"}
    prom.answer_series("kepler_pod_cpu_watts", [(kepler | {"zone": "package-0"}, 40.0), (kepler, -1.0)])

    snap = GpuSampler(client, profile).fetch_gpu_samples(prom.eval_time)

    assert len(prom.requests) == 4, "values and scrape times of the power and of the CPU power"
    assert snap.cpu_watts == {}
    assert [(p.kind, p.pod) for p in snap.problems] == [(ProblemKind.NEGATIVE, TRAIN)]
    assert snap.total_for([TRAIN]).missing_cpu_pods == {TRAIN}


def test_the_kepler_profile_takes_gpu_power_from_dcgm_and_adds_cpu_power_from_kepler(prom, client):
    prom.answer_series(POWER, [(gpu("GPU-a", pod=TRAIN), 300.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", pod=TRAIN), 1980.0)])
    kepler = {"pod_name": "train-0", "pod_namespace": "ml", "zone": "package-0"}
    prom.answer_series("kepler_pod_cpu_watts", [(kepler | {"state": "running"}, 40.0)])

    snap = GpuSampler(client, kepler_profile()).fetch_gpu_samples(prom.eval_time)

    assert snap.gpus["GPU-a"].uuid == "GPU-a", "a GPU a tuner can cap"
    assert snap.total_for([TRAIN]).watts == 340.0
    [cpu_query, _] = [q for q in prom.queries() if "kepler_pod_cpu_watts" in q]
    assert 'state!="terminated"' in cpu_query, "Kepler keeps the last power of terminated pods"
    assert 'zone=~"package.*"' in cpu_query


def test_only_keplers_gpu_power_is_refused_naming_dcgm_exporter(prom, sampler):
    prom.answer_series(POWER, [])
    prom.answer_vector([({}, "8")], when="count(kepler_pod_gpu_watts)")

    with pytest.raises(PromNoDataError) as raised:
        sampler.fetch_gpu_samples(prom.eval_time)

    message = str(raised.value)
    assert "no DCGM_FI_DEV_POWER_USAGE series" in message
    assert "names no GPU" in message and "dcgm-exporter" in message


def test_an_old_keplers_cpu_counters_are_named_when_its_watts_are_missing(prom, client):
    prom.answer_series(POWER, [(gpu("GPU-a", pod=TRAIN), 300.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", pod=TRAIN), 1980.0)])
    prom.answer_series("kepler_pod_cpu_watts", [])
    prom.answer_vector([({}, "16")], when="count(kepler_container_package_joules_total)")

    snap = GpuSampler(client, kepler_profile()).fetch_gpu_samples(prom.eval_time)

    assert snap.total_for([TRAIN]).missing_cpu_pods == {TRAIN}
    assert any("kepler_container_package_joules_total (Kepler 0.7)" in w for w in snap.warnings)


def test_old_namespace_and_renamed_hostname_labels_are_read(prom, sampler):
    old = {"uuid": "GPU-o", "gpu": "0", "hostname": "node-b", "pod_name": "train-0", "pod_namespace": "ml"}
    prom.answer_series(POWER, [(old, 250.0)])
    prom.answer_series(CLOCK, [(old, 1500.0)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    reading = snap.gpus["GPU-o"]
    assert (reading.uuid, reading.hostname, reading.pods, reading.sm_clock_mhz) == ("GPU-o", "node-b", {TRAIN},
                                                                                      1500.0)


def test_mig_instances_are_charged_their_share_of_the_gpu(prom, sampler):
    a = gpu("GPU-m", pod=TRAIN, GPU_I_ID="1", GPU_I_PROFILE="3g.40gb")
    b = gpu("GPU-m", pod=SERVE, GPU_I_ID="2", GPU_I_PROFILE="4g.40gb")
    prom.answer_series(POWER, [(a, 350.0), (b, 350.0)])
    prom.answer_series(CLOCK, [(a, 1410.0), (b, 1410.0)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    assert snap.total_for([TRAIN]).watts == pytest.approx(150.0)
    assert snap.total_for([SERVE]).watts == pytest.approx(200.0)
    assert snap.total_for([TRAIN, SERVE]).watts == pytest.approx(350.0), "the GPU once, not once per tenant"
    reading = snap.gpus["GPU-m/1"]
    assert (reading.uuid, reading.mig_instance, reading.sm_clock_mhz) == ("GPU-m", 1, 1410.0)


def test_custom_metric_and_label_names_are_used(prom, client):
    profile = dcgm_profile(
        power_metric="DCGM_FI_DEV_POWER_USAGE_INSTANT",
        power_matchers='cluster="eu-1"',
        sm_clock_metric="",
        uuid_labels=("gpu_uuid",),
        pod_labels=(PodLabels("workload_pod", "workload_ns"),),
    )
    labels = {"gpu_uuid": "GPU-z", "workload_pod": "train-0", "workload_ns": "ml"}
    prom.answer_series("DCGM_FI_DEV_POWER_USAGE_INSTANT", [(labels, 500.0)])

    snap = GpuSampler(client, profile).fetch_gpu_samples(prom.eval_time)

    assert all('DCGM_FI_DEV_POWER_USAGE_INSTANT{cluster="eu-1"}' in q for q in prom.queries())
    assert len(prom.requests) == 2, "the values and their scrape time, no clock"
    assert snap.total_for([TRAIN]).watts == 500.0
