"""HTTP push ingest: ``POST /v1/events`` and ``POST /v1/users``.

"Accepted" means durable: the answer is 202 only after the broker
acknowledged every accepted event (``acks=all``). Invalid events in a batch
are reported by index and reason; the valid ones are still accepted.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from cardflow.config import Scope, Settings
from cardflow.connectors.kafka_admin import EVENTS
from cardflow.connectors.producer import AsyncProducer
from cardflow.errors import Backpressure, BrokerUnavailable
from cardflow.events import Decoder, Event, Reason, Rejected
from cardflow.kafka_clients import producer_config
from cardflow.limits import loads

from .auth import SETTINGS_KEY, require
from .errors import error
from .profiles import wait_folded


class Accepted:
    """The events offsets of event ids this replica accepted lately (``?after=<event_id>``)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self.where: dict[str, tuple[int, int]] = {}  # event id → (partition, offset), oldest first

    def add(self, event_id: str, partition: int, offset: int) -> None:
        self.where[event_id] = (partition, offset)
        if len(self.where) > self.size:
            del self.where[next(iter(self.where))]


ACCEPTED_KEY = web.AppKey("accepted", Accepted)

PRODUCER_KEY = web.AppKey("producer", AsyncProducer)
_VIA: list[tuple[str, str | bytes | None]] = [("cardflow-via", b"http")]
JSON_TYPES = {"application/json", ""}
NDJSON_TYPES = {"application/x-ndjson", "application/jsonl", "application/x-jsonlines",
                "application/ndjson"}


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter("cardflow_ingest_accepted", "events acknowledged by the broker",
                                registry=registry)
        self.rejected = Counter("cardflow_ingest_rejected", "events refused as invalid",
                                ["reason"], registry=registry)
        self.unavailable = Counter("cardflow_ingest_unavailable",
                                   "events not stored because the broker did not acknowledge",
                                   registry=registry)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, decompressed, or a 413 past ``limit`` (chunked or not, before or after
    gunzip). ``StreamReader.read(n)`` returns what one network read brought, not n bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise error(413, "body_too_large",
                    f"the body is {request.content_length} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise error(413, "body_too_large", f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(body, limit)
    if encoding not in ("identity", ""):
        raise error(415, "unsupported_encoding", f"Content-Encoding {encoding!r}: use gzip or none")
    return body


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every gzip member of ``body`` (concatenated members are one valid gzip stream)."""
    out: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise error(400, "bad_gzip", f"the gzip body cannot be decompressed: {exc}") from None
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise error(413, "body_too_large", f"the decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise error(400, "bad_gzip", "the gzip body is truncated")
        out.append(part)
        rest = inflater.unused_data
        if not rest.strip(b"\0"):  # trailing zero padding is tolerated, as gzip(1) does
            return b"".join(out)


class _Item:
    """One event of a body: its JSON value and whether ``limits.check`` must look at it."""

    __slots__ = ("value", "suspect")

    def __init__(self, value: Any, suspect: bool) -> None:
        self.value, self.suspect = value, suspect


def _items(body: bytes, content_type: str, max_depth: int) -> list[_Item | Rejected]:
    """The body's events; a line that is not usable JSON becomes a Rejected in place."""
    if content_type in NDJSON_TYPES:
        items: list[_Item | Rejected] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                items.append(_Item(*loads(line, max_depth)))
            except Rejected as exc:
                items.append(exc)
        return items
    if content_type not in JSON_TYPES:
        raise error(415, "unsupported_media_type",
                    f"Content-Type {content_type!r}: send application/json or application/x-ndjson")
    try:
        value, suspect = loads(body, max_depth + 1)  # an array's events sit one level down
    except Rejected as exc:
        raise error(400, exc.reason.value, f"the body is not usable JSON: {exc.message}") from None
    return [_Item(v, suspect) for v in value] if isinstance(value, list) else [_Item(value, suspect)]


def _validate(
    items: list[_Item | Rejected], decoder: Decoder, now_ms: int
) -> tuple[list[tuple[int, Event, bytes]], list[dict[str, Any]]]:
    valid: list[tuple[int, Event, bytes]] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, Rejected):
                raise item
            value = item.value
            if isinstance(value, dict) and value.get("ts") is None:
                value = {**value, "ts": now_ms}  # the push API stamps the receive time when none is sent
            event = decoder.object(value, now_ms, item.suspect)
            payload = event.to_bytes()
            if len(payload) > decoder.max_event_bytes:
                raise Rejected(Reason.TOO_LARGE,
                               f"event is {len(payload)} bytes; the limit is {decoder.max_event_bytes}")
            valid.append((index, event, payload))
        except Rejected as exc:
            rejected.append({"index": index, "reason": exc.reason.value, "message": exc.message})
    return valid, rejected


