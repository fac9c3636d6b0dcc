"""The profiles agent: events → profiles table → profile-changes, or → events-dlq.

Per batch: decode and validate every record, dead-letter what cannot be
used, re-route records that sit on the wrong partition, fold each user's
events with every profile script, write each changed profile back once,
and emit one profile change per changed user.

Runs with ``concurrency=1`` because it updates a table. Profiles are written
to the table's RocksDB store directly and everything the batch produces —
the table's changelog records, profile changes, dead letters, re-routed
events — goes through one librdkafka producer (``BatchSink``), flushed
before the batch is acknowledged (Faust's own per-message produce path was
the worker's bottleneck; see docs/benchmarks.md). ``take_events`` acks a
batch even when the body raises, so an unexpected error, or a record the
broker did not store, ends the process at once, before anything commits;
the batch is then consumed again and deduplicated, and each profile is
written back, so the changelog catches up with the local store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import faust
from aiokafka.partitioner import murmur2
from faust.streams import _current_event  # noqa: PLC2701 - see _as_current
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cardflow.codec import AvroCodec
from cardflow.connectors.producer import BatchSink
from cardflow.events import Decoder, Event, Reason, Rejected
from cardflow.profiles import ProfileScript, encode_value, fold_events

log = logging.getLogger(__name__)
DEAD_LETTER = AvroCodec.named("DeadLetter")
FLUSH_TIMEOUT_S = 60.0
PROFILE_CHANGE = AvroCodec.named("ProfileChange")


def dead_letter(message: faust.types.Message, reason: str, text: str,
                detail: str | None = None) -> bytes:
    """An Avro DeadLetter keeping the original bytes and where they came from."""
    return DEAD_LETTER.encode({
        "reason": reason, "message": text, "key": message.key, "value": message.value,
        "topic": message.topic, "partition": message.partition, "offset": message.offset,
        "timestamp": int(message.timestamp * 1000), "dead_at": int(time.time() * 1000),
        "detail": detail,
    })


def uid_partition(key: bytes, partitions: int) -> int:
    """The partition of a uid key under the Java (murmur2) partitioner."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class PeopleMetrics:
    """Counters proving one in, one out: consumed = folded + duplicates + dead_lettered + rerouted."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter("cardflow_people_consumed", "records consumed from events",
                                registry=registry)
        self.folded = Counter("cardflow_people_folded", "events folded into profiles", registry=registry)
        self.duplicates = Counter("cardflow_people_duplicates", "re-delivered or re-sent events skipped",
                                  registry=registry)
        self.dead_lettered = Counter("cardflow_people_dead_lettered", "records sent to events-dlq",
                                     ["reason"], registry=registry)
        self.rerouted = Counter("cardflow_people_rerouted",
                                "records re-sent to their uid's partition", registry=registry)
        self.batch_seconds = Histogram("cardflow_people_batch_seconds", "time to process one batch",
                                       registry=registry,
                                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.batch_size = Histogram("cardflow_people_batch_size", "records per batch", registry=registry,
                                    buckets=(1, 10, 100, 500, 1000, 2000, 5000))
        self.lag = Gauge("cardflow_people_lag", "records in events not yet processed", ["partition"],
                         registry=registry)


@dataclass
class Topics:
    events: faust.TopicT
    changes: faust.TopicT
    dlq: faust.TopicT


class ProfileFolder:
    """Processes one batch of the events topic. Synchronous on purpose (see the module doc)."""

    def __init__(self, profiles: faust.Table, topics: Topics, decoder: Decoder,
                 scripts: tuple[ProfileScript, ...], horizon_ms: int, partitions: int,
                 metrics: PeopleMetrics, sink: BatchSink) -> None:
        self.profiles = profiles
        self.store = profiles.data  # writes here skip Faust's changelog: the sink sends it
        self.changelog = profiles.changelog_topic.get_topic_name()
        self.sink = sink
        self.topics = topics
        self.names = {"events": topics.events.get_topic_name(), "changes": topics.changes.get_topic_name(),
                      "dlq": topics.dlq.get_topic_name()}
        self.decoder = decoder
        self.scripts = scripts
        self.horizon_ms = horizon_ms
        self.partitions = partitions
        self.metrics = metrics
        self.last_offsets: dict[int, int] = {}
        self.on_folded: Callable[[set[int]], None] | None = None  # partitions whose profiles changed

    def process(self, batch: list[faust.EventT]) -> None:
        metrics = self.metrics
        metrics.consumed.inc(len(batch))
        metrics.batch_size.observe(len(batch))
        by_uid: dict[str, list[tuple[Event, int]]] = defaultdict(list)
        records: dict[str, dict[int, faust.EventT]] = defaultdict(dict)
        now_ms = int(time.time() * 1000)
        for record in batch:
            message = record.message
            self.last_offsets[message.partition] = message.offset
            try:
                event = self.decoder.record(message.value, now_ms)
            except Rejected as exc:
                self._dead_letter(message, exc.reason.value, exc.message)
                continue
            home = uid_partition(event.key, self.partitions)
            if message.partition != home:
                # Produced without the uid key or with another partitioner: send the original
                # bytes to the uid's partition, so one user's events stay on one partition.
                self.sink.produce(
                    self.names["events"], event.key, message.value, home,
                    headers={"cardflow-rerouted-from": f"{message.partition}/{message.offset}".encode()})
                metrics.rerouted.inc()
                continue
            by_uid[event.uid].append((event, message.offset))
            records[event.uid][message.offset] = record
        changed: set[int] = set()
        for uid, events in by_uid.items():
            if self._fold_user(uid, events, records[uid]):
                changed.add(records[uid][events[0][1]].message.partition)
        if changed and self.on_folded is not None:
            self.on_folded(changed)

    def _fold_user(self, uid: str, events: list[tuple[Event, int]],
                   records: dict[int, faust.EventT]) -> bool:
        """Fold and write back one user's events; True when the profile changed."""
        try:
            stored = self.profiles[uid]  # one store lookup; Table.get() makes two
        except KeyError:
            stored = None
        result = fold_events(stored, events, self.scripts, self.horizon_ms)
        for _, offset, script, exc in result.failed:
            self._dead_letter(records[offset].message, Reason.PROFILE_SCRIPT_ERROR.value,
                              f"profile script {script!r} raised {type(exc).__name__}: {exc}", script)
        anchor = records[events[-1][1]]
        self.metrics.folded.inc(result.folded)
        self.metrics.duplicates.inc(result.duplicates)
        value, key, partition = encode_value(result.value), uid.encode(), anchor.message.partition
        with _as_current(anchor):
            self.store[uid] = value
        # Written back even when nothing changed: a re-delivered batch then brings the
        # changelog up to what the local store already holds.
        self.sink.produce(self.changelog, key, value, partition)
        if not result.changed:
            return False
        meta = result.value["meta"]
        self.sink.produce(self.names["changes"], key, PROFILE_CHANGE.encode({
            "uid": uid, "version": meta["version"], "changed": result.changed,
            "max_ts": meta["max_ts"], "partition": partition}), partition)
        return True

    def note_delivered(self) -> None:
        """After a flush: note in each RocksDB partition how far the changelog is known to hold
        it, so Faust's recovery starts there instead of at the changelog's beginning."""
        for (topic, partition), offset in self.sink.delivered.items():
            if topic == self.changelog:
                self.store.set_persisted_offset(TP(topic, partition), offset)
        self.sink.delivered.clear()

    def _dead_letter(self, message: faust.types.Message, reason: str, text: str,
                     detail: str | None = None) -> None:
        self.sink.produce(self.names["dlq"], message.key, dead_letter(message, reason, text, detail),
                          uid_partition(message.key, self.partitions) if message.key else message.partition)
        self.metrics.dead_lettered.labels(reason).inc()


