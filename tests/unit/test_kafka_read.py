"""Watermark look-ups ask again while a partition has no leader (a topic just created)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from cardflow.connectors.kafka_read import watermarks

pytestmark = pytest.mark.unit


class Flaky:
    def __init__(self, errors: list[int]) -> None:
        self.errors = errors
        self.calls = 0

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 7


def test_asks_again_while_the_leader_is_elected() -> None:
    consumer = Flaky([KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE])
    assert watermarks(consumer, "t", 0, timeout=5) == (3, 7)  # type: ignore[arg-type]
    assert consumer.calls == 3


def test_other_errors_and_the_deadline_raise() -> None:
    with pytest.raises(KafkaException):
        watermarks(Flaky([KafkaError.TOPIC_AUTHORIZATION_FAILED]), "t", 0, timeout=5)  # type: ignore[arg-type]
    endless = Flaky([KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    with pytest.raises(KafkaException):
        watermarks(endless, "t", 0, timeout=0.3)  # type: ignore[arg-type]
    assert 1 < endless.calls < 1000
