"""The batch acknowledgement does what Faust's per-message ``Consumer.ack`` does, once per batch."""

from __future__ import annotations

import asyncio
import struct
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.fetcher import READ_COMMITTED, FetchResult, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition
from faust.types import TP
from intervaltree import IntervalTree

from cardflow.batches import BatchingApp, BatchingConsumer, BatchTopic, RecordRun, RunFetches

pytestmark = pytest.mark.unit


def run(partition: int, *offsets: int) -> RecordRun:
    return RecordRun("events", partition, [SimpleNamespace(offset=offset) for offset in offsets])


def marker(partition: int, offset: int) -> RecordRun:
    """A transaction marker's run: an offset, no record."""
    run = RecordRun("events", partition, [])
    run.first_offset = run.last_offset = offset
    return run


def bare_consumer() -> BatchingConsumer:
    consumer = object.__new__(BatchingConsumer)  # only the ack bookkeeping is exercised
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._acked_index = defaultdict(set)
    consumer._acked = defaultdict(list)
    consumer._read_offset = defaultdict(lambda: None)
    consumer._n_acked = 0
    consumer._gap = defaultdict(IntervalTree)
    return consumer


def test_acks_every_offset_once_and_none_below_the_committed_one() -> None:
    consumer = bare_consumer()
    consumer._committed_offset[TP("events", 1)] = 10
    batch = {"events": [run(0, 5), run(1, 9, 10), run(0, 6), run(1, 11)]}
    consumer._ack_all(batch)
    consumer._ack_all({"events": [run(1, 11)]})  # re-delivered: not acked twice
    assert consumer._acked[TP("events", 0)] == [5, 6]
    assert consumer._acked[TP("events", 1)] == [10, 11]  # 9 is below the committed offset
    assert consumer._n_acked == 4
    assert consumer._read_offset[TP("events", 0)] == 6
    assert consumer._new_offset(TP("events", 1)) == 12  # what Faust's next commit sends


def test_offsets_without_records_are_acked_as_gaps_so_commits_pass_them() -> None:
    consumer = bare_consumer()
    tp = TP("events", 0)
    consumer._committed_offset[tp] = consumer._read_offset[tp] = 10  # as Faust's seek leaves them
    # Markers at 13 and 17, records 15-16 compacted away, and a marker closing the batch.
    consumer._ack_all({"events": [run(0, 10, 11, 12), marker(0, 13), run(0, 14), run(0, 18, 19),
                                  marker(0, 20)]})
    assert consumer._new_offset(tp) == 21  # one commit past every hole, the trailing marker too
    consumer._committed_offset[tp] = 21  # what the commit leaves
    consumer._ack_all({"events": [run(0, 23, 24)]})  # 21-22 between batches: markers of a dropped poll
    assert consumer._new_offset(tp) == 25


class FakeApp(BatchingApp):
    def __init__(self) -> None:  # only what the drain loop reads
        self.batch_topics: dict[str, BatchTopic] = {}
        self.batch_size, self.batch_within = 5000, 0.1
        self.batch_idle = asyncio.Event()
        self.batch_idle.set()
        self.rebalancing = False


class ScriptedConsumer(BatchingConsumer):
    """Hands out scripted batches; the drain loop, the handler calls and the acks are the real ones."""

    def __init__(self, app: FakeApp, batches: list[list[RecordRun]]) -> None:
        self.app = app  # type: ignore[misc]
        self.batches = batches
        self.fetching: list[int] = []  # how many batches had been handled when each fetch started
        self.handled = 0
        self._stopped = asyncio.Event()
        for name, value in vars(bare_consumer()).items():
            setattr(self, name, value)

    async def _collect(self, app: BatchingApp) -> tuple[dict[str, list[Any]], int, int]:
        self.fetching.append(self.handled)
        await asyncio.sleep(0)
        if not self.batches:
            self._stopped.set()
            return {}, 0, 1
        runs = self.batches.pop(0)
        return {"events": runs}, sum(map(len, runs)), 1

    def _current(self, generation: int) -> bool:
        return True


def test_a_batch_is_acked_once_durable_while_the_next_is_fetched() -> None:
    asyncio.run(_acked_once_durable())


