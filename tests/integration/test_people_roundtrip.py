"""confluent-kafka producer → people worker (Faust, real broker) → profile-changes."""

from __future__ import annotations

import asyncio
import json
import signal

from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, Producer

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics

from ..helpers import consume_all, profile_change, wait_until


def _producer(settings: Settings) -> Producer:
    return Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random",
                     "acks": "all", "enable.idempotence": True})


def test_confluent_produce_is_folded_by_the_people_worker(settings: Settings, service) -> None:
    ensure_topics(settings)
    worker = service(["worker", "people"], settings)
    producer = _producer(settings)
    sent = {"alice": 3, "bob": 1, "carol": 2}
    for uid, n in sent.items():
        for i in range(n):
            event = {"uid": uid, "event": "page_view", "ts": f"2026-11-20T10:00:0{i}Z"}
            producer.produce(settings.topic("events"), key=uid.encode(), value=json.dumps(event))
    assert producer.flush(30) == 0

    consumer = Consumer({**settings.kafka_client_config(), "group.id": "test-observer",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topic("profile-changes")])
    latest: dict[str, int] = {}

    def folded() -> bool:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            change = profile_change(msg)
            latest[change["uid"]] = change["version"]
        assert worker.proc.poll() is None, worker.output()[-3000:]
        return latest == sent

    wait_until(folded, timeout=90, what=f"profile changes {sent}, have {latest}")
    consumer.close()
    assert worker.stop(signal.SIGTERM) == 0, worker.output()[-3000:]


def test_same_uid_same_partition_across_clients(settings: Settings) -> None:
    ensure_topics(settings)
    topic = settings.topic("events")
    uids = [f"user-{i}" for i in range(200)] + ["ünïcode-ü", "a", "0"]
    confluent: dict[str, int] = {}

    def delivered(err, msg) -> None:  # type: ignore[no-untyped-def]
        assert err is None, err
        confluent[msg.key().decode()] = msg.partition()

    producer = _producer(settings)
    for uid in uids:
        producer.produce(topic, key=uid.encode(), value=b"{}", on_delivery=delivered)
    assert producer.flush(30) == 0

    async def with_aiokafka() -> dict[str, int]:
        aio = AIOKafkaProducer(bootstrap_servers=settings.broker, acks="all")
        await aio.start()
        try:
            return {uid: (await aio.send_and_wait(topic, b"{}", key=uid.encode())).partition
                    for uid in uids}
        finally:
            await aio.stop()

    aiokafka = asyncio.run(with_aiokafka())
    assert aiokafka == confluent
    assert len(set(confluent.values())) == settings.partitions, "keys must spread over partitions"


def test_worker_reads_every_compression_codec(settings: Settings, service) -> None:
    ensure_topics(settings)
    worker = service(["worker", "people"], settings)
    codecs = ["none", "gzip", "snappy", "lz4", "zstd"]
    for codec in codecs:
        producer = Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random",
                             "compression.type": codec})
        event = {"uid": f"c-{codec}", "event": "view", "ts": 1_795_000_000}
        producer.produce(settings.topic("events"), key=f"c-{codec}".encode(), value=json.dumps(event))
        assert producer.flush(30) == 0
    changes = consume_all(settings, "profile-changes", len(codecs))
    assert sorted(profile_change(m)["uid"] for m in changes) == sorted(f"c-{c}" for c in codecs)
    assert worker.proc.poll() is None
