"""The `climatik` command: one entry point, a subcommand per long-running controller.

Every option has an environment variable (CLIMATIK_<SUBCOMMAND>_<OPTION>, and the few named explicitly below),
so the manifests can configure the controllers from ConfigMaps and the downward API.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click
import structlog

from climatik import __version__
from climatik.api.constants import DEFAULT_RELEASE_BAND
from climatik.clock import SystemClock
from climatik.kube.process import CommonSettings
from climatik.monitor import app as monitor_app
from climatik.prom import PodLabels, PromSettings, profile_named
from climatik.prom.profiles import label_list
from climatik.recommend import app as recommend_app
from climatik.tune import app as tune_app

F = TypeVar("F", bound=Callable[..., Any])


def configure_logging(level: str = "info", *, json_lines: bool | None = None, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging to `stream` at `level`."""
    stream = stream or sys.stdout
    if json_lines is None:
        json_lines = not stream.isatty()
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info,
                    renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (urllib3, kubernetes) log through the standard library: keep them quieter and on the same stream.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


class Duration(click.ParamType[float]):
    """Seconds, written as 500ms, 5s, 2m or a bare number of seconds."""

    name = "duration"
    _UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip()
        for suffix, scale in self._UNITS:
            if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
                return float(text[: -len(suffix)]) * scale
        try:
            seconds = float(text)
        except ValueError:
            self.fail(f"{value!r} is not a duration such as 500ms, 5s or 2m", param, ctx)
        if seconds < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return seconds


def _apply(func: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def process_options(func: F) -> F:
    """Options every controller takes: API access, the metrics/health port, shutdown."""
    return _apply(func, [
        click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None, envvar="KUBECONFIG",
                     help="Kubeconfig file; in a pod, the service account is used when unset."),
        click.option("--metrics-port", type=int, default=8080, show_default=True,
                     help="Port serving /metrics, /healthz and /readyz (0 picks a free one)."),
        click.option("--metrics-host", default="0.0.0.0", show_default=True),
        click.option("--grace-period", type=float, default=25.0, show_default=True,
                     help="Seconds in-flight work may take to finish after SIGTERM."),
    ])


def leader_options(func: F) -> F:
    """Options of the leader-elected controllers (monitor, recommend)."""
    return _apply(func, [
        click.option("--leader-elect/--no-leader-elect", default=False, show_default=True,
                     help="Run only while holding the component's Lease (one active replica)."),
        click.option("--leader-election-namespace", default="climatik-system", show_default=True,
                     envvar="POD_NAMESPACE"),
        click.option("--leader-election-identity", default=None, envvar="POD_NAME",
                     help="Holder identity in the Lease (default: host name and pid)."),
        click.option("--lease-duration", type=float, default=15.0, show_default=True),
        click.option("--renew-deadline", type=float, default=10.0, show_default=True),
        click.option("--retry-period", type=float, default=2.0, show_default=True),
    ])


def shard_option(func: F) -> F:
    """The option of controllers whose replicas can split their keys (monitor, recommend)."""
    return _apply(func, [
        click.option("--shard/--no-shard", default=False, show_default=True,
                     help="Split the policies with the other replicas run with --shard, by consistent hashing over "
                          "one shard Lease per replica (in --leader-election-namespace, named after "
                          "--leader-election-identity); a replica that is gone hands its policies over."),
    ])


def common_options(func: F) -> F:
    """Process and leader-election options together."""
    return process_options(leader_options(func))