async def _acked_once_durable() -> None:
    app = FakeApp()
    consumer = ScriptedConsumer(app, [[run(0, 0, 1)], [run(0, 2)]])
    written: list[asyncio.Future[None]] = []
    acked_when_called: list[list[int]] = []

    async def handle(runs: list[RecordRun]) -> asyncio.Future[None]:
        consumer.handled += 1
        acked_when_called.append(list(consumer._acked[TP("events", 0)]))
        written.append(asyncio.get_running_loop().create_future())
        return written[-1]

    app.batch_topics["events"] = BatchTopic(handle, app.batch_size, app.batch_within)  # type: ignore[arg-type]
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    drain = asyncio.ensure_future(consumer._drain_messages(fetcher))
    for _ in range(10):
        await asyncio.sleep(0)
    # The first batch is handled, the second fetched, but nothing is acked or handled further
    # until the first batch's writes are durable.
    assert consumer.fetching == [0, 1] and consumer.handled == 1
    assert consumer._acked[TP("events", 0)] == [] and not app.batch_idle.is_set()
    written[0].set_result(None)
    for _ in range(10):
        await asyncio.sleep(0)
    assert acked_when_called == [[], [0, 1]]  # the second call came after the first ack
    assert consumer._acked[TP("events", 0)] == [0, 1] and not app.batch_idle.is_set()
    written[1].set_result(None)
    await asyncio.wait_for(drain, 5)  # the loop settles the last batch before it stops
    assert consumer._acked[TP("events", 0)] == [0, 1, 2] and app.batch_idle.is_set()


def test_a_failed_write_acks_nothing_and_stops_the_loop() -> None:
    asyncio.run(_failed_write())


async def _failed_write() -> None:
    app = FakeApp()
    consumer = ScriptedConsumer(app, [[run(0, 0)], [run(0, 1)]])

    async def handle(runs: list[RecordRun]) -> asyncio.Future[None]:
        consumer.handled += 1
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError("broker refused"))
        return failed

    app.batch_topics["events"] = BatchTopic(handle, app.batch_size, app.batch_within)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="broker refused"):
        await asyncio.wait_for(consumer._drain_messages(SimpleNamespace(_stopped=asyncio.Event())), 5)
    assert consumer.handled == 1 and consumer._acked[TP("events", 0)] == []


class FetchingConsumer(BatchingConsumer):
    """Scripted polls (None: a poll that found nothing) and highwater marks; ``_collect`` is real."""

    def __init__(self, app: FakeApp, polls: list[list[RecordRun] | None], highwater: int) -> None:
        self.app = app  # type: ignore[misc]
        self.polls = polls
        self.high = highwater
        self._buffered_partitions: set[TP] = set()

    @property
    def should_stop(self) -> bool:  # type: ignore[override]
        return False

    @property
    def flow_active(self) -> bool:  # type: ignore[override]
        return True

    async def _wait_next_records(self, timeout: float) -> tuple[dict[TP, list[RecordRun]], None]:  # noqa: ASYNC109 - overrides Faust
        records = self.polls.pop(0) if self.polls else None
        return ({TP("events", 0): records} if records else {}), None

    def highwater(self, tp: TP) -> int:
        return self.high

    def assignment(self) -> set[TP]:
        return set()  # nothing to seek back here: the scripted polls stand for what is fetched


def collect(polls: list[list[RecordRun] | None], highwater: int, batches: int = 1,
            rebalance_after: int | None = None) -> list[list[int]] | list[int]:
    """The offsets of ``batches`` batches collected in a row (one batch: its offsets); the
    generation moves after batch ``rebalance_after``."""
    app = FakeApp()
    # The clock alone would end every batch at once.
    app.batch_topics["events"] = BatchTopic(None, size=5, within=0.0)  # type: ignore[arg-type]
    app.consumer_generation_id = 1  # type: ignore[misc]
    consumer = FetchingConsumer(app, polls, highwater)
    out = []
    for n in range(batches):
        batch, count, generation = asyncio.run(consumer._collect(app))
        offsets = [record.offset for run in batch.get("events", []) for record in run.records]
        assert count == len(offsets) and generation == app.consumer_generation_id
        out.append(offsets)
        if n == rebalance_after:
            app.consumer_generation_id = 2  # type: ignore[misc]
    return out if batches > 1 else out[0]


def test_a_backlog_fills_the_batch_past_the_clock_and_empty_polls() -> None:
    polls = [[run(0, 0, 1)], None, [run(0, 2, 3), run(0, 4, 5)]]
    assert collect(polls, highwater=100) == [0, 1, 2, 3, 4, 5]  # ends once full (5 or more)


