"""The batch runtime: whole fetched batches of a topic, handed to a handler, with Faust keeping
the group. Every use of a private name of faust, aiokafka or mode in cardflow is in this module
(a test checks it; ruff's SLF rule is off here only), against the versions pinned exactly in
pyproject.toml (tests/unit/test_pinned_internals.py fails when one is gone).

Faust delivers every record on its own: a Message, a conductor callback, a
task per record (``wait_first``), a stream queue, an Event, an ack. That
costs some 50 µs a record, several times what folding it costs, and under
rebalances its per-record path was seen to skip records (the cards
partition-move test lost ~30 events of one partition in 1 run of 3).

``BatchingConsumer`` keeps everything else of Faust — group membership, the
co-partitioning assignor, table recovery and standbys, commits — and changes
one thing: records of a *batch topic* are not delivered one by one but
collected into a batch and handed to the topic's handler with one await.
Each batch topic has its own ``size`` (records) and ``within`` (seconds),
defaulting to the app's ``batch_size`` / ``batch_within``: a batch ends when
one of its topics holds ``size`` records, or when ``within`` of one of its
topics has passed and the broker holds no more past it (a backlog fills
batches to their size).

Records of a batch topic come as ``RecordRun``s: the records of one broker
record batch, as aiokafka's C parser made them, with no ``ConsumerRecord``
built for each (aiokafka's Python layer took ~2 µs a record, on the consumer
thread that shares the GIL with the handler; see ``run_records``).

Contract of a handler ``async def handle(runs) -> Awaitable[None] | None``:
- ``runs`` are ``RecordRun``s, in offset order per partition, all from
  partitions this worker owns in the current generation.
- It returns None once the batch's effects are durable, or, sooner, an
  awaitable that resolves when they are (e.g. a producer's flush). Every
  record is acknowledged (committed with Faust's next commit) only then.
  Meanwhile the next batch is fetched, but the handler is not called again
  before the awaitable resolved: one batch in flight, acknowledged in order.
- It may await. A rebalance that starts while a batch is in flight waits for
  it (``BatchingApp.batch_idle``), so a partition moves to its next owner only
  after the batch is written; that batch is then not acknowledged and the next
  owner re-reads it (it must deduplicate).
- If it raises, or its awaitable does, nothing of the batch is acknowledged
  and the worker stops.

Faust's bookkeeping copied here follows faust 0.15.3's ``transport/consumer.py``:
``_acked``/``_acked_index``/``_n_acked`` under ``ack_lock`` (as ``Consumer.ack``),
gaps as ``_add_gap``, records dropped, never skipped, across generations (as
``_wait_next_records``' callers). Two things are left to Faust's own code on
purpose: commits (``broker_commit_every`` counts ``_n_acked``, which the batch
ack raises by the batch's size, so a commit follows as Faust's would) and
``track_tp_end_offset`` (Faust's lag monitor, which the per-record path updates
and the people app replaces with its own lag gauge).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from aiokafka.consumer.fetcher import READ_COMMITTED, FetchResult, PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP
from faust.types.tuples import ack_lock

from cardflow.retry import stoppable

log = logging.getLogger(__name__)
BACKLOG_WAIT = 0.05  # seconds a poll waits for a backlog's next fetch (it returns as records arrive)
# Empty polls past its age after which a batch ends even though the broker holds more: a partition
# the fetcher no longer serves (paused, moved) must not hold the batch, and its handler, back.
MAX_EMPTY_POLLS = 20


class RecordRun:
    """Consecutive records of one partition, in offset order: aiokafka's records as its C
    parser makes them (``offset``, ``timestamp``, ``key``, ``value``, ``headers``).

    A run read from the broker holds one stored record batch, still compressed, and parses
    it when ``records`` is first read (by the handler, not the consumer thread): a batch can
    then be cut at ``batch_size`` and the rest kept for the next one at the cost of its
    compressed bytes. ``span`` is its size by offsets, known without parsing it.
    """

    __slots__ = ("topic", "partition", "span", "first_offset", "last_offset", "_stored", "_start",
                 "_records")

    def __init__(self, topic: str, partition: int, records: list[Any]) -> None:
        self.topic = topic
        self.partition = partition
        self._records: list[Any] | None = records
        self._stored: Any = None
        self._start = 0
        self.span = len(records)
        self.first_offset = int(records[0].offset) if records else -1
        self.last_offset = int(records[-1].offset) if records else -1

    @classmethod
    def stored(cls, topic: str, partition: int, batch: Any, start: int, aborted: bool = False) -> RecordRun:
        """A stored record batch's records from offset ``start`` on, parsed when first read; a
        control batch (a transaction marker) or a batch of an aborted transaction holds no
        records but its offsets."""
        run = cls(topic, partition, [])
        run.first_offset, run.last_offset = max(start, batch.base_offset), batch.next_offset - 1
        if not (batch.is_control_batch or aborted):
            run._records, run._stored, run._start = None, batch, start
            run.span = batch.next_offset - run.first_offset
        return run

    @property
    def records(self) -> list[Any]:
        if self._records is None:
            records = list(self._stored)
            if records and records[0].offset < self._start:  # fetched from inside the batch
                records = [record for record in records if record.offset >= self._start]
            self._records, self._stored = records, None
        return self._records

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"<RecordRun {self.topic}[{self.partition}] ..{self.last_offset}>"

    def consumer_record(self, record: Any) -> ConsumerRecord[bytes, bytes]:
        """One of the run's records with its topic and partition (for dead letters)."""
        key, value = record.key, record.value
        return ConsumerRecord(self.topic, self.partition, record.offset, record.timestamp,
                              record.timestamp_type, key, value, None,
                              -1 if key is None else len(key), -1 if value is None else len(value),
                              tuple(record.headers))