def common_settings(kwargs: dict[str, Any]) -> CommonSettings:
    """Take the process (and, where present, leader-election) options out of a command's keyword arguments."""
    defaults = CommonSettings()
    identity = kwargs.pop("leader_election_identity", None)
    settings = CommonSettings(
        kubeconfig=kwargs.pop("kubeconfig"), metrics_port=kwargs.pop("metrics_port"),
        metrics_host=kwargs.pop("metrics_host"), grace_period=kwargs.pop("grace_period"),
        leader_elect=kwargs.pop("leader_elect", False), shard=kwargs.pop("shard", False),
        leader_election_namespace=kwargs.pop("leader_election_namespace", defaults.leader_election_namespace),
        lease_duration=kwargs.pop("lease_duration", defaults.lease_duration),
        renew_deadline=kwargs.pop("renew_deadline", defaults.renew_deadline),
        retry_period=kwargs.pop("retry_period", defaults.retry_period),
    )
    if identity:
        settings = dataclasses.replace(settings, leader_election_identity=identity)
    if settings.shard and settings.leader_elect:
        raise click.UsageError("--shard and --leader-elect exclude each other: shards share the policies, "
                               "an elected replica takes them all")
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "CLIMATIK"})
@click.option("--log-level", default="info", show_default=True, envvar="CLIMATIK_LOG_LEVEL",
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-format", default="auto", show_default=True, envvar="CLIMATIK_LOG_FORMAT",
              type=click.Choice(["auto", "json", "console"]),
              help="auto: JSON lines unless stdout is a terminal.")
def cli(log_level: str, log_format: str) -> None:
    """Climatik keeps GPU workloads under a power budget by tuning GPU and CPU clocks in a closed loop."""
    configure_logging(log_level, json_lines=None if log_format == "auto" else log_format == "json")


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)


@cli.command()
@common_options
@shard_option
@click.option("--prometheus-url", required=True, envvar="CLIMATIK_PROMETHEUS_URL",
              help="Base URL of the Prometheus HTTP API (path prefix included).")
@click.option("--interval", type=Duration(), default="5s", show_default=True,
              help="How often Prometheus is sampled and every policy re-evaluated (the control period).")
@click.option("--metrics-profile", type=click.Choice(["dcgm", "kepler"]), default="dcgm", show_default=True,
              help="dcgm: GPU power from dcgm-exporter; kepler: the same, plus each pod's CPU power from Kepler "
                   "(kepler_pod_cpu_watts, Kepler 0.10 or later).")
@click.option("--cpu-power-metric", default=None,
              help="Also add the selected pods' CPU power from this per-pod metric (e.g. kepler_pod_cpu_watts).")
@click.option("--pod-labels", default="",
              help="Label pairs naming a GPU series' pod, tried in order, as pod:namespace,... (default: "
                   "exported_pod:exported_namespace,pod:namespace,pod_name:pod_namespace). Without "
                   "honor_labels, list only exported_pod:exported_namespace.")
@click.option("--uuid-labels", default="", help="Labels holding a GPU's UUID, tried in order (default: UUID,uuid).")
@click.option("--hostname-labels", default="",
              help="Labels holding an unallocated GPU's node, tried in order (default: Hostname,hostname).")
@click.option("--power-matchers", default="",
              help='Extra PromQL matchers for the GPU power and SM clock series, e.g. job="dcgm-exporter".')
@click.option("--bearer-token-file", type=click.Path(dir_okay=False), default=None)
@click.option("--ca-bundle", type=click.Path(dir_okay=False), default=None)
@click.option("--insecure-skip-verify", is_flag=True)
@click.option("--prometheus-compression/--no-prometheus-compression", default=False, show_default=True,
              help="Ask Prometheus for gzip-compressed answers: for a Prometheus across a WAN or a metered service. "
                   "Off, the default, suits an in-cluster Prometheus, which spends less CPU on each answer.")
@click.option("--max-sample-age", type=Duration(), default="60s", show_default=True,
              help="Samples scraped longer ago than this are stale and never summed. It bounds the scrape's age "
                   "only: a sample the exporter collected 30 s before the scrape looks fresh.")
@click.option("--release-band", type=click.IntRange(1, 99), default=DEFAULT_RELEASE_BAND, show_default=True,
              help="Percent of the limit below the threshold at which capping is released (hysteresis).")