def test_a_worker_that_keeps_up_ends_the_batch_at_once() -> None:
    polls = [[run(0, 0, 1)], None, [run(0, 2)]]
    assert collect(polls, highwater=2) == [0, 1]  # nothing past offset 1: no waiting


def stored_batch(base: int, values: list[bytes], control: bool = False, producer: int = -1,
                 keys: list[bytes] | None = None) -> bytes:
    """A record batch as the broker stores it (lz4), at ``base``; a control batch if asked; a
    transactional one when it has a ``producer``."""
    # Control batches uncompressed, as brokers write them (aiokafka reads a marker without inflating).
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0 if control else 3,
                                        is_transactional=int(producer >= 0),
                                        producer_id=producer, producer_epoch=0 if producer >= 0 else -1,
                                        base_sequence=0 if producer >= 0 else -1, batch_size=1 << 20)
    for delta, value in enumerate(values):
        key = keys[delta] if keys else b"k%d" % delta
        builder.append(delta, timestamp=1_700_000_000_000 + delta, key=key, value=value,
                       headers=[("h", b"%d" % delta)])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)  # the base offset is outside the CRC
    if control:
        data[22] |= 0x20  # attributes: control batch
        struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
    return bytes(data)


class Position:
    """aiokafka's assignment state of one partition, as ``FetchResult`` reads and moves it."""

    def __init__(self, position: int) -> None:
        self.active, self.paused, self.position = True, False, position

    def state_value(self, tp: Any) -> Position:
        return self

    def consumed_to(self, position: int) -> None:
        self.position = position


def fields(record: Any) -> tuple[Any, ...]:
    return record.offset, record.timestamp, record.key, record.value, tuple(record.headers)


@pytest.mark.parametrize("max_runs", [None, 1])
def test_runs_hold_what_aiokafka_would_hand_out_and_move_the_position_alike(max_runs: int | None) -> None:
    buffer = (stored_batch(10, [b"a", b"b", b"c", b"d", b"e"]) + stored_batch(15, [b"\x00\x00"], control=True)
              + stored_batch(16, [b"f", b"g", b"h"]))
    tp = TopicPartition("events", 3)

    def partition_records() -> PartitionRecords:  # fetched from offset 12: inside the first batch
        return PartitionRecords(tp, MemoryRecords(buffer), [], 12, None, None, True, 0)

    expected = [fields(record) for record in partition_records()]
    assert [offset for offset, *_ in expected] == [12, 13, 14, 16, 17, 18]
    fetches = RunFetches({"events"})
    position = Position(12)
    fetches[tp] = FetchResult(tp, assignment=position, partition_records=partition_records(), backoff=0)
    runs = fetches[tp].getall(max_runs)
    assert all(run.topic == "events" and run.partition == 3 for run in runs)
    # Known unparsed; the transaction marker at 15 is a run of no records, acknowledged as a gap.
    assert [(run.span, run.first_offset, run.last_offset) for run in runs] == [
        (3, 12, 14), (0, 15, 15), (3, 16, 18)][:len(runs)]
    got = [fields(record) for run in runs for record in run.records]
    if max_runs is None:
        assert got == expected and position.position == 19
    else:  # stopped after the first run: the next fetch starts right after it
        assert got == expected[:3] and position.position == 15
        assert runs[0].consumer_record(runs[0].records[0]).offset == 12
    fetches[TopicPartition("other", 0)] = FetchResult(  # topics not batched: aiokafka's records
        tp, assignment=Position(12), partition_records=partition_records(), backoff=0)
    assert [fields(r) for r in fetches[TopicPartition("other", 0)].getall()] == expected


ABORT, COMMIT = b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"  # control record keys


