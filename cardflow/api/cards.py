"""Card results: ``GET /v1/cards``, ``GET /v1/cards/{id}``, server-sent events, and the dashboard.

Each API replica reads the compacted ``results`` topic from its beginning
into memory (no consumer group: every replica sees every card) and keeps
following it; a new result wakes every server-sent-events stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from cardflow.card_results import CARD_RESULT, served
from cardflow.config import Scope, Settings
from cardflow.connectors.kafka_admin import RESULTS
from cardflow.kafka_clients import aiokafka_options
from cardflow.offsets import parse_offsets

from .auth import SETTINGS_KEY, require
from .errors import error
from .ingest import ACCEPTED_KEY, Accepted

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0
LOAD_WAIT_S = 5.0


class ResultStore:
    """The latest result per card id, and a way to wait for the next one."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}
        self.version = 0
        self.loaded = asyncio.Event()  # set once the topic was read up to its end at start
        self.closing = False
        self._changed = asyncio.Condition()

    async def close(self) -> None:
        """End every stream (on shutdown; streams otherwise never end)."""
        async with self._changed:
            self.closing = True
            self._changed.notify_all()

    async def put(self, record: dict[str, Any]) -> None:
        card = served(record)
        async with self._changed:
            self.version += 1
            self.results[card["id"]] = card
            self.versions[card["id"]] = self.version
            self._changed.notify_all()

    async def changes(self, card_id: str | None) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the results changed since the last yield (all of them first); [] as a keep-alive."""
        seen = 0
        while not self.closing:
            fresh = [self.results[c] for c, v in sorted(self.versions.items(), key=lambda kv: kv[1])
                     if v > seen and (card_id is None or c == card_id)]
            seen = self.version
            yield fresh
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(self._news(seen)), KEEPALIVE_S)

    def _news(self, seen: int) -> Callable[[], bool]:
        return lambda: self.version > seen or self.closing

    async def including(self, card_id: str, targets: dict[int, int], wait: float) -> dict[str, Any] | None:
        """The card's first result that includes every ``partition: offset`` of ``targets`` (its
        offsets reach them); None after ``wait`` seconds."""

        def included() -> bool:
            card = self.results.get(card_id)
            offsets = card["offsets"] if card else {}
            return self.closing or all(offsets.get(str(p), -1) >= o for p, o in targets.items())

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(included), wait)
        card = self.results.get(card_id)
        offsets = card["offsets"] if card else {}
        return card if card and all(offsets.get(str(p), -1) >= o for p, o in targets.items()) else None


STORE_KEY = web.AppKey("results", ResultStore)


async def follow_results(settings: Settings, store: ResultStore) -> None:
    """Read ``results`` from the start and keep following it; retry while it does not exist yet."""
    topic = settings.topic(RESULTS)
    while True:
        # No group: every replica reads every partition, from the start (the topic is compacted).
        consumer = AIOKafkaConsumer(topic, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", **aiokafka_options(settings))
        try:
            await consumer.start()
            ends: dict[TopicPartition, int] | None = None
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
                for messages in batches.values():
                    for message in messages:
                        if message.value is not None:
                            await store.put(CARD_RESULT.decode(message.value))
                if store.loaded.is_set():
                    continue
                assigned = consumer.assignment()
                if not assigned:
                    log.info("waiting for topic %s (`cardflow topics create` makes it)", topic)
                    continue
                if ends is None:
                    ends = await consumer.end_offsets(list(assigned))
                positions = {tp: await consumer.position(tp) for tp in ends}
                if all(positions[tp] >= end for tp, end in ends.items()):
                    store.loaded.set()
        except asyncio.CancelledError:
            raise
        except KafkaConnectionError as exc:  # the cluster is down or unreachable: no bug to trace
            log.warning("reading %s: %s; retrying in 2s", topic, exc)
            await asyncio.sleep(2)
        except Exception:
            log.exception("reading %s failed; retrying in 2s", topic)
            await asyncio.sleep(2)
        finally:
            await consumer.stop()


def add_card_routes(app: web.Application, settings: Settings) -> None:
    store = ResultStore()
    app[STORE_KEY] = store

    async def loaded() -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(store.loaded.wait(), LOAD_WAIT_S)
        return store.loaded.is_set()

    @require(Scope.READ)
    async def list_cards(request: web.Request) -> web.Response:
        complete = await loaded()
        cards = [fresh(c) for c in sorted(store.results.values(), key=lambda c: c["id"])]
        return web.json_response({"cards": cards, "complete": complete}, dumps=_dumps)

    @require(Scope.READ)
    async def get_card(request: web.Request) -> web.Response:
        card_id = request.match_info["id"]
        await loaded()
        after = request.query.get("after")
        card = store.results.get(card_id)
        if card is None and after is None:
            raise error(404, "not_found", f"no card {card_id!r}; known cards: {sorted(store.results)}")
        if after is not None:
            targets = _targets(after, request.app.get(ACCEPTED_KEY))
            wait = settings.wait_timeout_ms / 1000
            card = await store.including(card_id, targets, wait)
            if card is None:
                raise error(504, "not_yet_included", f"no result of card {card_id!r} includes "
                            f"{after!r} after {settings.wait_timeout_ms} ms (wait_timeout_ms)", None,
                            offsets=(store.results.get(card_id) or {}).get("offsets"))
        assert card is not None
        return web.json_response(fresh(card), dumps=_dumps)

    async def stream(request: web.Request, card_id: str | None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        async for changed in store.changes(card_id):
            if not changed:
                await response.write(b": keep-alive\n\n")
            for card in changed:
                await response.write(b"event: result\ndata: " + orjson.dumps(fresh(card)) + b"\n\n")
        return response

    @require(Scope.READ)
    async def stream_all(request: web.Request) -> web.StreamResponse:
        return await stream(request, None)

    @require(Scope.READ)
    async def stream_card(request: web.Request) -> web.StreamResponse:
        return await stream(request, request.match_info["id"])

    async def dashboard(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def insights(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "insights.html")

    async def close_streams(_: web.Application) -> None:
        await store.close()

    app.on_shutdown.append(close_streams)

    async def start(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(follow_results(app[SETTINGS_KEY], store))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(start)
    app.router.add_get("/", dashboard)
    app.router.add_get("/insights", insights)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/v1/cards", list_cards)
    app.router.add_get("/v1/cards/stream", stream_all)  # every card on one connection (the dashboard's)
    app.router.add_get("/v1/cards/{id}", get_card)
    app.router.add_get("/v1/cards/{id}/stream", stream_card)


def _targets(after: str, accepted: Accepted | None) -> dict[int, int]:
    """``?after=``: ``partition:offset`` pairs (comma-separated, as the push API answers them),
    or the id of an event this replica accepted lately."""
    targets = parse_offsets(after)
    if targets is not None:
        return targets
    found = accepted.where.get(after) if accepted is not None else None
    if found is None:
        raise error(400, "unknown_after", f"after={after!r} is neither partition:offset pairs (the push "
                    "API's \"offsets\", e.g. 3:1200,5:88) nor the id of an event this API replica accepted "
                    f"lately (its last {accepted.size if accepted else 0})")
    return {found[0]: found[1]}


def fresh(card: dict[str, Any]) -> dict[str, Any]:
    """The result with ``lag_s``: seconds from the newest event it includes to now (its event-time
    lag; null before it includes any)."""
    lag = round(max(0.0, time.time() - card["max_ts"] / 1000), 3) if card["max_ts"] else None
    return {**card, "lag_s": lag}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