@click.option("--heartbeat", type=Duration(), default="60s", show_default=True,
              help="Most time between status writes of a steady policy.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--shard-by", type=click.Choice(list(monitor_app.SHARD_UNITS)), default="policy", show_default=True,
              help="With --shard, what moves between replicas as one: each policy, or every policy of a namespace "
                   "(each replica then reads whole namespaces from Prometheus, cheaper than reading pods by name, "
                   "but a namespace holding most policies falls to one replica).")
def monitor(**kwargs: Any) -> None:
    """Power Usage Monitor: measure each policy's power and decide whether capping is required."""
    common = common_settings(kwargs)
    prometheus = PromSettings(url=kwargs["prometheus_url"], bearer_token_file=kwargs["bearer_token_file"],
                              ca_bundle=kwargs["ca_bundle"], insecure_skip_verify=kwargs["insecure_skip_verify"],
                              compress=kwargs["prometheus_compression"])
    settings = monitor_app.MonitorSettings(
        prometheus=prometheus, interval=kwargs["interval"], metrics_profile=kwargs["metrics_profile"],
        cpu_power_metric=kwargs["cpu_power_metric"], max_sample_age=kwargs["max_sample_age"],
        release_band=kwargs["release_band"], heartbeat=kwargs["heartbeat"], workers=kwargs["workers"],
        shard_by=kwargs["shard_by"], labels=_labels(kwargs))
    sys.exit(monitor_app.build(settings, common, clock=SystemClock()).run())