BatchHandler = Callable[[list[RecordRun]], Awaitable["Awaitable[None] | None"]]


@dataclass(frozen=True)
class BatchTopic:
    """A batch topic's handler and batch bounds (see the module doc)."""

    handler: BatchHandler
    size: int
    within: float
    first: bool = False  # handled before the batch's other topics (a cheap handler others wait on)


def by_partition(runs: list[RecordRun]) -> dict[tuple[str, int], list[Any]]:
    """A batch's records by (topic, partition), in offset order, as aiokafka's parser made them;
    partitions whose runs hold no record (transaction markers) left out."""
    batch: dict[tuple[str, int], list[Any]] = collections.defaultdict(list)
    for run in runs:
        batch[(run.topic, run.partition)].extend(run.records)
    return {k: v for k, v in batch.items() if v}


def run_records(partition_records: PartitionRecords) -> Iterator[RecordRun]:
    """What aiokafka's ``PartitionRecords`` yields, a stored record batch at a time: a
    ``RecordRun`` per batch instead of a ``ConsumerRecord`` per record (aiokafka 0.14's
    ``_unpack_records``, whose fields and helpers this uses). Reading committed records, a
    batch of an aborted transaction is a run of no records (its offsets are acknowledged).
    """
    tp, memory = partition_records._tp, partition_records._records
    committed_only = partition_records._isolation_level == READ_COMMITTED
    while memory.has_next():
        batch = memory.next_batch()
        if partition_records._check_crcs and not batch.validate_crc():
            raise CorruptRecordException(f"Invalid CRC - {tp}")  # refetched, as aiokafka does
        aborted = committed_only and _aborted(partition_records, batch)
        start = partition_records.next_fetch_offset
        # Before the yield: a consumer that stops after this run resumes after it.
        partition_records.next_fetch_offset = batch.next_offset
        if batch.next_offset > start:
            yield RecordRun.stored(tp.topic, tp.partition, batch, start, aborted)


def _aborted(partition_records: PartitionRecords, batch: Any) -> bool:
    """Whether ``batch`` belongs to an aborted transaction: aiokafka's test, on the fetch's list
    of aborted transactions (each starts at an offset and ends at its producer's abort marker)."""
    if batch.producer_id is None:
        return False
    partition_records._consume_aborted_up_to(batch.base_offset)
    if batch.is_control_batch and partition_records._contains_abort_marker(batch):
        partition_records._aborted_producers.discard(batch.producer_id)
    return bool(batch.is_transactional and batch.producer_id in partition_records._aborted_producers)


