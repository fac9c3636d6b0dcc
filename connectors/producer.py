"""Kafka producers: an asyncio face for the push API, and the worker's batch sink.

Their configurations come from cardflow/kafka_clients.py.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from cardflow.errors import Backpressure, BrokerUnavailable, DeliveryError

# Delivery errors that mean "the cluster cannot be reached", as opposed to a bad record.
# (confluent-kafka's documented names for librdkafka's local errors start with "_".)
UNREACHABLE = {
    KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,  # noqa: SLF001
    KafkaError._TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS,  # noqa: SLF001 KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT,
}


class AsyncProducer:
    """confluent-kafka's Producer for asyncio: ``await send(...)`` resolves once the broker acked.

    A thread polls the producer for delivery reports and hands them to the
    event loop; ``send`` itself never blocks. A full queue raises
    :class:`Backpressure` at once.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(0.1)

    def send(self, topic: str, key: bytes, value: bytes,
             headers: list[tuple[str, str | bytes | None]] | None = None) -> asyncio.Future[tuple[int, int]]:
        """Queue one record; the future gives (partition, offset) or raises on failure."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int]] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Any) -> None:
            loop.call_soon_threadsafe(_settle, future, err, msg)

        try:
            self._producer.produce(topic, value=value, key=key, headers=headers,
                                   on_delivery=delivered)
        except BufferError as exc:
            raise Backpressure("the producer queue is full") from exc
        except KafkaException as exc:
            raise DeliveryError(str(exc.args[0])) from exc
        return future

    def close(self, timeout: float = 10.0) -> int:
        """Flush what is queued and stop; returns the number of records left undelivered."""
        remaining: int = self._producer.flush(timeout)
        self._closing.set()
        self._poller.join()
        return remaining


def _settle(future: asyncio.Future[tuple[int, int]], err: KafkaError | None, msg: Any) -> None:
    if future.done():
        return
    if err is None:
        future.set_result((msg.partition(), msg.offset()))
    elif err.code() in UNREACHABLE or err.retriable():
        future.set_exception(BrokerUnavailable(err.str()))
    else:
        future.set_exception(DeliveryError(err.str()))


class BatchSink:
    """One librdkafka producer for everything a batch writes (changelog, profile changes, dead
    letters, re-routed events), flushed as a whole before the batch is acknowledged.

    Producing through Faust costs ~250 µs per message (its per-message futures and callbacks);
    librdkafka takes a few µs. ``produce`` only queues; ``flush`` (blocking: call it from a
    thread) waits for every acknowledgement and raises when any record failed, so a batch is
    never acknowledged with a write missing.
    """

    SERVE_EVERY = 1000  # produce calls between serving the delivery reports that arrived

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._failed: list[str] = []
        self.delivered: dict[tuple[str, int], int] = {}  # highest acknowledged offset per partition
        self._unserved = 0

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failed.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
        else:
            key = (msg.topic(), msg.partition())
            self.delivered[key] = max(self.delivered.get(key, -1), msg.offset())

    def produce(self, topic: str, key: bytes | None, value: bytes, partition: int,
                headers: dict[str, str | bytes | None] | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, partition=partition,
                                       headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)  # the queue is full: serve delivery reports, retry
        self._unserved += 1
        if self._unserved >= self.SERVE_EVERY:
            # Reports served here, by the producing thread, need not wait for the flush, where
            # each Python callback would take the GIL from another thread.
            self._unserved = 0
            self._producer.poll(0)

    def flush(self, timeout: float) -> None:
        left = self._producer.flush(timeout)
        failed, self._failed = self._failed, []
        if failed:
            raise DeliveryError(f"{len(failed)} record(s) not stored, e.g. {failed[0]}")
        if left:
            raise BrokerUnavailable(f"{left} record(s) not acknowledged within {timeout}s")
