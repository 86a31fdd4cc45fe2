"""What the sampler asks Prometheus (served by a stub that evaluates the sampler's query shapes): the scope's
series only, aggregated onto the labels the profile reads, with one scrape time per target, and a closer look
only at a target whose series disagree."""

from __future__ import annotations

import threading
import time

import pytest

from climatik.prom import GpuSampler, PodKey, PromNoDataError, PromResponseError, dcgm_profile
from climatik.prom.scope import Scope

POWER = "DCGM_FI_DEV_POWER_USAGE"
CLOCK = "DCGM_FI_DEV_SM_CLOCK"
TRAIN = PodKey("ml", "train-0")
SERVE = PodKey("ml", "serve-0")
NODE_A = "10.0.0.1:9400"
NODE_B = "10.0.0.2:9400"


def gpu(uuid: str, pod: PodKey, instance: str = NODE_A) -> dict[str, str]:
    """A dcgm-exporter series as Prometheus stores it, with the labels nothing in Climatik reads."""
    return {"UUID": uuid, "gpu": "0", "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "node-a",
            "DCGM_FI_DRIVER_VERSION": "550.90.07", "pci_bus_id": "00000000:1B:00.0", "device": "nvidia0",
            "instance": instance, "job": "dcgm-exporter", "pod": pod.name, "namespace": pod.namespace,
            "container": "main"}


def release_once_asked(prom, asked, release: threading.Event) -> threading.Event:
    """Set `release` once the stub has been asked a query that `asked` picks, or after 2 s; the event returned
    is set only in the first case."""
    seen = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not seen.is_set():
            if any(asked(q) for q in prom.queries()):
                seen.set()
            time.sleep(0.01)
        release.set()

    threading.Thread(target=watch, daemon=True).start()
    return seen


@pytest.fixture
def sampler(client):
    return GpuSampler(client, dcgm_profile(), max_sample_age_s=30, wall=lambda: 1_234.5)


