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

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, Producer

from cardflow.config import Settings, load_settings
from cardflow.connectors.kafka_admin import EVENTS
from cardflow.errors import BrokerUnavailable, DeliveryError
from cardflow.events import Reason, Rejected, parse_ts
from cardflow.kafka_clients import producer_config

# Provenance travels in a header, so the envelope is the same whichever way an event came.
_VIA: list[tuple[str, str | bytes | None]] = [("cardflow-via", b"python-sdk")]

ErrorCallback = Callable[[dict[str, Any], KafkaError], None]


class Client:
    """Track events and user properties from Python.

    Events go out without an ``event_id`` unless you pass one: the people
    topology derives it from the content, exactly as for any producer, so a
    re-sent event still dedups and the SDK stays fast.
    """

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
        self._broker = settings.broker
        self._decoder = settings.decoder()
        self._source = source
        self._on_error = on_error
        self._failed: list[tuple[dict[str, Any], KafkaError]] = []
        self._unpolled = 0
        self._producer = Producer(producer_config(
            settings, **{"linger.ms": linger_ms, "queue.buffering.max.messages": 1_000_000,
                         "batch.num.messages": 10_000, "on_delivery": self._delivered,
                         **(producer_overrides or {})}))

    def track(self, uid: str | int, event: str, properties: Mapping[str, Any] | None = None,
              ts: Any = None, event_id: str | None = None) -> None:
        """Send one event. ``ts`` defaults to now; any form the contract accepts works.

        Raises :class:`cardflow.errors.Rejected` (a ValueError) for an invalid event.
        """
        if not isinstance(event, str) or not event:
            raise Rejected(Reason.MISSING_EVENT if not event else Reason.BAD_FIELD,
                           f"event must be a non-empty string, got {event!r}")
        if properties is not None and not isinstance(properties, Mapping):
            raise Rejected(Reason.BAD_FIELD, f"properties must be a mapping, got {type(properties).__name__}")
        obj: dict[str, Any] = {"uid": _uid(uid), "event": event, "ts": self._ts(ts),
                               "properties": dict(properties) if properties else {}}
        if event_id:
            obj["event_id"] = event_id
        self._send(obj)

    def set(self, uid: str | int, properties: Mapping[str, Any], ts: Any = None) -> None:
        """Set user properties (the latest event time wins per property)."""
        self._send({"uid": _uid(uid), "event": "$set", "ts": self._ts(ts), "properties": {},
                    "$set": _props(properties)})

    def set_once(self, uid: str | int, properties: Mapping[str, Any], ts: Any = None) -> None:
        """Set user properties only where not yet set (the earliest event time wins)."""
        self._send({"uid": _uid(uid), "event": "$set_once", "ts": self._ts(ts), "properties": {},
                    "$set_once": _props(properties)})

    def _ts(self, ts: Any) -> int:
        if ts is None:
            return int(time.time() * 1000)
        return parse_ts(ts, max_future_ms=self._decoder.max_future_ms)

    def _send(self, obj: dict[str, Any]) -> None:
        if self._source:
            obj["source"] = self._source
        payload = self._decoder.check_sent(obj)  # the worker's own checks: what is sent will fold
        key = obj["uid"].encode()
        while True:
            try:
                self._producer.produce(self._topic, payload, key, headers=_VIA)
                break
            except BufferError:
                # Queue full: block the caller (backpressure) while the producer drains.
                self._producer.poll(0.05)
        self._unpolled += 1
        if self._unpolled >= 1000:  # serve delivery reports without paying a poll per event
            self._producer.poll(0)
            self._unpolled = 0

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            return
        event = json.loads(msg.value())
        if self._on_error is not None:
            self._on_error(event, err)
        else:
            self._failed.append((event, err))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every event is acknowledged; raise DeliveryError for those that failed."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise BrokerUnavailable(f"{remaining} event(s) still unacknowledged after {timeout}s; is the "
                                    f"broker at {self._broker} reachable?")
        if self._failed:
            failed, self._failed = self._failed, []
            first = failed[0][1].str()
            raise DeliveryError(f"{len(failed)} event(s) were not delivered; first error: {first}", failed)

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.flush(5)


def _uid(uid: Any) -> str:
    if type(uid) is str and uid:
        return uid
    if isinstance(uid, bool) or not isinstance(uid, str | int) or uid == "":
        raise Rejected(Reason.MISSING_UID if uid in ("", None) else Reason.BAD_FIELD,
                       f"uid must be a non-empty string or an integer, got {uid!r}")
    return str(uid)


def _props(properties: Any) -> dict[str, Any]:
    if not isinstance(properties, Mapping):
        raise Rejected(Reason.BAD_FIELD, f"properties must be a mapping, got {type(properties).__name__}")
    return dict(properties)
