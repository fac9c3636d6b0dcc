"""The `cardflow` command line."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from cardflow.config import Settings, load_settings
from cardflow.errors import CardflowError


class _UserError(click.ClickException):
    """Printed as `Error: …` with the error's exit code, never as a traceback."""

    def __init__(self, error: CardflowError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code

    def format_message(self) -> str:
        return self.message


class _Commands(click.Group):
    """Every command's :class:`CardflowError` (a user mistake, an unreachable broker) ends here,
    once, as one line and an exit code; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CardflowError as exc:
            raise _UserError(exc) from exc


def _check_plugins(settings: Settings) -> None:
    """Load the profile scripts and cards: a mistake in them is said before anything starts."""
    from cardflow.cards import load_cards
    from cardflow.profiles import load_scripts

    load_cards(settings.cards, [s.name for s in load_scripts(settings.profile_scripts)], settings.card_params)


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj or load_settings(ctx.find_root().params.get("config"))
    ctx.obj = settings
    return settings


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="CARDFLOW_CONFIG",
              help="YAML settings file (also CARDFLOW_CONFIG). CARDFLOW_* variables override it.")
@click.version_option(package_name="cardflow")
def cli(config: str | None) -> None:
    """cardflow: real-time people analytics on Kafka.

    Start everything locally with `cardflow dev`. Settings come from
    CARDFLOW_* environment variables and an optional YAML file; see README.
    """


@cli.group()
def kafka() -> None:
    """Manage a local single-node Kafka broker for development (KRaft, no ZooKeeper)."""


@kafka.command("fetch")
@click.option("--refresh", is_flag=True, help="Download again even when the cache looks complete.")
@click.pass_context
def kafka_fetch(ctx: click.Context, refresh: bool) -> None:
    """Download the pinned Kafka jars with Maven into the cache (once)."""
    from cardflow.local_kafka import LocalKafka

    broker = LocalKafka(_settings(ctx))
    broker.fetch(refresh=refresh)
    click.echo(f"Kafka {broker.version} jars in {broker.libs}")


@kafka.command("start")
@click.pass_context
def kafka_start(ctx: click.Context) -> None:
    """Start the local broker (fetching Kafka first if needed) and print its address."""
    from cardflow.local_kafka import LocalKafka

    status = LocalKafka(_settings(ctx)).start()
    click.echo(f"Kafka {status}")
    click.echo(status.bootstrap)


@kafka.command("stop")
@click.pass_context
def kafka_stop(ctx: click.Context) -> None:
    """Stop the local broker: SIGTERM, wait, then SIGKILL. Does nothing if it is stopped."""
    from cardflow.local_kafka import LocalKafka

    stopped = LocalKafka(_settings(ctx)).stop()
    click.echo("Kafka stopped" if stopped else "Kafka was not running")


@kafka.command("status")
@click.pass_context
def kafka_status(ctx: click.Context) -> None:
    """Say whether the local broker runs and where. Exit code 0 when running, 3 when not."""
    from cardflow.local_kafka import LocalKafka

    status = LocalKafka(_settings(ctx)).status()
    click.echo(f"Kafka {status}")
    ctx.exit(0 if status.running else 3)


@cli.group()
def topics() -> None:
    """Create and check cardflow's Kafka topics."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create the topics with CARDFLOW_PARTITIONS partitions. Idempotent.

    Refuses when a topic exists with another partition count.
    """
    from cardflow.connectors.kafka_admin import ensure_topics

    for name, outcome in sorted(ensure_topics(_settings(ctx)).items()):
        click.echo(f"{name}: {outcome}")


@cli.group()
def dlq() -> None:
    """Inspect and replay dead letters: events the people topology could not use."""


@dlq.command("count")
@click.pass_context
def dlq_count(ctx: click.Context) -> None:
    """Count dead letters by reason."""
    from cardflow.connectors.dlq import count_by_reason

    counts = count_by_reason(_settings(ctx))
    for reason, n in sorted(counts.items()):
        click.echo(f"{reason}\t{n}")
    click.echo(f"total\t{sum(counts.values())}")


@dlq.command("show")
@click.option("--reason", help="Only this reason code (e.g. not_json, missing_uid).")
@click.option("--limit", default=20, show_default=True, help="Show at most this many (0: all).")
@click.pass_context
def dlq_show(ctx: click.Context, reason: str | None, limit: int) -> None:
    """Print dead letters as JSON lines: reason, message, source offset, key and value."""
    import json

    from cardflow.connectors.dlq import read_all

    shown = 0
    for letter in read_all(_settings(ctx)):
        if reason and letter.reason != reason:
            continue
        click.echo(json.dumps(letter.summary(), ensure_ascii=False))
        shown += 1
        if limit and shown >= limit:
            break


@dlq.command("replay")
@click.option("--reason", help="Only dead letters with this reason code.")
@click.option("--dry-run", is_flag=True, help="Count what would be re-submitted; send nothing.")
@click.pass_context
def dlq_replay(ctx: click.Context, reason: str | None, dry_run: bool) -> None:
    """Re-submit dead letters to the events topic after a fix (e.g. a corrected field mapping).

    Each dead letter is re-submitted once: progress is kept per reason filter.
    Re-submitted events dedup by event_id, so a repeat is harmless.
    """
    from cardflow.connectors.dlq import replay

    sent, skipped = replay(_settings(ctx), reason=reason, dry_run=dry_run)
    verb = "would re-submit" if dry_run else "re-submitted"
    click.echo(f"{verb} {sent} dead letter(s); {skipped} skipped (by the reason filter, or truncated)")


@cli.command()
@click.argument("topology", type=click.Choice(["people", "archive"]))
@click.pass_context
def worker(ctx: click.Context, topology: str) -> None:
    """Run one topology's Faust worker until SIGTERM or Ctrl-C."""
    import faust

    from cardflow.connectors.kafka_admin import check_record_limits
    from cardflow.topologies import TOPOLOGIES

    settings = _settings(ctx)
    _check_plugins(settings)
    check_record_limits(settings)  # before a record the broker cannot take stops the worker
    app = TOPOLOGIES[topology](settings)
    # The root logger stays at DEBUG under mode, so Faust's and aiokafka's per-message debug
    # calls build log records that are then dropped: a few percent of a busy worker.
    for name in ("faust", "aiokafka", "mode"):
        logging.getLogger(name).setLevel(settings.log_level.upper())
    # The main thread folds whole batches (CPU-bound Python); Faust's consumer thread needs the
    # GIL only to fetch. Handing it over every 50 ms instead of 5 ms interrupts a batch less
    # (bench/people.py, 3 rounds each: median 0.456 of the ceiling vs 0.427).
    sys.setswitchinterval(0.05)
    faust.Worker(app, loglevel=settings.log_level, redirect_stdouts=False).execute_from_commandline()


@cli.command()
@click.pass_context
def api(ctx: click.Context) -> None:
    """Run the HTTP API service (health, metrics; cards and ingest as they land)."""
    from cardflow.api import run_api

    run_api(_settings(ctx))


@cli.command()
@click.option("--rate", default=20.0, show_default=True, help="Demo events per second (0: none).")
@click.pass_context
def dev(ctx: click.Context, rate: float) -> None:
    """Run everything locally: broker, topics, people worker, API and a demo stream.

    Stops everything cleanly on Ctrl-C.
    """
    from cardflow.dev import run_dev

    settings = _settings(ctx)
    _check_plugins(settings)  # the worker would refuse them too, but only after the broker started
    sys.exit(run_dev(settings, rate=rate, config=ctx.find_root().params.get("config")))


def main() -> None:
    cli(prog_name="cardflow")
