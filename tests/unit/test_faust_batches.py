"""The batch acknowledgement does what Faust's per-message ``Consumer.ack`` does, once per batch."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
from faust.types import TP
from intervaltree import IntervalTree

from cardflow.connectors.faust_batches import BatchingApp, BatchingConsumer

pytestmark = pytest.mark.unit


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int


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
    batch = {"events": [Record("events", 0, 5), Record("events", 1, 9), Record("events", 1, 10),
                        Record("events", 0, 6), Record("events", 1, 11)]}
    consumer._ack_all(batch)
    consumer._ack_all({"events": [Record("events", 1, 11)]})  # re-delivered: not acked twice
    assert consumer._acked[TP("events", 0)] == [5, 6]
    assert consumer._acked[TP("events", 1)] == [10, 11]  # 9 is below the committed offset
    assert consumer._n_acked == 4
    assert consumer._read_offset[TP("events", 0)] == 6
    assert consumer._new_offset(TP("events", 1)) == 12  # what Faust's next commit sends


class FakeApp(BatchingApp):
    def __init__(self) -> None:  # only what the drain loop reads
        self.batch_handlers: dict[str, Any] = {}
        self.batch_idle = asyncio.Event()
        self.batch_idle.set()
        self.rebalancing = False


class ScriptedConsumer(BatchingConsumer):
    """Hands out scripted batches; the drain loop, the handler calls and the acks are the real ones."""

    def __init__(self, app: FakeApp, batches: list[list[Record]]) -> None:
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
        records = self.batches.pop(0)
        return {"events": records}, len(records), 1

    def _current(self, generation: int) -> bool:
        return True


def test_a_batch_is_acked_once_durable_while_the_next_is_fetched() -> None:
    asyncio.run(_acked_once_durable())


async def _acked_once_durable() -> None:
    app = FakeApp()
    consumer = ScriptedConsumer(app, [[Record("events", 0, 0), Record("events", 0, 1)],
                                      [Record("events", 0, 2)]])
    written: list[asyncio.Future[None]] = []
    acked_when_called: list[list[int]] = []

    async def handle(records: list[Record]) -> asyncio.Future[None]:
        consumer.handled += 1
        acked_when_called.append(list(consumer._acked[TP("events", 0)]))
        written.append(asyncio.get_running_loop().create_future())
        return written[-1]

    app.batch_handlers["events"] = handle  # type: ignore[assignment]
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
    consumer = ScriptedConsumer(app, [[Record("events", 0, 0)], [Record("events", 0, 1)]])

    async def handle(records: list[Record]) -> asyncio.Future[None]:
        consumer.handled += 1
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError("broker refused"))
        return failed

    app.batch_handlers["events"] = handle  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="broker refused"):
        await asyncio.wait_for(consumer._drain_messages(SimpleNamespace(_stopped=asyncio.Event())), 5)
    assert consumer.handled == 1 and consumer._acked[TP("events", 0)] == []


class FetchingConsumer(BatchingConsumer):
    """Scripted polls (None: a poll that found nothing) and highwater marks; ``_collect`` is real."""

    def __init__(self, app: FakeApp, polls: list[list[Record] | None], highwater: int) -> None:
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

    async def _wait_next_records(self, timeout: float) -> tuple[dict[TP, list[Record]], None]:  # noqa: ASYNC109 - overrides Faust
        records = self.polls.pop(0) if self.polls else None
        return ({TP("events", 0): records} if records else {}), None

    def highwater(self, tp: TP) -> int:
        return self.high


def collect(polls: list[list[Record] | None], highwater: int) -> list[int]:
    app = FakeApp()
    app.batch_handlers["events"] = None
    app.batch_size, app.batch_within = 5, 0.0  # the clock alone would end every batch at once
    app.consumer_generation_id = 1  # type: ignore[misc]
    batch, count, _ = asyncio.run(FetchingConsumer(app, polls, highwater)._collect(app))
    assert count == len(batch.get("events", []))
    return [record.offset for record in batch.get("events", [])]


def test_a_backlog_fills_the_batch_past_the_clock_and_empty_polls() -> None:
    polls = [[Record("events", 0, o) for o in (0, 1)], None, [Record("events", 0, o) for o in (2, 3, 4, 5)]]
    assert collect(polls, highwater=100) == [0, 1, 2, 3, 4, 5]  # ends once full (5 or more)


def test_a_worker_that_keeps_up_ends_the_batch_at_once() -> None:
    polls = [[Record("events", 0, o) for o in (0, 1)], None, [Record("events", 0, 2)]]
    assert collect(polls, highwater=2) == [0, 1]  # nothing past offset 1: no waiting