def _labels(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The metric profile's label settings given on the command line (empty options keep the defaults)."""
    try:
        labels: dict[str, Any] = {}
        if kwargs["pod_labels"]:
            labels["pod_labels"] = PodLabels.parse(kwargs["pod_labels"])
        for option in ("uuid_labels", "hostname_labels"):
            if kwargs[option]:
                labels[option] = label_list(kwargs[option])
        if kwargs["power_matchers"]:
            labels["power_matchers"] = labels["sm_clock_matchers"] = kwargs["power_matchers"]
        profile_named(kwargs["metrics_profile"], **labels)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return labels


@cli.command()
@common_options
@shard_option
@click.option("--release-band", type=click.IntRange(1, 99), default=DEFAULT_RELEASE_BAND, show_default=True,
              help="Percent of the limit below the threshold at which caps are given back, for policies without "
                   "releaseThreshold (as the monitor's).")
@click.option("--max-observation-age", type=Duration(), default="180s", show_default=True,
              help="A policy whose last observation is older holds its targets and runs no algorithm; keep it "
                   "well above the monitor's --heartbeat.")
@click.option("--resync", type=Duration(), default="5m", show_default=True,
              help="How often every policy is reconciled even without a change.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--domain-interval", type=Duration(), default="1s", show_default=True,
              help="Power domains are split over their policies at most this often.")
def recommend(**kwargs: Any) -> None:
    """Action Recommender: turn each policy's state into target clocks and node budgets per node, and share the
    power domains."""
    common = common_settings(kwargs)
    settings = recommend_app.RecommendSettings(release_band=kwargs["release_band"],
                                               max_observation_age=kwargs["max_observation_age"],
                                               resync=kwargs["resync"], workers=kwargs["workers"],
                                               domain_interval=kwargs["domain_interval"])
    sys.exit(recommend_app.build(settings, common, clock=SystemClock()).run())


def _clock_range(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """MIN,MAX in MHz (e.g. 210,1500), or None."""
    if not value:
        return None
    try:
        low, high = (int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected MIN,MAX in MHz such as 210,1500, got {value!r}") from None
    if not 0 < low <= high:
        raise click.BadParameter(f"expected 0 < MIN <= MAX, got {value!r}")
    return low, high


@cli.command()
@process_options
@click.option("--node-name", default=None, envvar="NODE_NAME",
              help="This node (from the downward API); only its NodeFrequencies object is watched. Required unless "
                   "--probe.")
@click.option("--gpu-backend", type=click.Choice(["nvml", "sim", "none"]), default="nvml", show_default=True)
@click.option("--sim-url", default=None, help="Base URL of a simulated node (with --gpu-backend sim).")
@click.option("--cpufreq/--no-cpufreq", default=True, show_default=True, help="Tune CPUs through cpufreq sysfs.")
@click.option("--sysfs-root", type=click.Path(file_okay=False, path_type=Path), default=Path("/sys"),
              show_default=True, help="Where the host's /sys is mounted.")
@click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/var/lib/climatik/tuner-state.json"), show_default=True,
              help="Node-local record of original settings, so a restart after a crash restores them.")
@click.option("--dry-run", is_flag=True, help="Log and report what would be applied; touch nothing.")
@click.option("--resync", type=float, default=30.0, show_default=True,
              help="Seconds between re-checks of the hardware against the spec.")
@click.option("--gpu-baseline-clocks", default=None, callback=_clock_range, metavar="MIN,MAX",
              help="SM clock range (MHz) a released GPU is locked to instead of unlocked, for nodes whose clocks "
                   "the site locks itself (nvidia-smi -lgc); targets above MAX are held at MAX.")
@click.option("--cpu-restore-to", type=click.Choice(["hardware", "found"]), default="hardware", show_default=True,
              help="What a CPU's limit returns to: cpuinfo_max_freq, or the scaling_max_freq found before the first "
                   "change (which may be a passing thermal or firmware cap).")
@click.option("--guard-interval", type=Duration(), default=0.1, show_default=True,
              help="Time between two ticks of the node guard, which keeps the node's power budgets from the GPUs' "
                   "own readings (e.g. 100ms).")
@click.option("--guard-idle-interval", type=Duration(), default=1.0, show_default=True,
              help="Time between two readings of the node's GPU power while the node has no budget.")
@click.option("--probe", is_flag=True,
              help="Print what the tuner would see on this node (GPUs, clocks, power, MIG, cpufreq policies) and exit; "
                   "changes nothing and needs no Kubernetes access.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Format of --probe.")
def tune(**kwargs: Any) -> None:
    """Frequency Tuner: apply this node's target clocks through NVML and cpufreq."""
    common = common_settings(kwargs)
    settings = tune_app.TuneSettings(
        node_name=kwargs["node_name"] or "", gpu_backend=kwargs["gpu_backend"], sim_url=kwargs["sim_url"],
        cpufreq=kwargs["cpufreq"], sysfs_root=kwargs["sysfs_root"], state_file=kwargs["state_file"],
        dry_run=kwargs["dry_run"], resync=kwargs["resync"], gpu_baseline=kwargs["gpu_baseline_clocks"],
        cpu_original=kwargs["cpu_restore_to"], guard_interval=kwargs["guard_interval"],
        guard_idle_interval=kwargs["guard_idle_interval"])
    for option in ("guard_interval", "guard_idle_interval"):
        if kwargs[option] <= 0:
            raise click.BadParameter("must be more than zero", param_hint="--" + option.replace("_", "-"))
    if kwargs["probe"]:
        # Logs go to stderr so that stdout holds the description alone (e.g. for `--output json | jq`).
        parent = click.get_current_context().find_root().params
        log_format = parent.get("log_format", "auto")
        configure_logging(parent.get("log_level", "info"),
                          json_lines=None if log_format == "auto" else log_format == "json", stream=sys.stderr)
        click.echo(tune_app.probe(settings, output=kwargs["output"], clock=SystemClock()), nl=False)
        sys.exit(0)
    if not settings.node_name:
        raise click.UsageError("--node-name (or NODE_NAME) is required unless --probe")
    sys.exit(tune_app.build(settings, common, clock=SystemClock()).run())


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
