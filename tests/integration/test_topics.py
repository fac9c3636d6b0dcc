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
