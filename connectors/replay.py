"""Replay: records from the lake (or a Kafka topic, or a foreign lake) back into a Kafka topic.

A replayed record keeps its key, value, timestamp, headers and — when the target has
as many partitions as the source — its partition, so a consumer cannot tell it from
the original except by the ``cardflow-replay`` header (where it came from).

Resumable without duplicates: a checkpoint file records, per source object (or
partition), how many of its records the broker acknowledged; it is written after
every object and when the replay is interrupted (SIGINT/SIGTERM: produce stops,
what is in flight is flushed, the checkpoint saved), and a resumed replay skips
what it records. (A replay killed with SIGKILL resumes from the last saved
checkpoint and may send again what followed it: dedup by event id covers events.)
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import EVENTS, admin_client, list_topics
from cardflow.connectors.kafka_read import watermarks
from cardflow.connectors.lake import DataLake, LakeObject
from cardflow.connectors.lake_objects import Archived, decode, parse_name, span
from cardflow.errors import BrokerUnavailable, ConfigError, CorruptObject, DeliveryError, LakeError
from cardflow.events import event_from_object
from cardflow.kafka_clients import consumer_config, producer_config

REPLAY_HEADER = "cardflow-replay"
CHUNK = 20_000  # records of a topic replay sent (and checkpointed) at a time


@dataclass
class Plan:
    """What a replay would send."""

    objects: list[LakeObject] = field(default_factory=list)
    events: int = 0
    bytes: int = 0
    first_ts: int | None = None
    last_ts: int | None = None


@dataclass
class Outcome:
    sent: int = 0
    skipped_done: int = 0  # sent by an earlier run (the checkpoint)
    out_of_range: int = 0  # outside --since/--until
    corrupt: list[str] = field(default_factory=list)
    interrupted: bool = False


def parse_time(text: str | None) -> int | None:
    """ms since the epoch from ISO 8601 (``2026-12-01``, ``2026-12-01T10:00:00Z``) or a number of ms."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not a time: use ISO 8601 (2026-12-01T10:00:00Z) or ms since "
                          "the epoch") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