class _as_current:
    """Faust's store and changelog put a table write on the partition of the *current* event.
    In a batch that is the batch's last record, so each user's write is made under one of
    that user's own records instead (Faust has no public API for this)."""

    def __init__(self, event: faust.EventT) -> None:
        self._ref = weakref.ref(event)

    def __enter__(self) -> None:
        self._token = _current_event.set(self._ref)

    def __exit__(self, *_: object) -> None:
        _current_event.reset(self._token)


def register_profiles_agent(app: faust.App, topics: Topics, folder: ProfileFolder,
                            batch_size: int, batch_within: float) -> faust.types.AgentT:
    @app.agent(topics.events, name="profiles", concurrency=1)
    async def fold(stream: faust.StreamT[bytes]) -> None:
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(batch_size, within=batch_within):  # type: ignore[attr-defined]
            started = time.perf_counter()
            try:
                folder.process(list(batch))
                try:
                    await loop.run_in_executor(None, folder.sink.flush, FLUSH_TIMEOUT_S)
                except asyncio.CancelledError:
                    # Stopping: the batch is acknowledged on the way out, so finish its writes first.
                    folder.sink.flush(FLUSH_TIMEOUT_S)
                    raise
                folder.note_delivered()
            except asyncio.CancelledError:
                raise
            except BaseException:
                log.critical("profiles batch failed; exiting before its offsets commit", exc_info=True)
                logging.shutdown()
                os._exit(70)
            folder.metrics.batch_seconds.observe(time.perf_counter() - started)

    return fold
