"""Derived events (``emit`` in a profile script) into ``events``, exactly once each.

A batch's derived events are written in one Kafka transaction, with a *mark* per partition
(``derived-marks``, compacted: the highest source offset whose derived events are committed).
Before that, each is kept in its user's stored value (the *ledger*, written with the profile).
So, whatever moment the worker dies at:

- before the commit: the transaction is aborted (consumers read committed records only); the
  source records are read again and, folded already, skipped; their derived events are sent
  again from the ledger, as their offsets are past the mark;
- after it: the mark says so; the ledger's entries are dropped, and a source record folded
  again (a lost RocksDB directory) does not send them twice.

The transaction's producer is made at the first commit (an installation whose scripts never
emit needs no transactions), with a stable ``transactional.id`` (the worker's name, or its
data directory), so a restarted worker fences its previous self and aborts what it left open.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import DERIVED_MARKS
from cardflow.kafka_clients import consumer_config, producer_config

log = logging.getLogger(__name__)
MARKS = DERIVED_MARKS
COMMIT_TIMEOUT_S = 60.0


class DerivedSink:
    """Derived events of the batches, committed one batch at a time (see the module doc)."""

    def __init__(self, settings: Settings, events_topic: str) -> None:
        self.settings = settings
        self.events_topic = events_topic
        self.marks_topic = settings.topic(MARKS)
        self.marks: dict[int, int] = {}  # events partition → highest source offset committed
        self.pending: list[tuple[bytes, bytes, int]] = []  # (key, value, partition) of this batch
        self.pending_marks: dict[int, int] = {}
        self.handed: dict[int, int] = {}  # partition → highest source offset queued by this process
        self.stale = True  # marks to read before the next batch (at start, after a rebalance)
        self._producer: Producer | None = None

    def transactional_id(self) -> str:
        """Stable across restarts of one worker: its name, else its host and data directory."""
        name = self.settings.worker_name or hashlib.sha256(
            f"{socket.gethostname()}:{self.settings.data_dir.resolve()}".encode()).hexdigest()[:16]
        return f"{self.events_topic}-derived-{name}"

    def mark_key(self, partition: int) -> bytes:
        return f"{self.events_topic}/{partition}".encode()

    def committed(self, partition: int, offset: int) -> bool:
        """Whether the derived events of the source record at ``offset`` are committed."""
        return offset <= self.marks.get(partition, -1)

    def sent(self, partition: int, offset: int) -> bool:
        """Committed, or queued by this process (its commit either succeeds or ends the process)."""
        return offset <= max(self.marks.get(partition, -1), self.handed.get(partition, -1))

    def add(self, key: bytes, value: bytes, partition: int, offset: int) -> None:
        self.pending.append((key, value, partition))
        if offset > self.pending_marks.get(partition, -1):
            self.pending_marks[partition] = offset

    def take(self) -> tuple[list[tuple[bytes, bytes, int]], dict[int, int]] | None:
        """This batch's derived events and marks (None: none), to :meth:`commit` after the batch."""
        if not self.pending:
            return None
        taken = (self.pending, self.pending_marks)
        for partition, offset in self.pending_marks.items():  # at the batch's end: its offsets interleave
            self.handed[partition] = max(self.handed.get(partition, -1), offset)
        self.pending, self.pending_marks = [], {}
        return taken

    def commit(self, batch: tuple[list[tuple[bytes, bytes, int]], dict[int, int]]) -> None:
        """Write one batch's derived events and marks in one transaction (blocking: run it off the
        event loop, one batch at a time, in batch order)."""
        records, marks = batch
        producer = self._transactional()
        producer.begin_transaction()
        try:
            for key, value, partition in records:
                producer.produce(self.events_topic, value=value, key=key, partition=partition)
                producer.poll(0)
            for partition, offset in marks.items():
                producer.produce(self.marks_topic, key=self.mark_key(partition), value=str(offset).encode())
            producer.commit_transaction(COMMIT_TIMEOUT_S)
        except KafkaException as exc:
            # The worker stops before the batch's offsets commit: its derived events are sent again.
            raise RuntimeError(f"derived events could not be committed to {self.events_topic} and "
                               f"{self.marks_topic} ({exc}); `cardflow topics create` makes "
                               f"{self.marks_topic}, and the worker needs Write on its transactional id"
                               ) from exc
        for partition, offset in marks.items():
            self.marks[partition] = max(self.marks.get(partition, -1), offset)

    def load_marks(self) -> None:
        """Read every partition's mark (committed records only; blocking). A transaction a killed
        worker left open holds this back until it is aborted (10 s at most)."""
        self.stale = False  # first: a rebalance meanwhile sets it again
        consumer = Consumer(consumer_config(self.settings, f"marks-{time.monotonic_ns()}",
                                            **{"isolation.level": "read_committed"}))
        try:
            metadata = consumer.list_topics(self.marks_topic, timeout=30).topics[self.marks_topic]
            if metadata.error is not None:  # not created (an older installation): nothing committed yet
                log.warning("%s does not exist: a profile script that emits will stop the worker until "
                            "`cardflow topics create` makes it", self.marks_topic)
                return
            partitions = [TopicPartition(self.marks_topic, p, 0) for p in metadata.partitions]
            ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in partitions}
            consumer.assign(partitions)
            left = {p for p, end in ends.items() if end > 0}
            deadline = time.monotonic() + COMMIT_TIMEOUT_S
            prefix = f"{self.events_topic}/".encode()
            marks: dict[int, int] = {}
            while left:
                for msg in consumer.consume(1000, timeout=1.0):
                    if msg.error() is not None:
                        continue
                    key, value, offset = msg.key() or b"", msg.value(), msg.offset() or 0
                    if key.startswith(prefix) and value:
                        partition = int(key[len(prefix):])
                        marks[partition] = max(marks.get(partition, -1), int(value))
                    if offset + 1 >= ends[msg.partition() or 0]:
                        left.discard(msg.partition() or 0)
                for p in list(left):  # a read_committed consumer may stop short of the end (markers)
                    position = consumer.position([TopicPartition(self.marks_topic, p)])[0].offset
                    if position >= ends[p]:
                        left.discard(p)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.marks_topic} not read to its end in {COMMIT_TIMEOUT_S:.0f} s")
            for partition, offset in marks.items():  # never back: commits of this process may be newer
                self.marks[partition] = max(self.marks.get(partition, -1), offset)
            log.info("derived events committed through %s (source offsets per partition)", self.marks)
        finally:
            consumer.close()

    def _transactional(self) -> Producer:
        if self._producer is None:
            producer = Producer(producer_config(self.settings, **{
                "transactional.id": self.transactional_id(),
                # An open transaction holds back what read_committed consumers see of `events`:
                # one left open by a killed worker is aborted after this at the latest.
                "transaction.timeout.ms": 10_000,
            }))
            producer.init_transactions(COMMIT_TIMEOUT_S)
            self._producer = producer
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
