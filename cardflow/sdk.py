"""The Python SDK: send events straight to Kafka.

    from cardflow.sdk import Client

    with Client("127.0.0.1:9092") as client:
        client.track("user-1", "signup", {"referrer": "google"})
        client.set("user-1", {"plan": "team"})
    # leaving the block flushes; a failed delivery raises DeliveryError

Events are validated here, with the same rules the people topology applies,
so a mistake fails at the call that made it. Records are batched by the
producer (``linger_ms``) and written with ``acks=all`` and idempotence.
Failures are never silent: pass ``on_error`` to hear about each one, or
``flush()``/``close()`` raises :class:`DeliveryError` listing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, Producer

from cardflow.config import Settings, load_settings
from cardflow.connectors.kafka_admin import EVENTS
from cardflow.connectors.producer import producer_config
from cardflow.events import Decoder, Event

# Provenance travels in a header, so the envelope is the same whichever way an event came.
_VIA: list[tuple[str, str | bytes | None]] = [("cardflow-via", b"python-sdk")]

ErrorCallback = Callable[[Event, KafkaError], None]


class DeliveryError(RuntimeError):
    """Some events were not stored. ``failed`` holds (event, error) pairs."""

    def __init__(self, failed: list[tuple[Event, KafkaError]]) -> None:
        first = failed[0][1].str() if failed else ""
        super().__init__(f"{len(failed)} event(s) were not delivered; first error: {first}")
        self.failed = failed


class Client:
    """Track events and user properties from Python. Thread-safe for ``track``/``set``."""

    def __init__(
        self,
        broker: str | None = None,
        *,
        settings: Settings | None = None,
        on_error: ErrorCallback | None = None,
        linger_ms: int = 20,
        source: str | None = None,
        producer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        if settings is None:
            settings = load_settings(broker=broker) if broker else load_settings()
        self._topic = settings.topic(EVENTS)
        self._decoder: Decoder = settings.decoder()
        self._source = source
        self._on_error = on_error
        self._failed: list[tuple[Event, KafkaError]] = []
        self._producer = Producer(producer_config(
            settings, **{"linger.ms": linger_ms, "queue.buffering.max.messages": 1_000_000,
                         "batch.num.messages": 10_000, **(producer_overrides or {})}))

    def track(self, uid: str | int, event: str, properties: Mapping[str, Any] | None = None,
              ts: Any = None, event_id: str | None = None) -> Event:
        """Send one event. ``ts`` defaults to now; any form the contract accepts works."""
        return self._send({"uid": uid, "event": event, "properties": dict(properties or {}),
                           "ts": _now_ms() if ts is None else ts, "event_id": event_id})

    def set(self, uid: str | int, properties: Mapping[str, Any], ts: Any = None) -> Event:
        """Set user properties (the latest event time wins per property)."""
        return self._send({"uid": uid, "event": "$set", "$set": dict(properties),
                           "ts": _now_ms() if ts is None else ts})

    def set_once(self, uid: str | int, properties: Mapping[str, Any], ts: Any = None) -> Event:
        """Set user properties only where not yet set (the earliest event time wins)."""
        return self._send({"uid": uid, "event": "$set_once", "$set_once": dict(properties),
                           "ts": _now_ms() if ts is None else ts})

    def _send(self, obj: dict[str, Any]) -> Event:
        if self._source:
            obj["source"] = self._source
        event = self._decoder.object(obj)  # raises Rejected (a ValueError) on bad input
        payload = event.to_bytes()

        def delivered(err: KafkaError | None, _msg: object) -> None:
            self._delivered(event, err)

        while True:
            try:
                self._producer.produce(self._topic, payload, event.key, headers=_VIA,
                                       on_delivery=delivered)
                break
            except BufferError:
                # Queue full: block the caller (backpressure) while the producer drains.
                self._producer.poll(0.05)
        self._producer.poll(0)
        return event

    def _delivered(self, event: Event, err: KafkaError | None) -> None:
        if err is None:
            return
        if self._on_error is not None:
            self._on_error(event, err)
        else:
            self._failed.append((event, err))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every event is acknowledged; raise DeliveryError for those that failed."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise TimeoutError(f"{remaining} event(s) still unacknowledged after {timeout}s")
        if self._failed:
            failed, self._failed = self._failed, []
            raise DeliveryError(failed)

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.flush(5)


def _now_ms() -> int:
    return int(time.time() * 1000)
