"""Reading a topic up to where it ends now: for operator commands and tests, never for workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import list_topics
from cardflow.errors import TopicError
from cardflow.kafka_clients import consumer_config


def manual_consumer(settings: Settings, group: str) -> Consumer:
    """A consumer that commits only when told to."""
    return Consumer(consumer_config(settings, group))


def topic_partitions(consumer: Consumer, topic: str, timeout: float, settings: Settings) -> list[int]:
    meta = list_topics(consumer, settings, timeout, topic)[topic]
    if meta.error is not None:
        raise TopicError(f"cannot read {topic}: {meta.error.str()}; run `cardflow topics create`")
    return sorted(meta.partitions)


# Answers while a new topic's leaders are being elected or a leader moves: ask again.
NOT_YET = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
           KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT}  # noqa: SLF001 - librdkafka's own


def watermarks(consumer: Consumer, topic: str, partition: int, timeout: float) -> tuple[int, int]:
    """``(low, high)`` offsets of one partition, asking again until ``timeout`` while it has no leader."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            if exc.args[0].code() not in NOT_YET or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def read_to_end(consumer: Consumer, topic: str, starts: dict[int, int],
                timeout: float) -> Iterator[Any]:
    """Messages from each partition's start offset up to its end as of now."""
    ends = {}
    for partition, start in starts.items():
        _, high = watermarks(consumer, topic, partition, timeout)
        if high > start:
            ends[partition] = high
    if not ends:
        return
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
    last = time.monotonic()
    while ends:
        msg = consumer.poll(min(timeout, 0.5))
        if msg is None:
            # A transaction's marker (or an aborted record) can be a partition's last offset: a
            # read_committed consumer never gets a message there, but its position passes it.
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    ends.pop(tp.partition)
            if ends and time.monotonic() - last > timeout:
                raise TimeoutError(f"no progress reading {topic} for {timeout}s")
            continue
        last = time.monotonic()
        err = msg.error()
        if err is not None:
            raise RuntimeError(f"reading {topic}: {err.str()}")
        yield msg
        if (msg.offset() or 0) + 1 >= ends.get(msg.partition() or 0, 0):
            ends.pop(msg.partition() or 0, None)


def read_topic(settings: Settings, topic: str, group: str, timeout: float = 10.0) -> Iterator[Any]:
    """Every message now in ``topic``, oldest first per partition; commits nothing."""
    consumer = manual_consumer(settings, group)
    try:
        starts = {}
        for p in topic_partitions(consumer, topic, timeout, settings):
            starts[p] = watermarks(consumer, topic, p, timeout)[0]
        yield from read_to_end(consumer, topic, starts, timeout)
    finally:
        consumer.close()