class Checkpoint:
    """Per source unit (an object key, or topic:partition) the records already acknowledged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, int] = {}
        if path.exists():
            try:
                self.done = json.loads(path.read_text())["done"]
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"checkpoint {path} is not readable ({exc}); remove it to replay "
                                  "from the start") from exc

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"done": self.done}, sort_keys=True))
        os.replace(tmp, self.path)


def default_checkpoint(settings: Settings, *parts: Any) -> Path:
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
    return settings.data_dir / "replay" / f"{digest}.json"


def _in_range(ts: int, since: int | None, until: int | None) -> bool:
    return (since is None or ts >= since) and (until is None or ts < until)


def lake_objects(lake: DataLake, topic: str, since: int | None, until: int | None,
                 glob: str | None = None, listed: list[LakeObject] | None = None) -> list[LakeObject]:
    """The topic's objects that may hold records in [since, until), by partition then offset.
    An object's hour is its first record's: one that starts before ``since`` may still hold later
    records, so objects are cut at the hour before ``since`` and filtered record by record."""
    found = []
    for obj in lake.list(f"topic={topic}/") if listed is None else listed:
        name = parse_name(obj.key)
        if name is None or (glob and not fnmatch.fnmatch(obj.key, glob)):
            continue
        hour = _hour_of(obj.key)
        if hour is not None and until is not None and hour >= until:
            continue
        found.append((name.partition, name.first_offset, obj))
    found.sort(key=lambda t: (t[0], t[1]))
    keep = []
    for i, (partition, _, obj) in enumerate(found):
        nxt = found[i + 1] if i + 1 < len(found) else None
        # An object whose successor (same partition) starts in an hour before ``since`` ends before it.
        if since is not None and nxt is not None and nxt[0] == partition:
            next_hour = _hour_of(nxt[2].key)
            if next_hour is not None and next_hour + 3_600_000 <= since:
                continue
        keep.append(obj)
    return keep


def _hour_of(key: str) -> int | None:
    try:
        dt = key.split("/dt=")[1].split("/")[0]
        hour = key.split("/hour=")[1].split("/")[0]
        return int(datetime.fromisoformat(f"{dt}T{hour}:00:00+00:00").timestamp() * 1000)
    except (IndexError, ValueError):
        return None


class Replayer:
    """Produces records to ``target``; stops cleanly on SIGINT/SIGTERM (``interrupted``)."""

    def __init__(self, settings: Settings, target: str, rate: float | None = None) -> None:
        self.settings, self.target, self.rate = settings, target, rate
        # Delivery reports for failures only: a Python callback per record cost a third of the replay.
        self.producer = Producer(producer_config(settings, **{
            "linger.ms": 50, "queue.buffering.max.messages": 200_000, "delivery.report.only.error": True,
            "on_delivery": self._delivered}))
        admin = admin_client(settings)
        topics = list_topics(admin, settings, settings.kafka_admin_timeout_ms / 1000)
        if target not in topics:
            raise ConfigError(f"the replay target topic {target!r} does not exist: create it (e.g. "
                              "`CARDFLOW_TOPIC_PREFIX=rebuild- cardflow topics create`)")
        self.partitions = len(topics[target].partitions)
        self.interrupted = threading.Event()
        self._failed: list[str] = []
        self._started = time.monotonic()

    def handle_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.interrupted.set())

    def send_unit(self, records: list[Archived], origin: str, done: int, source_partitions: int | None,
                  since: int | None, until: int | None, outcome: Outcome) -> int:
        """Produce ``records[done:]`` (those in [since, until)); returns how many of ``records``
        are now behind the replay: all, or fewer when it was interrupted. Every record produced is
        acknowledged when this returns (the flush waits for each, or this raises)."""
        same_layout = source_partitions is None or source_partitions == self.partitions
        header = (REPLAY_HEADER, origin.encode())
        stop = len(records)
        for index in range(done, len(records)):
            if self.interrupted.is_set():
                outcome.interrupted, stop = True, index
                break
            record = records[index]
            if not _in_range(record.timestamp, since, until):
                outcome.out_of_range += 1
                continue
            kwargs: dict[str, Any] = {"key": record.key, "value": record.value,
                                      "headers": [*record.headers, header], "timestamp": record.timestamp}
            if same_layout and record.partition >= 0:
                kwargs["partition"] = record.partition
            while True:
                try:
                    self.producer.produce(self.target, **kwargs)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            outcome.sent += 1
            self._pace(outcome.sent)
        left = self.producer.flush(60)
        if self._failed:
            raise DeliveryError(f"{len(self._failed)} replayed record(s) were refused, e.g. "
                                f"{self._failed[0]}")
        if left:
            raise BrokerUnavailable(f"{left} replayed record(s) not acknowledged within 60s; run the replay "
                                    "again to resume")
        return stop

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failed.append(f"{self.target}: {err.str()}")

    def _pace(self, sent: int) -> None:
        if self.rate and sent % 100 == 0:
            ahead = sent / self.rate - (time.monotonic() - self._started)
            if ahead > 0:
                time.sleep(ahead)


def replay_lake(settings: Settings, lake: DataLake, topic: str, target: str, *, since: int | None = None,
                until: int | None = None, glob: str | None = None, rate: float | None = None,
                skip_corrupt: bool = False, checkpoint: Checkpoint | None = None,
                progress: Callable[[int], None] | None = None) -> Outcome:
    """Replay ``topic``'s archived records from the lake into ``target``."""
    refuse_live_target(settings, target)
    replayer = Replayer(settings, target, rate)
    replayer.handle_signals()
    outcome = Outcome()
    checkpoint = checkpoint or Checkpoint(
        default_checkpoint(settings, lake.url, topic, target, since, until, glob))
    listed = list(lake.list(f"topic={topic}/"))  # once: an S3 listing is a request per 1,000 objects
    source_partitions = _source_partitions(listed)
    for obj in lake_objects(lake, topic, since, until, glob, listed):
        done = checkpoint.done.get(obj.key, 0)
        try:
            records = decode(obj.key, lake.get(obj.key))
        except CorruptObject as exc:
            if not skip_corrupt:
                raise
            outcome.corrupt.append(f"{obj.key}: {exc}")
            continue
        if done >= len(records):
            outcome.skipped_done += len(records)
            continue
        outcome.skipped_done += done
        acked = replayer.send_unit(records, f"{lake.url}/{obj.key}", done, source_partitions, since, until,
                                   outcome)
        checkpoint.done[obj.key] = acked
        checkpoint.save()
        if progress:
            progress(outcome.sent)
        if outcome.interrupted:
            break
    return outcome