class RunFetches(collections.OrderedDict):  # type: ignore[type-arg]
    """aiokafka's fetcher's buffer of fetched partitions (``Fetcher._records``), yielding
    ``RecordRun``s for the batch topics: a fetch result is made a run reader as it is stored."""

    def __init__(self, topics: Collection[str]) -> None:
        super().__init__()
        self.topics = topics

    def __setitem__(self, tp: Any, result: Any) -> None:
        if tp.topic in self.topics and isinstance(result, FetchResult):
            partition_records = result._partition_records
            partition_records._records_iterator = run_records(partition_records)
        super().__setitem__(tp, result)


class BatchingConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, reading committed records, whose aiokafka fetcher hands out the
    batch topics as runs."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read committed whatever the processing guarantee: the events of a transaction its
        # producer aborted were never written, for cardflow as for any Kafka reader.
        consumer._isolation_level = "read_committed"  # read by start(), which builds the fetcher
        return consumer

    def highwater(self, tp: TP) -> int:
        """Where this consumer's reading ends: the last stable offset (an open transaction's
        first offset, else the highwater mark)."""
        consumer = self._ensure_consumer()
        stable = consumer.last_stable_offset(tp)
        return consumer.highwater(tp) if stable is None or stable < 0 else stable

    async def on_start(self) -> None:
        await super().on_start()
        app = self.consumer.app
        assert isinstance(app, BatchingApp)
        fetcher = self._ensure_consumer()._fetcher
        fetches = RunFetches(app.batch_topics.keys())  # a live view: topics added later count
        for tp, result in fetcher._records.items():  # none yet: nothing is assigned before start
            fetches[tp] = result
        fetcher._records = fetches


class BatchingConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, delivering the records of the app's batch topics in batches."""

    # Runs fetched past the last batch's end, with the poll's active partitions and generation.
    _carried: tuple[Mapping[TP, list[Any]] | None, Any, int] | None = None

    def _new_consumer_thread(self) -> BatchingConsumerThread:
        return BatchingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs in the worker
        try:
            await self._drain_batches(fetcher)
        except asyncio.CancelledError:
            # Faust's fetcher (0.15.3 ``_Fetcher._fetcher``) treats a cancellation during a
            # rebalance as "restart me" and calls ``self.supervisor.wakeup()``, which a stopping
            # worker's fetcher does not have: SIGTERM mid-rebalance ended in AttributeError and
            # exit 1. When the app itself is stopping, the cancellation is the stop: return.
            if self.app.should_stop:
                return
            raise

    async def _drain_batches(self, fetcher: Any) -> None:
        app = self.app
        assert isinstance(app, BatchingApp)
        fetcher_stopped = fetcher._stopped.is_set
        in_flight: asyncio.Future[None] | None = None  # the previous batch, until it is durable
        while not (self._stopped.is_set() or fetcher_stopped()):
            batch, count, generation = await self._collect(app)
            if in_flight is not None:
                await in_flight  # raises if the batch's writes failed: nothing more is handled
                in_flight = None
            # Processed unless the generation moved (as Faust's own path does): a batch dropped
            # while a rebalance is merely starting would be skipped, with nothing seeking back.
            if count and self._current(generation):
                app.batch_idle.clear()
                durable: list[Awaitable[None]] = []
                try:
                    for topic in sorted(batch, key=lambda t: not app.batch_topics[t].first):
                        pending = await app.batch_topics[topic].handler(batch[topic])
                        if pending is not None:
                            durable.append(pending)
                except BaseException:
                    app.batch_idle.set()
                    raise
                # Settles while the next batch is fetched (the fetch is the consumer thread's work).
                in_flight = asyncio.ensure_future(self._settle(batch, generation, durable))

    async def _settle(self, batch: dict[str, list[Any]], generation: int,
                      durable: list[Awaitable[None]]) -> None:
        """Acknowledge a handled batch once its effects are durable (and it is still ours)."""
        app = self.app
        assert isinstance(app, BatchingApp)
        try:
            for pending in durable:
                await pending
            if self._current(generation) and not app.rebalancing:
                self._ack_all(batch)
        finally:
            app.batch_idle.set()

    def _current(self, generation: int) -> bool:
        """Records fetched in ``generation`` may still be delivered (Faust's own test)."""
        return self.flow_active and self.app.consumer_generation_id == generation

    async def _collect(self, app: BatchingApp) -> tuple[dict[str, list[Any]], int, int]:
        """Fetch until one batch topic holds its ``size`` records or one's ``within`` has passed;
        records of other topics (changelogs, other agents' topics) go through Faust's
        per-message path. Returns the batch, its size and the generation it was fetched in.

        One poll can hand out more than a batch (all that aiokafka buffered, a fetch per
        partition): the runs past a topic's ``size`` start the next batch, still compressed.

        Records are dropped, never skipped: every rebalance ends with Faust seeking each stream
        partition back to its committed offset, so what is dropped here is read again."""
        topics = app.batch_topics
        batch: dict[str, list[Any]] = {}
        counts: dict[str, int] = {}
        generation = -1
        ends: dict[TP, int] = {}  # the batch's last offset per partition
        started = time.monotonic()
        empty_polls = 0
        while True:
            deadline = started + min((topics[t].within for t in (batch or topics)), default=app.batch_within)
            if self._carried is not None:
                records, active, fetched_in = self._carried
                self._carried = None
            else:
                wait = deadline - time.monotonic()
                records, active = await self._wait_next_records(wait if wait > 0 else BACKLOG_WAIT)
                fetched_in = app.consumer_generation_id
            if self.should_stop or not self.flow_active:
                await self._reread(batch, records)  # stopping, or a rebalance stopped the flow
                return {}, 0, fetched_in
            if fetched_in != generation:
                await self._reread(batch, None)  # fetched before the rebalance
                batch, counts, generation, ends = {}, {}, fetched_in, {}
            left: dict[TP, list[Any]] = {}
            full = False
            for tp, tp_records in (records or {}).items():
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    await self._reread({tp.topic: tp_records} if tp.topic in topics else {}, None)
                    continue
                spec = topics.get(tp.topic)
                if spec is None:
                    await self._deliver(tp, tp_records, generation)
                    continue
                count, taken = counts.get(tp.topic, 0), 0
                for run in tp_records:
                    if count >= spec.size:
                        left[tp] = tp_records[taken:]
                        break
                    count += run.span
                    taken += 1
                counts[tp.topic] = count
                full = full or count >= spec.size
                if taken:
                    batch.setdefault(tp.topic, []).extend(tp_records[:taken])
                    ends[tp] = tp_records[taken - 1].last_offset
            if left:
                self._carried = (left, active, generation)  # a full batch, and more
            total = sum(counts.values())
            if full:
                return batch, total, generation
            deadline = started + min((topics[t].within for t in (batch or topics)), default=app.batch_within)
            late = time.monotonic() >= deadline
            empty_polls = empty_polls + 1 if late and not records else 0
            if (late or (total and not records)) and (
                    not self._behind(ends, active) or empty_polls >= MAX_EMPTY_POLLS):
                return batch, total, generation

    async def _reread(self, batch: Mapping[str, list[Any]], records: Mapping[TP, list[Any]] | None) -> None:
        """Seek the partitions of runs fetched but not handled back to their first offset, so they
        are fetched again: dropped, never skipped, whether or not a rebalance seeks them (Faust's
        recovery seeks stream partitions to their committed offsets, but runs can be dropped
        without a rebalance: a partition paused between the fetch and this check)."""
        first: dict[TP, int] = {}
        for topic, runs in batch.items():
            for run in runs:
                tp = TP(topic, run.partition)
                first[tp] = min(first.get(tp, run.first_offset), run.first_offset)
        for tp, runs in (records or {}).items():
            if tp.topic in self.app.batch_topics and runs:  # type: ignore[attr-defined]
                first[tp] = min(first.get(tp, runs[0].first_offset), runs[0].first_offset)
        if not first:
            return
        assigned = self.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                log.info("runs of %s from offset %d were fetched but not handled: read again", tp, offset)
                await self.seek(tp, offset)

    def _behind(self, ends: dict[TP, int], active: Collection[TP] | None) -> bool:
        """Whether the broker holds more readable records past the batch (a backlog; up to the
        last stable offset, as an open transaction's records are not readable yet): then the
        batch fills to ``batch_size`` rather than ending after ``batch_within``, which only
        bounds the wait for records not yet written. (When aiokafka still built a
        ConsumerRecord per record, a batch of a backlog was cut at some 20k records by the
        clock, whatever its size.)"""
        for tp, offset in ends.items():
            if active is not None and tp not in active:
                continue  # not fetched now (paused, or being moved): nothing more will come
            high = self.highwater(tp)
            if high is not None and high > offset + 1:
                return True
        return False

    async def _deliver(self, tp: TP, records: list[Any], generation: int) -> None:
        """Faust's own path, record by record, for topics that are not batched."""
        for record in records:
            if not self._current(generation):
                return
            offset = record.offset
            read = self._read_offset[tp]
            if read is not None and offset < read:
                continue  # already delivered (Faust drops these too)
            if read and offset - read > 1 and self.app.topics.acks_enabled_for(tp.topic):
                await self._add_gap(tp, read + 1, offset)
            await self.wait_first(self.callback(self._to_message(tp, record)), self.suspend_flow.wait())
            self._read_offset[tp] = offset

    def _ack_all(self, batch: dict[str, list[Any]]) -> None:
        """What ``Consumer.ack`` does per message, once per batch, and what Faust's own path
        does for offsets that hold no record (transaction markers, compacted records): they
        are acknowledged as gaps (those after the batch's last record as offsets), so commits
        move past them at once."""
        for topic, runs in batch.items():
            spans: dict[int, tuple[int, int]] = {}  # partition → the batch's first and last offset
            by_partition: dict[int, list[int]] = {}  # partition → its records' offsets
            for run in runs:
                first, _ = spans.get(run.partition, (run.first_offset, 0))
                spans[run.partition] = (first, run.last_offset)  # runs come in offset order
                by_partition.setdefault(run.partition, []).extend([r.offset for r in run.records])
            for partition, offsets in by_partition.items():
                tp = TP(topic, partition)
                first, last = spans[partition]
                read = self._read_offset[tp]
                if read and read + 1 < first:  # offsets between batches, as Faust's path sees them
                    first = read + 1
                if len(offsets) != last - first + 1:
                    trailing: list[int] = []
                    for start, end in _holes(first, last, offsets):
                        if end == last:  # acked as offsets: Faust merges gaps below its last ack only
                            trailing.extend(range(start, end + 1))
                        else:
                            self._add_gap_now(tp, start, end)
                    offsets.extend(trailing)
                # Under faust's ack_lock, as 0.15.3's Consumer.ack keeps this bookkeeping (shared
                # with Message.ack on other threads): once per partition per batch.
                with ack_lock:
                    committed = self._committed_offset[tp]
                    index = self._acked_index[tp]
                    fresh = [o for o in offsets if (committed is None or o >= committed) and o not in index]
                    index.update(fresh)
                    self._acked[tp].extend(fresh)
                    self._n_acked += len(fresh)
                    self._read_offset[tp] = last

    def _add_gap_now(self, tp: TP, start: int, end: int) -> None:
        """Faust's ``_add_gap`` (offsets ``start``..``end`` need no ack), without its yield."""
        committed = self._committed_offset[tp]
        if committed is not None:
            start = max(start, committed + 1)
        if start <= end:
            gaps = self._gap[tp]
            gaps.addi(start, end + 1)
            gaps.merge_overlaps()


