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

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from cardflow.config import Scope, Settings
from cardflow.connectors.kafka_admin import EVENTS
from cardflow.connectors.producer import AsyncProducer, Backpressure, BrokerUnavailable, producer_config
from cardflow.events import Decoder, Event, Reason, Rejected

from .auth import SETTINGS_KEY, require
from .errors import error
from .profiles import wait_folded

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
    if request.content_length is not None and request.content_length > limit:
        raise error(413, "body_too_large",
                    f"the body is {request.content_length} bytes; the limit is {limit}")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise error(413, "body_too_large", f"the body exceeds the limit of {limit} bytes")
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise error(400, "bad_gzip", f"the gzip body cannot be decompressed: {exc}") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise error(413, "body_too_large", f"the decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise error(400, "bad_gzip", "the gzip body is truncated")
    elif encoding not in ("identity", ""):
        raise error(415, "unsupported_encoding", f"Content-Encoding {encoding!r}: use gzip or none")
    return body


def _items(body: bytes, content_type: str) -> list[Any]:
    """The body as a list of JSON values; a line that is not JSON becomes a Rejected in place."""
    if content_type in NDJSON_TYPES:
        items: list[Any] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                items.append(orjson.loads(line))
            except ValueError as exc:
                items.append(Rejected(Reason.NOT_JSON, f"not valid JSON: {exc}"))
        return items
    if content_type not in JSON_TYPES:
        raise error(415, "unsupported_media_type",
                    f"Content-Type {content_type!r}: send application/json or application/x-ndjson")
    try:
        value = orjson.loads(body)
    except ValueError as exc:
        raise error(400, "not_json", f"the body is not valid JSON: {exc}") from None
    return value if isinstance(value, list) else [value]


def _validate(
    items: list[Any], decoder: Decoder, now_ms: int
) -> tuple[list[tuple[int, Event, bytes]], list[dict[str, Any]]]:
    valid: list[tuple[int, Event, bytes]] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, Rejected):
                raise item
            if isinstance(item, dict) and item.get("ts") is None:
                item = {**item, "ts": now_ms}  # the push API stamps the receive time when none is sent
            event = decoder.object(item, now_ms)
            payload = event.to_bytes()
            if len(payload) > decoder.max_event_bytes:
                raise Rejected(Reason.TOO_LARGE,
                               f"event is {len(payload)} bytes; the limit is {decoder.max_event_bytes}")
            valid.append((index, event, payload))
        except Rejected as exc:
            rejected.append({"index": index, "reason": exc.reason.value, "message": exc.message})
    return valid, rejected


async def _produce(request: web.Request, items: list[Any]) -> web.Response:
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
    body: dict[str, Any] = {"accepted": acked, "rejected": rejected,
                            "event_ids": [e.event_id for _, e, _ in valid]}
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
    return await _produce(request, _items(body, request.content_type))


@require(Scope.INGEST)
async def post_users(request: web.Request) -> web.Response:
    """``{"uid": …, "$set": {…}}`` (or ``properties``), one or a list: $set events."""
    settings = request.app[SETTINGS_KEY]
    body = await _read_body(request, settings.max_body_bytes)
    items = []
    for item in _items(body, request.content_type):
        if isinstance(item, dict):
            props = item.get("$set", item.get("properties"))
            item = {"uid": item.get("uid"), "event": "$set", "ts": item.get("ts"),
                    "$set": props if props is not None else {}}
        items.append(item)
    return await _produce(request, items)


def add_ingest_routes(app: web.Application, settings: Settings, registry: CollectorRegistry) -> None:
    app[METRICS_KEY] = IngestMetrics(registry)

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