def _source_partitions(listed: list[LakeObject]) -> int | None:
    partitions = {n.partition for o in listed if (n := parse_name(o.key)) is not None}
    return max(partitions) + 1 if partitions else None


def plan_lake(lake: DataLake, topic: str, since: int | None, until: int | None, glob: str | None) -> Plan:
    """What ``replay_lake`` would send: objects, records (from their headers), bytes, time range."""
    plan = Plan()
    for obj in lake_objects(lake, topic, since, until, glob):
        head = lake.head(obj.key, 8192)
        _, _, count = span(obj.key, head or b"")
        plan.objects.append(obj)
        plan.events += count
        plan.bytes += obj.size
        hour = _hour_of(obj.key)
        if hour is not None:
            plan.first_ts = hour if plan.first_ts is None else min(plan.first_ts, hour)
            plan.last_ts = hour if plan.last_ts is None else max(plan.last_ts, hour)
    return plan


def refuse_live_target(settings: Settings, target: str) -> None:
    """Replaying old events into the live events topic would count them twice: the people worker
    dedups by event id only within ``dedup_horizon_days``, and by offset only within one topic."""
    if target == settings.topic(EVENTS):
        raise ConfigError(
            f"refusing to replay into the live events topic {target!r}: events older than "
            f"dedup_horizon_days ({settings.dedup_horizon_days:g}) would be folded twice. Replay into a "
            "fresh topic and rebuild beside the live app instead: --to-topic rebuild-events, then "
            "CARDFLOW_TOPIC_PREFIX=rebuild- cardflow topics create and cardflow worker people (README, "
            "\"Reprocessing\")")


def replay_topic(settings: Settings, source: str, target: str, *, since: int | None = None,
                 until: int | None = None, rate: float | None = None,
                 checkpoint: Checkpoint | None = None) -> Outcome:
    """Copy ``source``'s records from the offsets for ``since`` up to its end now (or ``until``)."""
    refuse_live_target(settings, target)
    if source == target:
        raise ConfigError(f"replaying {source!r} into itself would never end: choose another --to-topic")
    replayer = Replayer(settings, target, rate)
    replayer.handle_signals()
    outcome = Outcome()
    checkpoint = checkpoint or Checkpoint(default_checkpoint(settings, "kafka", source, target, since, until))
    consumer = Consumer(consumer_config(settings, f"{settings.topic_prefix}cardflow-replay"))
    timeout = settings.kafka_admin_timeout_ms / 1000
    try:
        meta = list_topics(consumer, settings, timeout, source)[source]
        if meta.error is not None:
            raise ConfigError(f"cannot read {source!r}: {meta.error.str()}")
        partitions = sorted(meta.partitions)
        starts = {p: watermarks(consumer, source, p, timeout)[0] for p in partitions}
        if since is not None:
            wanted = [TopicPartition(source, p, since) for p in partitions]
            found = consumer.offsets_for_times(wanted, timeout)
            for tp in found:
                if tp.offset >= 0:
                    starts[tp.partition] = tp.offset
                else:
                    starts[tp.partition] = watermarks(consumer, source, tp.partition, timeout)[1]
        for p in partitions:
            unit = f"kafka:{source}:{p}"
            start = max(starts[p], checkpoint.done.get(unit, -1))
            high = watermarks(consumer, source, p, timeout)[1]
            if start >= high:
                continue
            # In chunks: memory stays bounded whatever the partition holds; a checkpoint per chunk.
            for records in _chunks(_read_partition(consumer, source, p, start, high, timeout), CHUNK):
                acked = replayer.send_unit(records, f"kafka:{source}", 0, len(partitions), None, until,
                                           outcome)
                if acked:
                    checkpoint.done[unit] = records[acked - 1].offset + 1
                checkpoint.save()
                if outcome.interrupted:
                    return outcome
    finally:
        consumer.close()
    return outcome


