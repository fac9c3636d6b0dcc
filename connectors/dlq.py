"""Reading and replaying the dead-letter topic (``events-dlq``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from cardflow.codec import AvroCodec
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import EVENTS, EVENTS_DLQ
from cardflow.connectors.producer import producer_config

CODEC = AvroCodec.named("DeadLetter")


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    message: str
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: int
    dead_at: int
    detail: str | None
    dlq_partition: int
    dlq_offset: int

    def summary(self) -> dict[str, Any]:
        value = self.value or b""
        return {
            "reason": self.reason, "message": self.message, "detail": self.detail,
            "source": f"{self.topic}[{self.partition}]@{self.offset}",
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "value": value[:200].decode("utf-8", "replace") + ("…" if len(value) > 200 else ""),
            "bytes": len(value), "dead_at": self.dead_at,
        }


def _decode(msg: Any) -> DeadLetter:
    return DeadLetter(**CODEC.decode(msg.value()), dlq_partition=msg.partition(),
                      dlq_offset=msg.offset())


def _read_to_end(consumer: Consumer, topic: str, starts: dict[int, int],
                 timeout: float) -> Iterator[Any]:
    """Messages from each partition's start offset up to its end as of now."""
    ends = {}
    for partition, start in starts.items():
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        if high > start:
            ends[partition] = high
    if not ends:
        return
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
    while ends:
        msg = consumer.poll(timeout)
        if msg is None:
            raise TimeoutError(f"no progress reading {topic} for {timeout}s")
        err = msg.error()
        if err is not None:
            raise RuntimeError(f"reading {topic}: {err.str()}")
        yield msg
        if (msg.offset() or 0) + 1 >= ends.get(msg.partition() or 0, 0):
            ends.pop(msg.partition() or 0, None)


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer({**settings.kafka_client_config(), "group.id": group,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})


def _partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
    if meta.error is not None:
        raise RuntimeError(f"cannot read {topic}: {meta.error.str()}; run `cardflow topics create`")
    return sorted(meta.partitions)


def read_all(settings: Settings, timeout: float = 10.0) -> Iterator[DeadLetter]:
    """Every dead letter now in the topic, oldest first per partition; commits nothing."""
    topic = settings.topic(EVENTS_DLQ)
    consumer = _consumer(settings, settings.topic("dlq-reader"))
    try:
        starts = {}
        for p in _partitions(consumer, topic, timeout):
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            starts[p] = low
        for msg in _read_to_end(consumer, topic, starts, timeout):
            yield _decode(msg)
    finally:
        consumer.close()


def count_by_reason(settings: Settings) -> Counter[str]:
    return Counter(letter.reason for letter in read_all(settings))


def replay(settings: Settings, reason: str | None = None, dry_run: bool = False,
           timeout: float = 10.0) -> tuple[int, int]:
    """Re-submit dead letters not replayed before, their original key and bytes unchanged.

    Progress is kept in consumer group ``<prefix>dlq-replay`` (``…-<reason>``
    with a reason filter, so filtered replays leave the other reasons for
    later). Returns (re-submitted, skipped by the filter). Offsets are
    committed only after the broker acknowledged every re-submitted record.
    """
    topic = settings.topic(EVENTS_DLQ)
    consumer = _consumer(settings, settings.topic("dlq-replay" + (f"-{reason}" if reason else "")))
    producer = Producer(producer_config(settings))
    sent = skipped = 0
    try:
        partitions = _partitions(consumer, topic, timeout)
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
        starts = {}
        for tp in committed:
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)
            starts[tp.partition] = max(tp.offset, low)
        positions: list[TopicPartition] = []
        for msg in _read_to_end(consumer, topic, starts, timeout):
            positions.append(TopicPartition(topic, msg.partition(), msg.offset() + 1))
            letter = _decode(msg)
            if reason is not None and letter.reason != reason:
                skipped += 1
                continue
            if not dry_run:
                origin = f"{topic}/{msg.partition()}/{msg.offset()}"
                producer.produce(settings.topic(EVENTS), value=letter.value, key=letter.key,
                                 headers=[("cardflow-replayed-from", origin)])
                producer.poll(0)
            sent += 1
        if not dry_run and positions:
            if producer.flush(timeout * 3):
                raise RuntimeError("re-submitted events were not all acknowledged; nothing committed")
            latest = {tp.partition: tp for tp in positions}
            consumer.commit(offsets=list(latest.values()), asynchronous=False)
    finally:
        consumer.close()
    return sent, skipped
