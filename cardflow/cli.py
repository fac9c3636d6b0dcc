"""The `cardflow` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
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
    from cardflow.profiles import ScriptSet, load_scripts

    scripts = ScriptSet(load_scripts(settings.profile_scripts)).scripts  # requires: known, no cycle
    load_cards(settings.cards, [s.name for s in scripts], settings.card_params)


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


@cli.group()
def warehouse() -> None:
    """The warehouse (CARDFLOW_WAREHOUSE_URL): its schema."""


@warehouse.command("migrate")
@click.pass_context
def warehouse_migrate(ctx: click.Context) -> None:
    """Apply the warehouse's schema migrations (idempotent; refuses a newer schema).

    Workers migrate at start too; run this before an upgrade (the Helm chart's setup Job does) so
    that workers of the new version start on a migrated warehouse. Embedded chDB is opened by one
    process: run it while the warehouse worker is stopped, or let the worker do it."""
    from cardflow.connectors.warehouse import migrate, schema_version, warehouse_of

    wh = warehouse_of(_settings(ctx))
    try:
        applied = migrate(wh)
        click.echo(f"warehouse {wh.database}: schema version {schema_version(wh)}"
                   + (f" (applied {', '.join(map(str, applied))})" if applied else " (up to date)"))
    finally:
        wh.close()


@cli.group()
def lake() -> None:
    """Inspect the data lake the archive worker writes (CARDFLOW_LAKE_URL)."""


def _open_lake(settings: Settings, url: str | None = None) -> Any:
    from cardflow.connectors.lake import open_lake

    return open_lake(url or settings.effective_lake_url, settings.lake_endpoint_url, settings.lake_region,
                     settings.lake_multipart_bytes)


@lake.command("ls")
@click.option("--topic", default=None, help="Topic name without the prefix (default: events).")
@click.option("--since", default=None, help="ISO 8601 time or ms: objects holding records from then on.")
@click.option("--until", default=None, help="ISO 8601 time or ms: objects holding records before then.")
@click.pass_context
def lake_ls(ctx: click.Context, topic: str | None, since: str | None, until: str | None) -> None:
    """List archive objects with their partition, offset range and record count."""
    from cardflow.connectors.lake_objects import parse_name, span
    from cardflow.connectors.replay import lake_objects, parse_time

    settings = _settings(ctx)
    store = _open_lake(settings)
    name = settings.topic(topic or "events")
    total = 0
    for obj in lake_objects(store, name, parse_time(since), parse_time(until)):
        first, last, count = span(obj.key, store.head(obj.key, 8192) or b"")
        part = parse_name(obj.key)
        total += count
        click.echo(f"{obj.key}\tpartition {part.partition if part else '?'}\toffsets {first}..{last}\t"
                   f"{count} records\t{obj.size} bytes")
    click.echo(f"total\t{total} records")


@cli.command()
@click.option("--from", "source", required=True,
              help="s3://bucket/prefix or file:///dir (a lake), or kafka:<topic> (a topic replay).")
@click.option("--to-topic", required=True, help="Topic to write to (never the live events topic).")
@click.option("--topic", default="events", show_default=True,
              help="Which archived topic to replay from a lake (events or events-dlq, without the prefix).")
@click.option("--since", default=None, help="ISO 8601 time or ms: records from then on.")
@click.option("--until", default=None, help="ISO 8601 time or ms: records before then.")
@click.option("--glob", default=None, help="Only objects (or foreign folders) matching this pattern.")
@click.option("--layout", type=click.Choice(["cardflow", "batches"]), default="cardflow", show_default=True,
              help="batches: a foreign lake of <ISO time>-<uuid> folders of JSON-array files.")
@click.option("--rate", type=float, default=None, help="At most this many records per second.")
@click.option("--skip-corrupt", is_flag=True, help="Leave out (and list) objects that cannot be read.")
@click.option("--dry-run", is_flag=True, help="List what would be replayed; send nothing.")
@click.pass_context
def replay(ctx: click.Context, source: str, to_topic: str, topic: str, since: str | None, until: str | None,
           glob: str | None, layout: str, rate: float | None, skip_corrupt: bool, dry_run: bool) -> None:
    """Replay a period from the lake or a topic into a topic, to rebuild profiles and cards.

    Interrupt it at any time (Ctrl-C) and run the same command again: it resumes where it
    stopped, without sending a record twice.
    """
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    from cardflow.connectors import replay as r

    settings = _settings(ctx)
    since_ms, until_ms = r.parse_time(since), r.parse_time(until)
    if source.startswith("kafka:"):
        name = source.removeprefix("kafka:")
        if dry_run:
            click.echo(f"would copy {name} from {since or 'its start'} to {until or 'its end'} "
                       f"into {to_topic}")
            return
        outcome = r.replay_topic(settings, name, to_topic, since=since_ms, until=until_ms, rate=rate)
    elif layout == "batches":
        root = Path(unquote(urlparse(source).path)) if source.startswith("file://") else Path(source)
        if dry_run:
            for folder in r.batch_folders(root, glob):
                click.echo(f"{folder}\t{sum(1 for p in folder.iterdir() if p.is_file())} files")
            return
        outcome = r.replay_batches(settings, root, to_topic, glob=glob, rate=rate, skip_corrupt=skip_corrupt)
    else:
        store = _open_lake(settings, source)
        archived = settings.topic(topic)
        if dry_run:
            plan = r.plan_lake(store, archived, since_ms, until_ms, glob)
            for obj in plan.objects:
                click.echo(f"{obj.key}\t{obj.size} bytes")
            click.echo(f"would replay {len(plan.objects)} object(s), {plan.events} records, "
                       f"{plan.bytes} bytes into {to_topic}")
            return
        outcome = r.replay_lake(settings, store, archived, to_topic, since=since_ms, until=until_ms,
                                glob=glob, rate=rate, skip_corrupt=skip_corrupt)
    for line in outcome.corrupt:
        click.echo(f"skipped corrupt: {line}", err=True)
    state = "interrupted; run the same command again to resume" if outcome.interrupted else "done"
    click.echo(f"replayed {outcome.sent} record(s) into {to_topic} ({state}); {outcome.skipped_done} sent "
               f"before, {outcome.out_of_range} outside the period, {len(outcome.corrupt)} corrupt object(s)")
    if outcome.interrupted:
        ctx.exit(130)


@cli.command()
@click.argument("topology", type=click.Choice(["people", "archive", "warehouse"]))
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
    from cardflow.health import watch_health

    watch_health(app, settings)
    # The root logger stays at DEBUG under mode, so Faust's and aiokafka's per-message debug
    # calls build log records that are then dropped: a few percent of a busy worker.
    for name in ("faust", "aiokafka", "mode"):
        logging.getLogger(name).setLevel(settings.log_level.upper())
    # The main thread folds whole batches (CPU-bound Python); Faust's consumer thread needs the
    # GIL only to fetch. Handing it over every 50 ms instead of 5 ms interrupts a batch less
    # (the people benchmark of the time, 3 rounds each: median 0.456 of the ceiling vs 0.427).
    sys.setswitchinterval(0.05)
    try:
        faust.Worker(app, loglevel=settings.log_level, redirect_stdouts=False).execute_from_commandline()
    finally:  # it ends in SystemExit
        for close in getattr(app, "at_exit", ()):
            try:
                close()
            except Exception:  # the worker's own exit status stands; the failure is logged
                logging.getLogger("cardflow").exception("closing %r at exit failed", close)


@cli.command()
@click.pass_context
def api(ctx: click.Context) -> None:
    """Run the HTTP API service (health, metrics; cards and ingest as they land)."""
    from cardflow.api import run_api

    run_api(_settings(ctx))


@cli.group()
def card() -> None:
    """Try cards locally: no Kafka, the worker's own fold and card runtime."""


@card.command("run")
@click.argument("path")
@click.option("--events", "events_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Events: one JSON object per line, or a JSON array.")
@click.option("--params", default=None, help="The card's parameters, as JSON.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False),
              help="Also write a standalone HTML preview drawn by the dashboard's own code.")
@click.pass_context
def card_run(ctx: click.Context, path: str, events_path: str, params: str | None,
             html_path: str | None) -> None:
    """Fold the events with the configured profile scripts, run the cards of PATH (a .py file,
    a directory or a module) over them, and print each summary and widget."""
    import orjson

    from cardflow import runner
    from cardflow.errors import CardError

    settings = _settings(ctx)
    try:
        given = orjson.loads(params) if params else None
    except orjson.JSONDecodeError as exc:
        raise CardError(f"--params is not JSON: {exc}") from None
    if given is not None and not isinstance(given, dict):
        raise CardError("--params must be a JSON object, e.g. '{\"period\": \"weeks\"}'")
    cards, used, scripts = runner.load(path, settings, given)
    folded = runner.fold(runner.read_events(Path(events_path)), settings, scripts)
    results = runner.run((*cards, *used), folded, settings.partitions)
    mine = [r for r in results if r["id"] in {c.id for c in cards}]
    click.echo(runner.text(mine, folded))
    if html_path:
        Path(html_path).write_text(runner.preview(mine))
        click.echo(f"\npreview: {html_path}")
    if any(r["error"] for r in mine):
        sys.exit(1)


@card.command("test")
@click.argument("path")
@click.pass_context
def card_test(ctx: click.Context, path: str) -> None:
    """Run the ``examples`` of the cards of PATH: events in, expected summary or total out."""
    from cardflow import runner

    settings = _settings(ctx)
    cards, used, scripts = runner.load(path, settings)
    count = sum(len(getattr(c, "examples", ()) or ()) for c in cards)
    failures = runner.examples(cards, used, settings, scripts)
    for failure in failures:
        click.echo(f"FAIL {failure}")
    click.echo(f"{count - len(failures)} of {count} examples passed" if count else
               f"no examples in {path}: give a card examples = [{{'events': [...], 'summary': ...}}]")
    if failures or not count:
        sys.exit(1)


@cli.command()
@click.option("--rate", default=20.0, show_default=True, help="Demo events per second (0: none).")
@click.option("--history", default=60, show_default=True, type=click.IntRange(0, 3650),
              help="Days of realistic history sent first, when `events` is empty (0: none).")
@click.option("--watch", is_flag=True,
              help="Restart the people worker when a card or profile script changes.")
@click.pass_context
def dev(ctx: click.Context, rate: float, watch: bool, history: int) -> None:
    """Run everything locally: broker, topics, people worker, API and a demo stream.

    Stops everything cleanly on Ctrl-C.
    """
    from cardflow.dev import run_dev

    settings = _settings(ctx)
    _check_plugins(settings)  # the worker would refuse them too, but only after the broker started
    sys.exit(run_dev(settings, rate=rate, config=ctx.find_root().params.get("config"), watch=watch,
                     history=history))


@cli.group("import")
def import_() -> None:
    """Bring history from other tools into cardflow."""


@import_.command("bitmapist")
@click.option("--redis", "redis_url", required=True, help="The bitmapist Redis, e.g. redis://localhost:6379/0.")
@click.option("--api", "api_url", help="cardflow's API (default: the api_port setting on 127.0.0.1).")
@click.option("--token", default="", help="An API token with the admin scope (when the API has tokens).")
@click.option("--dry-run", is_flag=True, help="List the keys and what they would load; send nothing.")
@click.pass_context
def import_bitmapist(ctx: click.Context, redis_url: str, api_url: str | None, token: str,
                     dry_run: bool) -> None:
    """Load a bitmapist keyspace (trackist_* keys) into cardflow's bitmaps."""
    from cardflow import bitmap_import
    from cardflow.client import Client, ClientError

    settings = _settings(ctx)
    client = Client(api_url or f"http://127.0.0.1:{settings.api_port}", token)
    try:
        count = bitmap_import.run(redis_url, client.post, dry_run, click.echo)
    except ClientError as exc:
        raise click.ClickException(f"cardflow refused the import: {exc}") from None
    except OSError as exc:  # the API: refused, reset, timed out
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(f"cannot reach cardflow's API at {client.url}: {reason} "
                                   "(is `cardflow api` running? --api)") from None
    except Exception as exc:
        if type(exc).__module__.startswith("redis"):  # redis-py's errors: connection, auth, type
            raise click.ClickException(f"cannot read bitmapist's Redis at {redis_url}: {exc}") from None
        raise
    click.echo(f"{count} bitmapist keys {'found (dry run: nothing sent)' if dry_run else 'imported'}")


@cli.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Benchmarks beside their baselines (`cardflow bench --help`); needs a source checkout."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "cli.py").exists():
        raise click.ClickException(
            f"the benchmarks live in the source tree (bench/), not in the installed package; run "
            f"`cardflow bench` from a checkout installed with `pip install -e .` (looked in {root})")
    sys.path.insert(0, str(root))
    from bench.cli import main as bench_main

    sys.exit(bench_main(list(args)))


def main() -> None:
    cli(prog_name="cardflow")