def test_reading_committed_an_aborted_transaction_is_a_run_of_offsets_only() -> None:
    # Producer 7 aborts a transaction (offsets 10-11, its abort marker at 13); producer 8's,
    # interleaved, commits (12, marker at 14); then a plain record (15), and producer 7 again,
    # committed this time (16, marker at 17).
    buffer = (stored_batch(10, [b"a", b"b"], producer=7) + stored_batch(12, [b"c"], producer=8)
              + stored_batch(13, [b""], control=True, producer=7, keys=[ABORT])
              + stored_batch(14, [b""], control=True, producer=8, keys=[COMMIT])
              + stored_batch(15, [b"d"]) + stored_batch(16, [b"e"], producer=7)
              + stored_batch(17, [b""], control=True, producer=7, keys=[COMMIT]))
    tp = TopicPartition("events", 0)

    def partition_records() -> PartitionRecords:  # aborted transactions as the fetch response has them
        return PartitionRecords(tp, MemoryRecords(buffer), [(7, 10)], 10, None, None, True, READ_COMMITTED)

    expected = [fields(record) for record in partition_records()]
    assert [value for _, _, _, value, _ in expected] == [b"c", b"d", b"e"]
    fetches = RunFetches({"events"})
    position = Position(10)
    fetches[tp] = FetchResult(tp, assignment=position, partition_records=partition_records(), backoff=0)
    runs = fetches[tp].getall()
    assert [fields(record) for run in runs for record in run.records] == expected
    assert [(run.first_offset, run.last_offset, len(run)) for run in runs] == [
        (10, 11, 0), (12, 12, 1), (13, 13, 0), (14, 14, 0), (15, 15, 1), (16, 16, 1), (17, 17, 0)]
    assert position.position == 18
    consumer = bare_consumer()  # the aborted records' offsets are acknowledged with the rest
    consumer._ack_all({"events": runs})
    assert consumer._new_offset(TP("events", 0)) == 18


def test_runs_past_the_batch_size_start_the_next_batch_in_order() -> None:
    polls = [[run(0, 0, 1, 2), run(0, 3, 4, 5), run(0, 6, 7)], [run(0, 8, 9, 10)]]
    assert collect(polls, highwater=100, batches=2) == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]


def test_runs_carried_over_a_rebalance_are_dropped() -> None:
    polls = [[run(0, 0, 1, 2, 3, 4), run(0, 5, 6)], [run(0, 0, 1, 2, 3, 4)]]  # sought back to 0
    assert collect(polls, highwater=100, batches=2, rebalance_after=0) == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]


class TwoTopicConsumer(FetchingConsumer):
    """Each poll hands out the scripted runs of both topics, partition 0."""

    async def _wait_next_records(self, timeout: float) -> tuple[dict[TP, list[RecordRun]], None]:  # noqa: ASYNC109 - overrides Faust
        polls = self.polls.pop(0) if self.polls else {}
        return {TP(topic, 0): runs for topic, runs in polls.items()}, None  # type: ignore[union-attr]


def _changes(*offsets: int) -> RecordRun:
    return RecordRun("changes", 0, [SimpleNamespace(offset=offset) for offset in offsets])


def test_each_batch_topic_has_its_own_size_and_the_first_full_one_ends_the_batch() -> None:
    app = FakeApp()
    app.consumer_generation_id = 1  # type: ignore[misc]
    app.batch_topics["events"] = BatchTopic(None, size=100, within=60.0)  # type: ignore[arg-type]
    app.batch_topics["changes"] = BatchTopic(None, size=3, within=60.0)  # type: ignore[arg-type]
    polls = [{"events": [run(0, 0, 1)], "changes": [_changes(0, 1)]},
             {"events": [run(0, 2)], "changes": [_changes(2, 3), _changes(4)]}]
    consumer = TwoTopicConsumer(app, polls, highwater=1000)  # type: ignore[arg-type]
    batch, count, _ = asyncio.run(consumer._collect(app))
    offsets = {t: [r.offset for run_ in runs for r in run_.records] for t, runs in batch.items()}
    # changes filled (3 or more: whole runs), events did not; the run past changes' size is kept.
    assert offsets == {"events": [0, 1, 2], "changes": [0, 1, 2, 3]} and count == 7
    carried = consumer._carried
    assert carried is not None and [r.first_offset for r in carried[0][TP("changes", 0)]] == [4]


def test_a_topic_without_its_own_bounds_takes_the_apps() -> None:
    app = object.__new__(BatchingApp)
    app.batch_size, app.batch_within, app.batch_topics = 7, 0.25, {}
    app.topics = SimpleNamespace(add=lambda topic: None)  # type: ignore[assignment]
    topic = SimpleNamespace(get_topic_name=lambda: "events")
    app.batches(topic, None, size=None)  # type: ignore[arg-type]
    app.batches(SimpleNamespace(get_topic_name=lambda: "changes"), None, size=2)  # type: ignore[arg-type]
    assert app.batch_topics["events"].size == 7 and app.batch_topics["events"].within == 0.25
    assert app.batch_topics["changes"].size == 2 and app.batch_topics["changes"].within == 0.25