def test_a_steady_fleet_costs_two_queries_per_metric_and_brings_back_only_labels_that_are_read(prom, client,
                                                                                              sampler):
    prom.answer_series(POWER, [(gpu("GPU-a", TRAIN), 300.0, 2), (gpu("GPU-b", SERVE, NODE_B), 200.0, 4)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", TRAIN), 1980.0, 2), (gpu("GPU-b", SERVE, NODE_B), 1410.0, 4)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    power = [q for q in prom.queries() if POWER in q]
    clock = [q for q in prom.queries() if CLOCK in q]
    assert len(prom.queries()) == len(power) + len(clock) == 4
    for values, times in (power, clock):  # each metric's reads in order; the two metrics side by side
        assert values.startswith("max by (") and times.startswith("count_values by (instance)")
    assert (snap.gpus["GPU-a"].timestamp, snap.gpus["GPU-b"].timestamp) == (prom.eval_time - 2, prom.eval_time - 4)
    assert snap.total_for([TRAIN, SERVE]).watts == 500.0
    assert snap.gpus["GPU-b"].sm_clock_mhz == 1410.0
    # The bytes Prometheus sends and the monitor decodes: no driver version, PCI bus, container or job.
    stale = GpuSampler(client, dcgm_profile(sm_clock_metric=""), max_sample_age_s=3).fetch_gpu_samples(prom.eval_time)
    [problem] = stale.problems
    assert set(problem.labels) == {"UUID", "gpu", "modelName", "Hostname", "instance", "pod", "namespace"}


def test_the_clock_is_asked_while_the_power_answer_is_still_on_its_way(prom, sampler):
    prom.answer_series(POWER, [(gpu("GPU-a", TRAIN), 300.0, 2)], held=True)
    prom.answer_series(CLOCK, [(gpu("GPU-a", TRAIN), 1980.0, 2)])
    asked_side_by_side = release_once_asked(prom, lambda q: CLOCK in q, prom.released)

    snap = sampler.fetch_gpu_samples()

    assert asked_side_by_side.is_set(), "the clock waited for the power answer: the reads ran one after the other"
    assert snap.gpus["GPU-a"].sm_clock_mhz == 1980.0 and snap.query_time == prom.eval_time
    assert all(r.params["time"] == f"{prom.eval_time:.3f}" for r in prom.requests[1:]), \
        "every read at Prometheus' time, asked first"


def test_the_scrape_times_are_asked_as_soon_as_prometheus_starts_sending_the_values(prom, sampler):
    # The power values' headers come at once, their body only once the power's scrape times have been asked:
    # Prometheus evaluates the times while the monitor reads and decodes the values.
    prom.answer_series(POWER, [(gpu("GPU-a", TRAIN), 300.0, 2)], body_held=True)
    prom.answer_series(CLOCK, [(gpu("GPU-a", TRAIN), 1980.0, 2)])
    overlapped = release_once_asked(prom, lambda q: q.startswith("count_values") and POWER in q, prom.body_released)

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    assert overlapped.is_set(), "the scrape times waited for the values' body: nothing overlapped"
    assert snap.gpus["GPU-a"].timestamp == prom.eval_time - 2 and snap.gpus["GPU-a"].power_watts == 300.0


def test_only_a_target_whose_series_disagree_on_their_time_gets_a_closer_look(prom, sampler):
    # Node A's exporter stamps its own samples (one of them stuck); node B is scraped as usual.
    prom.answer_series(POWER, [(gpu("GPU-a", TRAIN), 300.0, 2), (gpu("GPU-s", TRAIN), 280.0, 90),
                               (gpu("GPU-b", SERVE, NODE_B), 200.0, 4)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", TRAIN), 1980.0, 2), (gpu("GPU-b", SERVE, NODE_B), 1410.0, 4)])

    snap = sampler.fetch_gpu_samples(prom.eval_time)

    closer = [q for q in prom.queries() if q.startswith("max by (") and "timestamp(" in q]
    assert len(closer) == 1 and 'instance=~"10\\\\.0\\\\.0\\\\.1:9400"' in closer[0]
    assert snap.gpus["GPU-a"].timestamp == prom.eval_time - 2
    assert "GPU-s" not in snap.gpus, "stuck 90 s ago: stale"
    assert snap.total_for([TRAIN]).missing_gpus == {"GPU-s"}


def test_the_queries_read_only_the_scope(prom, sampler):
    prom.answer_series(POWER, [(gpu("GPU-a", TRAIN), 300.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", TRAIN), 1980.0)])

    snap = sampler.fetch_gpu_samples(prom.eval_time, Scope({"ml": frozenset({"train-0"})}))

    assert all('namespace="ml",pod="train-0"' in q for q in prom.queries())
    assert snap.scope.covers(TRAIN) and not snap.scope.covers(SERVE)


def test_a_narrowed_read_asks_only_the_pod_labels_the_series_carry(prom, sampler):
    prom.answer_series(POWER, [(gpu("GPU-a", TRAIN), 300.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", TRAIN), 1980.0)])

    snap = sampler.fetch_gpu_samples(prom.eval_time, Scope({"ml": None}))

    # The profile names three pairs (exported_pod/exported_namespace, pod/namespace, pod_name/pod_namespace);
    # the series carry only pod/namespace, so each query has one selector instead of three joined with `or`.
    assert all(q.count('namespace="ml"') == 1 and '{namespace="ml"}' in q for q in prom.queries())
    assert sorted((r.path.split("/")[-2], r.params["match[]"]) for r in prom.lookups()) == sorted(
        (label, metric) for label in ("exported_namespace", "namespace", "pod_namespace") for metric in (POWER, CLOCK))
    assert all((r.params["start"], r.params["end"]) == (f"{prom.eval_time - 300:.3f}", f"{prom.eval_time:.3f}")
               for r in prom.lookups())
    assert snap.total_for([TRAIN]).watts == 300.0 and snap.gpus["GPU-a"].sm_clock_mhz == 1980.0

    # A full read has no selector per pair to leave out, and asks no lookup.
    prom.requests.clear()
    sampler.fetch_gpu_samples(prom.eval_time)
    assert prom.lookups() == [] and len(prom.queries()) == 4


def test_a_pair_whose_series_name_other_namespaces_only_is_left_out(prom, sampler):
    # Scraped without honor_labels: pod/namespace name the exporter's own pod, the workload moved to exported_*.
    exported = {**gpu("GPU-a", TRAIN), "exported_pod": TRAIN.name, "exported_namespace": TRAIN.namespace,
                "pod": "dcgm-exporter-x", "namespace": "gpu-operator"}
    prom.answer_series(POWER, [(exported, 300.0)])
    prom.answer_series(CLOCK, [(exported, 1980.0)])

    snap = sampler.fetch_gpu_samples(prom.eval_time, Scope({"ml": None}))

    assert all(q.count('namespace="ml"') == 1 and 'exported_namespace="ml"' in q for q in prom.queries())
    assert snap.total_for([TRAIN]).watts == 300.0


def test_every_pair_a_series_carries_is_asked(prom, sampler):
    # Two scrape set-ups side by side: one keeps the workload in pod/namespace, the other (no honor_labels) in
    # exported_pod/exported_namespace.
    exported = {**gpu("GPU-b", SERVE), "exported_pod": SERVE.name, "exported_namespace": SERVE.namespace,
                "pod": "dcgm-exporter-x", "namespace": "gpu-operator"}
    prom.answer_series(POWER, [(gpu("GPU-a", TRAIN), 300.0), (exported, 200.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", TRAIN), 1980.0)])

    sampler.fetch_gpu_samples(prom.eval_time, Scope({"ml": None}))

    [values, _times] = [q for q in prom.queries() if POWER in q]
    assert 'exported_namespace="ml"' in values and '{namespace="ml"}' in values and 'pod_namespace="ml"' not in values
    assert all(q.count('namespace="ml"') == 1 for q in prom.queries() if CLOCK in q)


@pytest.mark.parametrize("answer", [dict(body={"status": "error", "errorType": "bad_data", "error": "no"}, status=400),
                                    dict(body={"status": "error", "errorType": "internal", "error": "no"}, status=500),
                                    dict(body={"status": "success", "data": []}, status=200)])
def test_when_prometheus_cannot_say_which_pod_labels_are_carried_every_pair_is_asked(prom, sampler, answer):
    prom.answer_series(POWER, [(gpu("GPU-a", TRAIN), 300.0)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", TRAIN), 1980.0)])
    prom.answer(answer["body"], status=answer["status"], when="labels")

    snap = sampler.fetch_gpu_samples(prom.eval_time, Scope({"ml": None}))

    assert all(q.count('namespace="ml"') == 3 for q in prom.queries()), "the three pairs, as without the lookup"
    assert snap.total_for([TRAIN]).watts == 300.0


def test_an_empty_scope_asks_nothing(prom, sampler):
    snap = sampler.fetch_gpu_samples(scope=Scope())

    assert prom.requests == []
    assert (snap.gpus, snap.query_time) == ({}, 1_234.5)


def test_pods_without_series_in_a_narrow_scope_are_missing_not_an_outage(prom, sampler):
    prom.answer_series(POWER, [])
    prom.answer_series(CLOCK, [])
    prom.answer_vector([({}, "64")], when=f"count({POWER})")

    snap = sampler.fetch_gpu_samples(prom.eval_time, Scope({"ml": frozenset({"train-0"})}))

    assert snap.pod_gpus == {}
    assert any("names the selected pods" in w for w in snap.warnings)


def test_no_power_series_at_all_is_no_data_whatever_the_scope(prom, sampler):
    prom.answer_series(POWER, [])

    with pytest.raises(PromNoDataError, match="is dcgm-exporter running"):
        sampler.fetch_gpu_samples(prom.eval_time, Scope({"ml": None}))


def test_a_value_without_a_scrape_time_is_a_bad_answer(prom, sampler):
    prom.answer_vector([({"UUID": "GPU-a", "instance": NODE_A}, 300.0)], when="max by")
    prom.answer_vector([({"instance": NODE_B, "climatik_scrape_time": "1749999999"}, 1.0)], when="count_values")

    with pytest.raises(PromResponseError, match="no scrape time"):
        sampler.fetch_gpu_samples(prom.eval_time)


def test_power_read_alone_asks_its_scrape_times_with_its_values(prom, sampler):
    # No clock is read: the values and the scrape times are two queries Prometheus can evaluate side by side.
    prom.answer_series(POWER, [(gpu("GPU-a", TRAIN), 300.0, 2)], held=True)
    prom.answer_series(CLOCK, [(gpu("GPU-a", TRAIN), 1980.0, 2)])
    together = release_once_asked(prom, lambda q: q.startswith("count_values") and POWER in q, prom.released)

    snap = sampler.fetch_gpu_samples(prom.eval_time, Scope({"ml": None}), clock_scope=Scope())

    assert together.is_set(), "the scrape times waited for the values"
    assert not any(CLOCK in q for q in prom.queries()), "no policy needed a clock"
    assert snap.gpus["GPU-a"].sm_clock_mhz is None and snap.gpus["GPU-a"].timestamp == prom.eval_time - 2
    assert not snap.problems, "a clock not asked for is not a clock missing"


def test_clocks_added_to_a_sample_are_asked_at_its_time_for_the_pods_named(prom, sampler):
    prom.answer_series(POWER, [(gpu("GPU-a", TRAIN), 300.0, 2), (gpu("GPU-b", SERVE, NODE_B), 200.0, 4)])
    prom.answer_series(CLOCK, [(gpu("GPU-a", TRAIN), 1980.0, 2), (gpu("GPU-b", SERVE, NODE_B), 1410.0, 4)])
    snap = sampler.fetch_gpu_samples(prom.eval_time, Scope({"ml": None}), clock_scope=Scope())
    asked_before = len(prom.requests)

    added = sampler.add_clocks(snap, Scope.of_pods({"ml": {"train-0"}}))

    later = prom.requests[asked_before:]
    assert later and all(r.params["time"] == f"{snap.query_time:.3f}" for r in later if "time" in r.params)
    assert [q for q in prom.queries()[-2:] if CLOCK in q and 'pod="train-0"' in q] == prom.queries()[-2:]
    assert added.gpus["GPU-a"].sm_clock_mhz == 1980.0  # (the stub answers every series; Prometheus: tests/integration)
    assert added.gpus["GPU-a"]._replace(sm_clock_mhz=None) == snap.gpus["GPU-a"], "only the clock is added"
    assert sampler.add_clocks(snap, Scope()) is snap