def _holes(first: int, last: int, offsets: list[int]) -> Iterator[tuple[int, int]]:
    """The ranges of ``first``..``last`` that ``offsets`` (ascending) leave out."""
    expected = first
    for offset in offsets:
        if offset > expected:
            yield expected, offset - 1
        expected = offset + 1
    if expected <= last:
        yield expected, last


class BatchingTransport(AIOKafkaTransport):
    Consumer = BatchingConsumer


class BatchingApp(faust.App):
    """A Faust app whose consumer can hand whole batches of a topic to a handler."""

    def __init__(self, *args: Any, batch_size: int = 5000, batch_within: float = 0.1,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_topics: dict[str, BatchTopic] = {}
        self.batch_size, self.batch_within = batch_size, batch_within  # each topic's default
        self.batch_idle = asyncio.Event()  # set while no batch is being handled
        self.batch_idle.set()
        self.on_partitions_revoked.connect(self._wait_for_batch)  # type: ignore[arg-type]
        # Set when the worker starts to stop: sinks retrying a write (``pause``) give the batch up.
        self.stopping = threading.Event()
        self.pause = stoppable(self.stopping)
        self.on_before_shutdown.connect(self._stop_retrying)  # type: ignore[arg-type]
        # What the worker command closes after the app has stopped, before the interpreter exits.
        self.at_exit: list[Callable[[], None]] = []
        # Stages add what the health endpoints should also say (read from the health thread).
        self.health_reports: dict[str, Callable[[], Any]] = {}

    def _stop_retrying(self, app: faust.App, **kwargs: Any) -> None:
        self.stopping.set()

    def _new_transport(self) -> Any:
        return BatchingTransport(self.conf.broker_consumer, self)

    def batches(self, topic: faust.TopicT, handler: BatchHandler, *, size: int | None = None,
                within: float | None = None, first: bool = False) -> None:
        """Subscribe to ``topic`` and hand its records to ``handler`` in batches of up to ``size``
        records or ``within`` seconds (the app's defaults when not given; see the module doc);
        ``first``: in a batch of several topics, this one's handler is called before the others."""
        self.topics.add(topic)
        self.batch_topics[topic.get_topic_name()] = BatchTopic(
            handler, self.batch_size if size is None else size,
            self.batch_within if within is None else within, first)

    def progress(self) -> dict[Any, tuple[int | None, int | None]]:
        """Per assigned partition of a batch topic: the last offset handled and the highwater mark
        (read from any thread: the health server's)."""
        consumer = getattr(self, "_consumer", None)
        if consumer is None:
            return {}
        out: dict[Any, tuple[int | None, int | None]] = {}
        for tp in list(consumer.assignment()):
            if tp.topic in self.batch_topics:
                try:
                    high = consumer.highwater(tp)
                except Exception:  # noqa: BLE001 - not fetched yet: unknown
                    high = None
                out[tp] = (consumer._read_offset.get(tp), high)
        return out

    @property
    def recovering(self) -> bool:
        """Whether a table is being recovered from its changelog (rebalances end with it)."""
        return bool(self.rebalancing or getattr(self, "in_recovery", False))

    async def _wait_for_batch(self, app: faust.App, revoked: Any, **kwargs: Any) -> None:
        await self.batch_idle.wait()  # the batch in flight is written before its partitions move


# --- a table's RocksDB, as Faust's rocksdb store keeps it ------------------------------------------

FAUST_KEY_PREFIX = b"__faust"  # Faust keeps its changelog offset among a partition's keys


def is_table_key(key: bytes) -> bool:
    """Whether a key read from a partition's RocksDB is the table's, not Faust's bookkeeping."""
    return not key.startswith(FAUST_KEY_PREFIX)


def partition_db(store: Any, partition: int) -> Any:
    """The rocksdict ``Rdict`` holding ``partition`` of a table's store (``table.data``)."""
    return store._db_for_partition(partition)


def read_stored(store: Any, partition: int, keys: list[bytes]) -> list[tuple[bytes, bytes | None]] | None:
    """The stored values of ``keys`` in ``partition`` of a table's store (None for a deleted
    key); None when the partition's database is not open here (being moved, or never opened).
    Blocking: RocksDB reads, from a thread."""
    db = store._dbs.get(partition)  # never opened here by us: Faust opens a partition's DB itself
    if db is None:
        return None
    try:
        return [(key, db.get(key)) for key in keys]
    except Exception:  # noqa: BLE001 - closed under us by a rebalance: the next pass reads it whole
        return None


def partition_directory(store: Any, partition: int) -> Path:
    """The directory of ``partition``'s RocksDB in a table's store (read by the card maps)."""
    return Path(store.partition_path(partition))
