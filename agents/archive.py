"""The archive agent: whole fetched batches of events and events-dlq → one lake object per partition.

Each batch (``archive_batch_events`` records or ``archive_batch_seconds``, whole
fetched batches from the batch runtime) is written as one object per (topic,
partition) it holds records of — more when a partition's values pass
``archive_batch_bytes`` — and acknowledged only once every object is durable.

Idempotent across crashes: a batch's offsets commit only after its objects are
written, so a restarted archive re-reads from the end of an object it wrote.
Before writing an object starting at offset ``o`` it looks for the object of that
name (the name is a function of ``o``): when a crash came after the write but before
the commit, the object is there, its header says where it ends, and the records up
to that end are acknowledged without a second write. No gap, no overlap.

A lake that does not answer (network, S3 5xx, a full disk) is retried with backoff,
for as long as it takes, while the batch stays in flight (memory stays bounded: the
runtime fetches one batch ahead); a lake that refuses (no bucket, no credentials)
stops the worker with the reason.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cardflow.batches import BatchingApp, RecordRun, by_partition
from cardflow.connectors.lake import DataLake
from cardflow.connectors.lake_objects import HEAD_BYTES, encode, object_key, span
from cardflow.errors import LakeUnavailable
from cardflow.retry import until_done

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 10.0
T = TypeVar("T")


class ArchiveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.archived = Counter("cardflow_archive_records", "records written to the lake", ["topic"],
                                registry=registry)
        self.objects = Counter("cardflow_archive_objects", "objects written to the lake", ["topic"],
                               registry=registry)
        self.bytes = Counter("cardflow_archive_bytes", "bytes written to the lake", ["topic"],
                             registry=registry)
        self.found = Counter("cardflow_archive_found", "records already in the lake (after a crash)",
                             ["topic"], registry=registry)
        self.retries = Counter("cardflow_archive_retries", "lake writes retried (the lake did not answer)",
                               registry=registry)
        self.write_seconds = Histogram("cardflow_archive_write_seconds", "writing one object",
                                       registry=registry,
                                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.failing = Gauge("cardflow_archive_lake_failing", "1 while lake writes are being retried",
                             registry=registry)
        self.last_offset = Gauge("cardflow_archive_last_offset", "last archived offset",
                                 ["topic", "partition"], registry=registry)


class Archiver:
    """Writes one batch's records to the lake (blocking: runs in a thread, see ``archive_records``)."""

    def __init__(self, lake: DataLake, fmt: str, codec: str, max_bytes: int, metrics: ArchiveMetrics,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.lake, self.fmt, self.codec, self.max_bytes = lake, fmt, codec, max_bytes
        self.metrics = metrics
        self.sleep = sleep
        # (topic, partition) → the last offset known to be in the lake (found after a restart).
        self.done_through: dict[tuple[str, int], int] = {}

    def forget(self) -> None:
        """After a rebalance: another worker may have written these partitions since."""
        self.done_through.clear()

    def write(self, batch: dict[tuple[str, int], list[Any]]) -> None:
        for (topic, partition), records in sorted(batch.items()):
            while records:
                records = self._skip_written(topic, partition, records)
                if not records:
                    break
                size, end = 0, 0
                for end, record in enumerate(records, 1):  # noqa: B007 - the split point
                    size += len(record.value or b"") + len(record.key or b"")
                    if size >= self.max_bytes:
                        break
                chunk, records = records[:end], records[end:]
                key = object_key(topic, partition, chunk[0].offset, chunk[0].timestamp, self.fmt)
                data = encode(key, chunk, self.fmt, self.codec)
                self._put(key, data)
                self.done_through[(topic, partition)] = chunk[-1].offset
                m = self.metrics
                m.archived.labels(topic).inc(len(chunk))
                m.objects.labels(topic).inc()
                m.bytes.labels(topic).inc(len(data))
                m.last_offset.labels(topic, str(partition)).set(chunk[-1].offset)

    def _skip_written(self, topic: str, partition: int, records: list[Any]) -> list[Any]:
        """``records`` without those the lake already holds: below what this worker wrote, or in an
        object a crashed run wrote (same name: same first offset) before its offsets committed."""
        done = self.done_through.get((topic, partition), -1)
        records = [r for r in records if r.offset > done] if records[0].offset <= done else records
        while records:
            first = records[0]
            key = object_key(topic, partition, first.offset, first.timestamp, self.fmt)
            head = self._retry(functools.partial(self.lake.head, key, HEAD_BYTES), key)
            if head is None:
                return records
            _, last, count = span(key, head)
            log.info("%s is in the lake already (offsets %d..%d): not written again", key, first.offset, last)
            self.metrics.found.labels(topic).inc(count)
            self.done_through[(topic, partition)] = last
            records = [r for r in records if r.offset > last]
        return records

    def _put(self, key: str, data: bytes) -> None:
        started = time.perf_counter()
        self._retry(functools.partial(self.lake.put, key, data), key)
        self.metrics.write_seconds.observe(time.perf_counter() - started)

    def _retry(self, attempt: Callable[[], T], key: str) -> T:
        return until_done(attempt, LakeUnavailable, f"writing {key} to the lake", self.metrics.retries,
                          self.metrics.failing, self.sleep, cap=MAX_BACKOFF_S)


def archive_records(app: BatchingApp, topics: list[faust.TopicT], archiver: Archiver) -> None:
    """The archive stage: every record of ``topics`` → the lake, acknowledged once durable."""

    async def handle(runs: list[RecordRun]) -> Awaitable[None]:
        batch = by_partition(runs)
        return asyncio.get_running_loop().run_in_executor(None, archiver.write, batch)

    for topic in topics:
        app.batches(topic, handle)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _forget(app: faust.App, assigned: object, **kwargs: object) -> None:
        archiver.forget()  # no batch runs meanwhile (a rebalance waits for the one in flight)