def _chunks(records: Iterator[Archived], size: int) -> Iterator[list[Archived]]:
    chunk: list[Archived] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_partition(consumer: Consumer, topic: str, partition: int, start: int, end: int,
                    timeout: float) -> Iterator[Archived]:
    consumer.assign([TopicPartition(topic, partition, start)])
    while True:
        msg = consumer.poll(timeout)
        if msg is None:
            raise BrokerUnavailable(f"no progress reading {topic}[{partition}] for {timeout:g}s")
        error = msg.error()
        if error is not None:
            raise BrokerUnavailable(f"reading {topic}[{partition}]: {error.str()}")
        offset = msg.offset() or 0
        if offset >= end:
            return
        kind, ts = msg.timestamp()
        yield Archived(topic, partition, offset, ts, 1 if kind == 2 else 0, msg.key(), msg.value(),
                       list(msg.headers() or []))
        if offset + 1 >= end:
            return


# --- foreign lakes: the "batches" layout of uncoordinated writers --------------------------------


def batch_folders(root: Path, glob: str | None) -> list[Path]:
    """``<ISO start>-<uuid>`` folders under ``root`` matching ``glob``, oldest first."""
    if not root.is_dir():
        raise LakeError(f"{root} is not a directory")
    folders = [p for p in root.iterdir() if p.is_dir() and (glob is None or fnmatch.fnmatch(p.name, glob))]
    return sorted(folders, key=lambda p: p.name)


def replay_batches(settings: Settings, root: Path, target: str, *, glob: str | None = None,
                   rate: float | None = None, skip_corrupt: bool = False,
                   checkpoint: Checkpoint | None = None) -> Outcome:
    """Replay a foreign lake: each folder's numbered files, each a JSON array of self-describing
    objects, sent as JSON values keyed by the uid the ``sources`` mappings find (none: no key;
    the people worker then dead-letters the object with its reason)."""
    refuse_live_target(settings, target)
    replayer = Replayer(settings, target, rate)
    replayer.handle_signals()
    outcome = Outcome()
    checkpoint = checkpoint or Checkpoint(default_checkpoint(settings, "batches", str(root), target, glob))
    mappings = settings.mappings
    for folder in batch_folders(root, glob):
        files = sorted((p for p in folder.iterdir() if p.is_file()), key=_numbered)
        for path in files:
            unit = f"{folder.name}/{path.name}"
            try:
                objects = orjson.loads(path.read_bytes())
                if not isinstance(objects, list):
                    raise ValueError("not a JSON array")
            except ValueError as exc:
                if not skip_corrupt:
                    raise CorruptObject(f"{path}: not a JSON array of objects ({exc}); fix or remove it, or "
                                        "replay with --skip-corrupt") from exc
                outcome.corrupt.append(f"{path}: {exc}")
                continue
            records = [Archived(target, -1, n, _object_ts(obj, mappings), 0, _uid_key(obj, mappings),
                                orjson.dumps(obj)) for n, obj in enumerate(objects)]
            done = checkpoint.done.get(unit, 0)
            acked = replayer.send_unit(records, str(path), done, None, None, None, outcome)
            checkpoint.done[unit] = acked
            checkpoint.save()
            if outcome.interrupted:
                return outcome
    return outcome


def _numbered(path: Path) -> tuple[int, str]:
    digits = "".join(c for c in path.stem if c.isdigit())
    return (int(digits) if digits else sys.maxsize, path.name)


def _uid_key(obj: Any, mappings: Any) -> bytes | None:
    try:
        return event_from_object(obj, mappings).uid.encode()
    except Exception:  # noqa: BLE001 - the worker dead-letters it with the reason
        return None


def _object_ts(obj: Any, mappings: Any) -> int:
    try:
        return event_from_object(obj, mappings).ts
    except Exception:  # noqa: BLE001 - the record then gets the time it is sent
        return int(time.time() * 1000)
