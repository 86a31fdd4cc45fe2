"""The `climatik` command: one entry point, a subcommand per long-running controller."""

from __future__ import annotations

import sys

import click

from climatik import __version__
from climatik.logconfig import configure_logging


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


def _not_implemented(name: str) -> None:
    click.echo(f"climatik {name}: not implemented yet", err=True)
    sys.exit(2)


@cli.command()
def monitor() -> None:
    """Power Usage Monitor: measure each policy's power and decide whether capping is required."""
    _not_implemented("monitor")


@cli.command()
def recommend() -> None:
    """Action Recommender: turn each policy's state into target clocks per node."""
    _not_implemented("recommend")


@cli.command()
def tune() -> None:
    """Frequency Tuner: apply this node's target clocks through NVML and cpufreq."""
    _not_implemented("tune")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
