"""The profiles agent: decodes each event, dead-letters what it cannot use, folds the rest.

Runs with ``concurrency=1`` because it updates a table: with more, Faust can
commit an offset past a message still being folded.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import faust
from aiokafka.partitioner import murmur2

from cardflow.codec import AvroCodec
from cardflow.events import Decoder, Event, Rejected

log = logging.getLogger(__name__)
DEAD_LETTER = AvroCodec.named("DeadLetter")


def dead_letter(message: faust.types.Message, reason: str, text: str,
                detail: str | None = None) -> bytes:
    """An Avro DeadLetter keeping the original bytes and where they came from."""
    return DEAD_LETTER.encode({
        "reason": reason, "message": text, "key": message.key, "value": message.value,
        "topic": message.topic, "partition": message.partition, "offset": message.offset,
        "timestamp": int(message.timestamp * 1000), "dead_at": int(time.time() * 1000),
        "detail": detail,
    })


def register_profiles_agent(
    app: faust.App,
    events: faust.TopicT,
    profiles: faust.Table,
    changes: faust.TopicT,
    dlq: faust.TopicT,
    decoder: Decoder,
) -> faust.types.AgentT:
    """Register the agent on ``app``: events → profiles table → profile-changes, or → events-dlq."""

    partitions = events.partitions or app.conf.topic_partitions

    @app.agent(events, name="profiles", concurrency=1)
    async def fold(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            message = record.message
            try:
                event = decoder.record(record.value)
            except Rejected as exc:
                await dlq.send(key=message.key, value=dead_letter(message, exc.reason.value, exc.message))
                continue
            home = uid_partition(event.key, partitions)
            if message.partition != home:
                # Produced without the uid key or with another partitioner: send the original
                # bytes to the uid's partition, so one user's events stay on one partition.
                origin = f"{message.partition}/{message.offset}".encode()
                await events.send(key=event.key, value=message.value, partition=home,
                                  headers={"cardflow-rerouted-from": origin})
                continue
            await _fold(event, profiles, changes)

    return fold


def uid_partition(key: bytes, partitions: int) -> int:
    """The partition of a uid key under the Java (murmur2) partitioner."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def _fold(event: Event, profiles: faust.Table, changes: faust.TopicT) -> None:
    profile: dict[str, Any] = dict(profiles[event.uid] or {"events": 0})
    profile["events"] += 1
    # Write back: in-place mutation of a table value is not changelogged.
    profiles[event.uid] = profile
    await changes.send(key=event.key, value=json.dumps(
        {"uid": event.uid, "events": profile["events"]}).encode())