async def _produce(request: web.Request, items: list[_Item | Rejected]) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    metrics: IngestMetrics = request.app[METRICS_KEY]
    if len(items) > settings.max_batch_events:
        raise error(413, "batch_too_large",
                    f"{len(items)} events in one request; the limit is {settings.max_batch_events}")
    if not items:
        raise error(400, "empty", "the body holds no events")
    valid, rejected = _validate(items, settings.decoder(), int(time.time() * 1000))
    for item in rejected:
        metrics.rejected.labels(item["reason"]).inc()
    if not valid:
        raise error(400, "invalid_events", "no event in the request is valid", accepted=0, rejected=rejected)
    producer = request.app[PRODUCER_KEY]
    topic = settings.topic(EVENTS)
    futures = []
    try:
        for _, event, payload in valid:
            futures.append(producer.send(topic, event.key, payload, _VIA))
    except Backpressure:
        # Those already queued still count once acknowledged; the caller retries the batch
        # and event_id dedup makes the retry safe.
        acked = await _settled(futures, wait=settings.ingest_timeout_ms / 1000)
        metrics.accepted.inc(acked)
        raise error(429, "backpressure", "the ingest queue is full; retry after the delay",
                    headers={"Retry-After": "1"}, accepted=acked, rejected=rejected) from None
    results = await asyncio.gather(*futures, return_exceptions=True)
    acked = sum(1 for r in results if not isinstance(r, BaseException))
    metrics.accepted.inc(acked)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        metrics.unavailable.inc(len(failures))
        if any(isinstance(f, BrokerUnavailable) for f in failures):
            raise error(503, "broker_unavailable",
                        f"Kafka did not acknowledge {len(failures)} event(s): {failures[0]}. "
                        "Retry the request; events are deduplicated by event_id.",
                        headers={"Retry-After": "5"}, accepted=acked, rejected=rejected)
        raise error(502, "delivery_failed", f"Kafka refused {len(failures)} event(s): {failures[0]}",
                    accepted=acked, rejected=rejected)
    offsets: dict[str, int] = {}  # partition → the highest offset this request's events got
    accepted = request.app[ACCEPTED_KEY]
    for (_, event, _), result in zip(valid, results, strict=True):
        partition, offset = cast(tuple[int, int], result)
        offsets[str(partition)] = max(offset, offsets.get(str(partition), -1))
        accepted.add(event.event_id, partition, offset)
    body: dict[str, Any] = {"accepted": acked, "rejected": rejected,
                            "event_ids": [e.event_id for _, e, _ in valid],
                            "offsets": ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))}
    if request.query.get("wait", "").lower() in ("1", "true", "yes"):
        targets: dict[str, int] = {}
        for (_, event, _), result in zip(valid, results, strict=True):
            offset = cast(tuple[int, int], result)[1]
            targets[event.uid] = max(offset, targets.get(event.uid, -1))
        if not await wait_folded(request.app, targets, wait=settings.wait_timeout_ms / 1000):
            message = f"the events are stored but not all in profiles after {settings.wait_timeout_ms} ms"
            raise error(504, "not_yet_folded", message, None, **body)
    return web.json_response(body, status=202)


async def _settled(futures: list[asyncio.Future[Any]], wait: float) -> int:
    if not futures:
        return 0
    done, _ = await asyncio.wait(futures, timeout=wait)
    return sum(1 for f in done if f.exception() is None)


METRICS_KEY = web.AppKey("ingest_metrics", IngestMetrics)


@require(Scope.INGEST)
async def post_events(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    body = await _read_body(request, settings.max_body_bytes)
    return await _produce(request, _items(body, request.content_type, settings.max_json_depth))


@require(Scope.INGEST)
async def post_users(request: web.Request) -> web.Response:
    """``{"uid": …, "$set": {…}}`` (or ``properties``), one or a list: $set events."""
    settings = request.app[SETTINGS_KEY]
    body = await _read_body(request, settings.max_body_bytes)
    items: list[_Item | Rejected] = []
    for item in _items(body, request.content_type, settings.max_json_depth):
        if isinstance(item, _Item) and isinstance(item.value, dict):
            value = item.value
            props = value.get("$set", value.get("properties"))
            item = _Item({"uid": value.get("uid"), "event": "$set", "ts": value.get("ts"),
                          "$set": props if props is not None else {}}, item.suspect)
        items.append(item)
    return await _produce(request, items)


def add_ingest_routes(app: web.Application, settings: Settings, registry: CollectorRegistry) -> None:
    app[METRICS_KEY] = IngestMetrics(registry)
    app[ACCEPTED_KEY] = Accepted()

    async def start_producer(app: web.Application) -> None:
        app[PRODUCER_KEY] = AsyncProducer(producer_config(
            settings, **{"message.timeout.ms": settings.ingest_timeout_ms,
                         "queue.buffering.max.messages": settings.ingest_queue_max}))

    async def stop_producer(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, app[PRODUCER_KEY].close)

    app.on_startup.append(start_producer)
    app.on_cleanup.append(stop_producer)
    app.router.add_post("/v1/events", post_events)
    app.router.add_post("/v1/users", post_users)

