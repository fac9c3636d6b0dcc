"""The batch acknowledgement does what Faust's per-message ``Consumer.ack`` does, once per batch."""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

import pytest
from faust.types import TP
from intervaltree import IntervalTree

from cardflow.connectors.faust_batches import BatchingConsumer

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
