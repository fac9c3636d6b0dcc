"""The warehouse agent: whole fetched batches of ``events`` → the warehouse's ``events`` table.

Each record is decoded with the people worker's event contract (what it would dead-letter is
skipped and counted here: dead letters are not loaded). Exactly once: a partition's rows are
inserted as one block with a deduplication token made of topic, partition and offset range, so
an insert retried after a timeout is stored once; and when the loader gets a partition (start,
rebalance) it asks the table how far that partition is loaded, so a batch read again after a crash
skips what an earlier run inserted before its offsets committed — and puts that run's last insert
through the materialized views again, in case the crash cut it between the table and a view.
Offsets commit only after the insert. A warehouse that fails is retried with capped backoff while
the batch stays in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from cardflow.batches import BatchingApp, RecordRun, by_partition
from cardflow.codec import AvroCodec
from cardflow.connectors.warehouse import Warehouse, rederive_last_inserts
from cardflow.errors import Rejected, WarehouseError
from cardflow.events import Decoder
from cardflow.retry import until_done

MAX_BACKOFF_S = 10.0


class WarehouseMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.loaded = Counter("cardflow_warehouse_rows", "rows inserted", ["table"], registry=registry)
        self.skipped = Counter(
            "cardflow_warehouse_skipped",
            "records not loaded (not valid events)",
            ["reason"],
            registry=registry,
        )
        self.already = Counter(
            "cardflow_warehouse_already_loaded",
            "records found loaded by an earlier run (after a crash)",
            registry=registry,
        )
        self.retries = Counter("cardflow_warehouse_retries", "inserts retried", registry=registry)
        self.failing = Gauge(
            "cardflow_warehouse_failing", "1 while inserts are being retried", registry=registry
        )


def _dt(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


class EventLoader:
    """Inserts a batch's events (blocking: runs in a thread)."""

    def __init__(
        self,
        wh: Warehouse,
        decoder: Decoder,
        metrics: WarehouseMetrics,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.wh, self.decoder, self.metrics, self.sleep = wh, decoder, metrics, sleep
        self.done: dict[tuple[str, int], int] = {}  # last offset known to be in the table
        self.resumed: set[tuple[str, int]] = set()  # partitions loaded since start or rebalance

    def forget(self) -> None:
        self.done.clear()
        self.resumed.clear()

    def loaded_in_table(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Partition → the last offset the events table holds of it (absent: none), whoever
        loaded it. Blocking, not retried."""
        rows = self.wh.query(
            f"SELECT kafka_partition AS p, max(kafka_offset) AS o FROM {self.wh.database}.events "
            "WHERE kafka_topic = {t:String} AND kafka_partition IN {ps:Array(UInt32)} "
            "GROUP BY kafka_partition",
            {"t": topic, "ps": partitions},
        )
        return {int(r["p"]): int(r["o"]) for r in rows}

    def _resume(self, topic: str, partitions: list[int]) -> None:
        """Partitions this loader has not had since it started (or was rebalanced): how far the
        table holds them, and their last insert put through the views again (a crash may have cut
        it between the table and a view)."""
        held = self._retry(lambda: self.loaded_in_table(topic, partitions))
        self._retry(lambda: rederive_last_inserts(self.wh, topic, sorted(held)))
        for partition in partitions:
            key = (topic, partition)
            self.done[key] = max(self.done.get(key, -1), int(held.get(partition, -1)))
            self.resumed.add(key)

    def load(self, batch: dict[tuple[str, int], list[Any]]) -> None:
        now_ms = int(time.time() * 1000)
        ingested = _dt(now_ms)
        fresh: dict[str, list[int]] = {}
        for topic, partition in batch:
            if (topic, partition) not in self.resumed:
                fresh.setdefault(topic, []).append(partition)
        for topic, partitions in sorted(fresh.items()):
            self._resume(topic, sorted(partitions))
        for (topic, partition), records in sorted(batch.items()):
            done = self.done[(topic, partition)]
            rows = []
            for record in records:
                if record.offset <= done:
                    self.metrics.already.inc()
                    continue
                try:
                    event = self.decoder.record(record.value, now_ms)
                except Rejected as exc:
                    self.metrics.skipped.labels(exc.reason.value).inc()
                    continue
                rows.append(
                    {
                        "event_id": event.event_id,
                        "uid": event.uid,
                        "event": event.event,
                        "ts": _dt(event.ts),
                        "properties": orjson.dumps(event.properties).decode(),
                        "set_properties": orjson.dumps(event.set).decode(),
                        "source": event.source,
                        "kafka_topic": topic,
                        "kafka_partition": partition,
                        "kafka_offset": record.offset,
                        "ingested_at": ingested,
                    }
                )
            if rows:
                token = f"{topic}/{partition}/{rows[0]['kafka_offset']}-{rows[-1]['kafka_offset']}"
                self._retry(lambda r=rows, t=token: self.wh.insert("events", r, t))  # type: ignore[misc]
                self.metrics.loaded.labels("events").inc(len(rows))
            self.done[(topic, partition)] = records[-1].offset

    def _retry(self, attempt: Callable[[], Any]) -> Any:
        return retried(attempt, self.metrics, self.sleep)


def retried(attempt: Callable[[], Any], m: WarehouseMetrics, sleep: Callable[[float], None]) -> Any:
    """``attempt()`` until the warehouse takes it: capped backoff, counted, never skipped."""
    return until_done(
        attempt, WarehouseError, "the warehouse", m.retries, m.failing, sleep, cap=MAX_BACKOFF_S
    )


PROFILE_CHANGE = AvroCodec.named("ProfileChange")


class UserLoader:
    """Inserts the latest profile of each user a batch of profile-changes names (blocking).

    The contract is the ProfileChange record (``schemas/ProfileChange.avsc``, v2: the profile as
    JSON), not the changelog's storage format. ``users`` is a ReplacingMergeTree on ``version``:
    a change loaded twice (a batch read again) is the same row, and the latest version wins."""

    def __init__(
        self, wh: Warehouse, metrics: WarehouseMetrics, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.wh, self.metrics, self.sleep = wh, metrics, sleep

    def load(self, batch: dict[tuple[str, int], list[Any]]) -> None:
        updated = _dt(int(time.time() * 1000))
        for (topic, partition), records in sorted(batch.items()):
            latest: dict[str, dict[str, Any]] = {}
            for record in records:
                try:
                    change = PROFILE_CHANGE.decode(record.value)
                except Exception:  # noqa: BLE001 - not a ProfileChange: counted, not loaded
                    self.metrics.skipped.labels("not_profile_change").inc()
                    continue
                if change.get("profile") is None:
                    self.metrics.skipped.labels("no_profile").inc()  # a v1 record
                    continue
                held = latest.get(change["uid"])
                if held is None or change["version"] >= held["version"]:
                    latest[change["uid"]] = change
            rows = [_user_row(c, updated) for c in latest.values()]
            if rows:
                token = f"{topic}/{partition}/{records[0].offset}-{records[-1].offset}"
                m = self.metrics
                retried(lambda r=rows, t=token: self.wh.insert("users", r, t), m, self.sleep)  # type: ignore[misc]
                m.loaded.labels("users").inc(len(rows))


def _values(cells: Any) -> dict[str, Any]:
    """``{name: [value, ts, event_id]}`` (the standard script's cells) → ``{name: value}``."""
    if not isinstance(cells, dict):
        return {}
    return {k: v[0] for k, v in cells.items() if isinstance(v, list) and v}


def _user_row(change: dict[str, Any], updated: str) -> dict[str, Any]:
    profile = orjson.loads(change["profile"])
    events = profile.get("events")
    once = _values(profile.get("properties_once"))
    # ``properties`` is the user's properties as cards read them (user_property): the latest $set
    # value, else the $set_once one; ``properties_once`` keeps the $set_once values alone.
    merged = {**once, **_values(profile.get("properties"))}
    return {
        "uid": change["uid"],
        "properties": orjson.dumps(merged).decode(),
        "properties_once": orjson.dumps(once).decode(),
        "first_seen": _dt(int(profile.get("first_seen") or 0)),
        "last_seen": _dt(int(profile.get("last_seen") or change["max_ts"])),
        "events": sum(events.values()) if isinstance(events, dict) else 0,
        "version": change["version"],
        "updated_at": updated,
    }


def load_users(app: BatchingApp, changes: faust.TopicT, loader: UserLoader) -> None:
    """The users stage: ``profile-changes`` → the warehouse's users table."""

    async def handle(runs: list[RecordRun]) -> Awaitable[None]:
        return asyncio.get_running_loop().run_in_executor(None, loader.load, by_partition(runs))

    app.batches(changes, handle)


def load_events(app: BatchingApp, events: faust.TopicT, loader: EventLoader) -> None:
    """The load stage: ``events`` → the warehouse, acknowledged once inserted."""

    async def handle(runs: list[RecordRun]) -> Awaitable[None]:
        return asyncio.get_running_loop().run_in_executor(None, loader.load, by_partition(runs))

    app.batches(events, handle)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _forget(app: faust.App, assigned: object, **kwargs: object) -> None:
        loader.forget()
