"""Reading and replaying the dead-letter topic (``events-dlq``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer, TopicPartition

from cardflow.codec import AvroCodec
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import EVENTS, EVENTS_DLQ
from cardflow.connectors.kafka_read import (
    manual_consumer,
    read_to_end,
    read_topic,
    topic_partitions,
    watermarks,
)
from cardflow.errors import BrokerUnavailable
from cardflow.kafka_clients import QUIET, producer_config

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
    truncated: bool = False  # the key or value was cut to fit max_record_bytes
    value_bytes: int | None = None
    key_bytes: int | None = None

    def summary(self) -> dict[str, Any]:
        value = self.value or b""
        return {
            "reason": self.reason, "message": self.message, "detail": self.detail,
            "source": f"{self.topic}[{self.partition}]@{self.offset}",
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "value": value[:200].decode("utf-8", "replace") + ("…" if len(value) > 200 else ""),
            "bytes": self.value_bytes if self.truncated and self.value_bytes is not None else len(value),
            "truncated": self.truncated, "dead_at": self.dead_at,
        }


def _decode(msg: Any) -> DeadLetter:
    return DeadLetter(**CODEC.decode(msg.value()), dlq_partition=msg.partition(),
                      dlq_offset=msg.offset())


def read_all(settings: Settings, timeout: float | None = None) -> Iterator[DeadLetter]:
    """Every dead letter now in the topic, oldest first per partition; commits nothing."""
    timeout = settings.kafka_admin_timeout_ms / 1000 if timeout is None else timeout
    for msg in read_topic(settings, settings.topic(EVENTS_DLQ), settings.topic("dlq-reader"), timeout):
        yield _decode(msg)


def count_by_reason(settings: Settings) -> Counter[str]:
    return Counter(letter.reason for letter in read_all(settings))


def replay(settings: Settings, reason: str | None = None, dry_run: bool = False,
           timeout: float | None = None) -> tuple[int, int]:
    """Re-submit dead letters not replayed before, their original key and bytes unchanged.

    Progress is kept in consumer group ``<prefix>dlq-replay`` (``…-<reason>``
    with a reason filter, so filtered replays leave the other reasons for
    later). Returns (re-submitted, skipped by the filter). Offsets are
    committed only after the broker acknowledged every re-submitted record.
    A truncated dead letter (its record was over ``max_record_bytes``) no
    longer holds the original bytes: it is skipped, counted with the filtered.
    """
    timeout = settings.kafka_admin_timeout_ms / 1000 if timeout is None else timeout
    topic = settings.topic(EVENTS_DLQ)
    consumer = manual_consumer(settings, settings.topic("dlq-replay" + (f"-{reason}" if reason else "")))
    producer = Producer(producer_config(settings, **QUIET))  # a failed flush is raised
    sent = skipped = 0
    try:
        partitions = topic_partitions(consumer, topic, timeout, settings)
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
        starts = {}
        for tp in committed:
            starts[tp.partition] = max(tp.offset, watermarks(consumer, topic, tp.partition, timeout)[0])
        positions: list[TopicPartition] = []
        for msg in read_to_end(consumer, topic, starts, timeout):
            positions.append(TopicPartition(topic, msg.partition(), msg.offset() + 1))
            letter = _decode(msg)
            if (reason is not None and letter.reason != reason) or letter.truncated:
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
                raise BrokerUnavailable("re-submitted events were not all acknowledged; nothing committed "
                                        "(run the replay again: re-submitted events dedup)")
            latest = {tp.partition: tp for tp in positions}
            consumer.commit(offsets=list(latest.values()), asynchronous=False)
    finally:
        consumer.close()
    return sent, skipped
