"""The people worker's batch sink on the real broker: reports served while producing, failures
raised by the flush whichever call served them."""

from __future__ import annotations

import os
import time

import pytest
from confluent_kafka.admin import NewTopic

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import admin_client, ensure_topics
from cardflow.connectors.producer import BatchSink
from cardflow.errors import DeliveryError
from cardflow.kafka_clients import producer_config


def test_reports_are_served_while_producing_and_the_flush_settles_the_rest(settings: Settings) -> None:
    ensure_topics(settings)
    topic = settings.topic("profile-changes")
    sink = BatchSink(producer_config(settings, **{"linger.ms": 5}))
    sink.produce(topic, b"k", b"warm-up", 0)  # topic metadata and a connection, before counting
    sink.flush(30)
    for n in range(BatchSink.SERVE_EVERY - 1):
        sink.produce(topic, b"k", b"v%d" % n, 0)
    time.sleep(2.0)  # acknowledged meanwhile; the reports wait to be served
    for n in range(BatchSink.SERVE_EVERY):  # the last of these serves the reports that arrived
        sink.produce(topic, b"k", b"w%d" % n, 1)
    assert sink.delivered[(topic, 0)] == BatchSink.SERVE_EVERY - 1  # before any flush
    sink.flush(30)
    assert sink.delivered == {(topic, 0): BatchSink.SERVE_EVERY - 1, (topic, 1): BatchSink.SERVE_EVERY - 1}


def test_a_failure_served_while_producing_fails_the_next_flush(settings: Settings) -> None:
    ensure_topics(settings)
    refusing = settings.topic("refusing")  # takes no record over 200 bytes
    admin = admin_client(settings)
    admin.create_topics([NewTopic(refusing, 1, 1, config={"max.message.bytes": "200"})])[refusing].result(30)
    sink = BatchSink(producer_config(settings))
    sink.produce(refusing, b"k", os.urandom(1000), 0)  # incompressible: over the limit after lz4 too
    time.sleep(2.0)  # refused meanwhile
    for n in range(BatchSink.SERVE_EVERY):  # serves the refusal's report
        sink.produce(settings.topic("profile-changes"), b"k", b"v%d" % n, 0)
    assert sink._failed  # served here, not by a flush
    with pytest.raises(DeliveryError, match="1 record.*Message size too large"):
        sink.flush(30)
