from __future__ import annotations

import subprocess
import sys

import pytest
from confluent_kafka.admin import ConfigResource

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import TOPICS, TopicError, admin_client, ensure_topics


def test_create_is_idempotent_and_compacts_results(settings: Settings) -> None:
    first = ensure_topics(settings)
    assert set(first.values()) == {"created"} and len(first) == len(TOPICS)
    assert set(ensure_topics(settings).values()) == {"exists"}
    admin = admin_client(settings)
    meta = admin.list_topics(timeout=10).topics
    for spec in TOPICS:
        assert len(meta[settings.topic(spec.name)].partitions) == settings.partitions
    resource = ConfigResource("topic", settings.topic("results"))
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["cleanup.policy"].value == "compact"


def test_partition_mismatch_is_refused(settings: Settings) -> None:
    ensure_topics(settings)
    other = settings.replace(partitions=settings.partitions + 2)
    with pytest.raises(TopicError, match=r"differs from the configured 6 \(CARDFLOW_PARTITIONS\)"):
        ensure_topics(other)


def test_cli_refuses_mismatch_with_a_clear_error(settings: Settings) -> None:
    env = settings.to_env()
    ok = subprocess.run([sys.executable, "-m", "cardflow", "topics", "create"],
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert f"{settings.topic('events')}: created" in ok.stdout
    env["CARDFLOW_PARTITIONS"] = "3"
    bad = subprocess.run([sys.executable, "-m", "cardflow", "topics", "create"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert f"{settings.topic('events')} has 4 partitions" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_topics_that_take_smaller_records_than_max_record_bytes_are_refused(settings: Settings) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    ensure_topics(settings)
    admin = admin_client(settings)
    resource = ConfigResource("topic", settings.topic("events-dlq"))
    created = admin.describe_configs([resource])[resource].result()["max.message.bytes"].value
    assert int(created) >= settings.max_record_bytes + 1024  # created with room
    # An operator's pre-existing topic with a smaller limit: a dead letter of a large record would
    # be refused and stop the worker on every restart. Refused at start, with what to do.
    resource.add_incremental_config(ConfigEntry("max.message.bytes", "200000",
                                                incremental_operation=AlterConfigOpType.SET))
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    with pytest.raises(TopicError, match=r"events-dlq takes records up to 200000 bytes.*max\.message"):
        ensure_topics(settings)
    worker = subprocess.run([sys.executable, "-m", "cardflow", "worker", "people"], env=settings.to_env(),
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode != 0 and "events-dlq takes records up to 200000 bytes" in worker.stderr
    assert "Traceback" not in worker.stderr, worker.stderr
    assert ensure_topics(settings.replace(max_record_bytes=150_000, max_event_bytes=65_536,
                                          max_profile_bytes=100_000))
