"""The warehouse app (consumer group "warehouse"): events and profile changes → the warehouse.

    events ──load──▶ warehouse: events (ReplacingMergeTree, deduplicated inserts)
    profile-changes ──load──▶ warehouse: users (the latest version wins)

chDB opens its directory from one process only: this worker owns it, and answers what others
read from it on its web server — the API forwards ``POST /v1/query`` and ``POST /v1/sql`` here:

    POST /warehouse/query/    an insights query → its answer (cached until the data changes)
    POST /warehouse/sql/      {"sql": "SELECT …"} → columns and rows (read-only, checked)
    GET  /warehouse/schema/   event names, event and user property names (the insights page's choices)
    GET  /warehouse/stats/    rows, distinct event ids, users
    POST /warehouse/bitmaps/ops/     bitmapist's bitmaps: counts, membership, members (cardflow.bitmaps)
    POST /warehouse/bitmaps/delete/  delete one stored bitmap, or all of them
    POST /warehouse/bitmaps/import/  one slice of a bitmapist key from Redis (cardflow import bitmapist)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cardflow import bitmaps
from cardflow.agents.warehouse import EventLoader, UserLoader, WarehouseMetrics, load_events, load_users
from cardflow.app import create_app, raw_topic
from cardflow.batches import BatchingApp
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import EVENTS, PROFILE_CHANGES
from cardflow.connectors.warehouse import Warehouse, keep_bitmaps, migrate, warehouse_of
from cardflow.errors import QueryError, WarehouseError
from cardflow.insights import Answers
from cardflow.offsets import parse_offsets

log = logging.getLogger(__name__)


def build_warehouse(settings: Settings) -> faust.App:
    app = create_app(settings, "warehouse", app_class=BatchingApp, batch_size=settings.batch_size,
                     batch_within=settings.batch_within_ms / 1000)
    assert isinstance(app, BatchingApp)
    events, changes = (raw_topic(app, settings, name) for name in (EVENTS, PROFILE_CHANGES))
    wh = warehouse_of(settings)
    # chDB torn down by the process's static destructors with a session still open was seen to
    # spin at exit (SIGTERM, loop closed, then 100 % CPU until SIGKILL): closed first.
    app.at_exit.append(wh.close)
    migrate(wh)
    if keep_bitmaps(wh, settings.warehouse_bitmaps):
        log.info("warehouse %s: bitmapist's bitmaps %s", wh.database,
                 "kept again (backfilled)" if settings.warehouse_bitmaps else "no longer kept")
    registry = CollectorRegistry()
    loader = EventLoader(wh, settings.decoder(), WarehouseMetrics(registry), sleep=app.pause)

    load_events(app, events, loader)                      # events → warehouse.events
    users = UserLoader(wh, loader.metrics, sleep=app.pause)
    load_users(app, changes, users)                       # profile-changes → warehouse.users

    answer_pages(app, wh, Answers(wh, settings.query_limits(), settings.sql_limits(),
                                  settings.query_cache_entries))
    bitmap_pages(app, wh, settings, loader)

    @app.page("/metrics/")
    async def metrics_page(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return view.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def answer_pages(app: faust.App, wh: Warehouse, answers: Answers) -> None:
    """The warehouse's answers on the worker's web server (blocking calls run in threads)."""

    async def answer(view: faust.web.View, work: Any) -> faust.web.Response:
        """``work()`` → (body, cache hit) in a thread; a refused query is 400, the warehouse 503."""
        try:
            body, hit = await asyncio.get_running_loop().run_in_executor(None, work)
        except QueryError as exc:
            return view.json({"error": "bad_query", "field": exc.field, "message": str(exc)}, status=400)
        except WarehouseError as exc:
            return view.json({"error": "warehouse_error", "message": str(exc)}, status=503)
        return view.json(body, headers={"X-Cardflow-Cache": "hit" if hit else "miss"})

    async def posted(view: faust.web.View, request: faust.web.Request,
                     work: Callable[[Any], tuple[dict[str, Any], bool]]) -> faust.web.Response:
        """``work(the JSON body)``, answered as ``answer`` does (a body that is not JSON: 400)."""
        raw = await request.read()

        def parsed() -> tuple[dict[str, Any], bool]:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise QueryError("body", f"is not JSON: {exc}") from None
            return work(body)

        return await answer(view, parsed)

    @app.page("/warehouse/query/")
    class Query(faust.web.View):
        async def post(self, request: faust.web.Request) -> faust.web.Response:
            return await posted(self, request, answers.query)

    @app.page("/warehouse/sql/")
    class Sql(faust.web.View):
        async def post(self, request: faust.web.Request) -> faust.web.Response:
            return await posted(self, request, lambda body: (
                answers.sql(body.get("sql") if isinstance(body, dict) else None), False))

    @app.page("/warehouse/schema/")
    async def schema(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return await answer(view, answers.schema)

    @app.page("/warehouse/user-events/")
    async def user_events(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """A user's latest events (``?uid=``, ``?limit=`` up to 100), newest first."""
        uid = request.query.get("uid", "")
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not uid or not 1 <= limit <= 100:
            return view.json({"error": "bad_query", "message": "give ?uid= and a ?limit= from 1 to 100"},
                             status=400)

        def latest() -> tuple[dict[str, Any], bool]:
            rows = wh.query(f"SELECT event_id, event, toUnixTimestamp64Milli(ts) AS ts, properties, source "
                            f"FROM {wh.database}.events FINAL WHERE uid = {{uid:String}} "
                            "ORDER BY ts DESC, event_id LIMIT {limit:UInt32}", {"uid": uid, "limit": limit})
            for row in rows:
                row["ts"] = int(row["ts"])
                row["properties"] = orjson.loads(row["properties"] or "{}")
            return {"uid": uid, "events": rows}, False

        return await answer(view, latest)

    @app.page("/warehouse/stats/")
    async def stats(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        def count() -> tuple[dict[str, int], bool]:
            rows = wh.query("SELECT count() AS rows, uniqExact(event_id) AS event_ids, "
                            "uniqExact(uid) AS users "
                            f"FROM {wh.database}.events")
            users = wh.query("SELECT count() AS profiles, sum(version) AS versions "
                             f"FROM {wh.database}.users FINAL")
            found = {**rows[0], **users[0]}
            return {k: int(v or 0) for k, v in found.items()}, False

        return await answer(view, count)


def bitmap_pages(app: faust.App, wh: Warehouse, settings: Settings, loader: EventLoader) -> None:
    """bitmapist's bitmaps (cardflow.bitmaps). A request's ``after`` (the push API's "offsets",
    ``partition:offset,…``) makes it wait until those events are loaded: a client reads its own
    marks, as on Redis."""
    topic, limits = settings.topic(EVENTS), settings.bitmap_limits()
    cache = bitmaps.Cache(settings.bitmaps_cache_mb << 20) if settings.bitmaps_cache_mb else None

    def loaded(targets: dict[int, int]) -> bool:
        return all(loader.done.get((topic, p), -1) >= o for p, o in targets.items())

    def from_table(targets: dict[int, int]) -> None:
        """What this worker has not loaded itself (another worker's partitions, or none loaded
        since it started): how far the table has them."""
        missing = [p for p, o in targets.items() if loader.done.get((topic, p), -1) < o]
        for partition, offset in loader.loaded_in_table(topic, missing).items():
            key = (topic, partition)
            loader.done[key] = max(loader.done.get(key, -1), offset)

    async def serve(view: faust.web.View, request: faust.web.Request,
                    work: Callable[[Any], dict[str, Any]]) -> faust.web.Response:
        if not settings.warehouse_bitmaps:
            return view.json({"error": "bitmaps_off", "message": (
                "this warehouse keeps no bitmapist bitmaps (warehouse_bitmaps is false): set "
                "CARDFLOW_WAREHOUSE_BITMAPS=true and restart the warehouse worker, which backfills "
                "them from the loaded events")}, status=503)
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return view.json({"error": "bad_query", "field": "body", "message": f"is not JSON: {exc}"},
                             status=400)
        after = body.get("after") if isinstance(body, dict) else None
        if after:
            targets = parse_offsets(after) if isinstance(after, str) else None
            if targets is None:
                return view.json({"error": "bad_query", "field": "after", "message": (
                    "must be partition:offset pairs, comma-separated, as POST /v1/events answers them")},
                    status=400)
            loop = asyncio.get_running_loop()
            deadline = time.monotonic() + settings.wait_timeout_ms / 1000
            asked = 0.0
            while not loaded(targets):
                if time.monotonic() > deadline:
                    return view.json({"error": "not_yet_included", "message": (
                        f"the events up to {after} are not loaded after {settings.wait_timeout_ms} ms "
                        "(wait_timeout_ms); is the warehouse worker behind?")}, status=504)
                if time.monotonic() - asked > 0.5:  # partitions another worker loads show in the table only
                    asked = time.monotonic()
                    try:
                        await loop.run_in_executor(None, from_table, targets)
                    except WarehouseError as exc:
                        return view.json({"error": "warehouse_error", "message": str(exc)}, status=503)
                    continue
                await asyncio.sleep(0.02)
        try:
            answer = await asyncio.get_running_loop().run_in_executor(None, work, body)
        except QueryError as exc:
            return view.json({"error": "bad_query", "field": exc.field, "message": str(exc)}, status=400)
        except WarehouseError as exc:
            return view.json({"error": "warehouse_error", "message": str(exc)}, status=503)
        return view.json(answer)

    @app.page("/warehouse/bitmaps/ops/")
    class Ops(faust.web.View):
        async def post(self, request: faust.web.Request) -> faust.web.Response:
            return await serve(self, request, lambda body: bitmaps.run(wh, body, limits, cache))

    @app.page("/warehouse/bitmaps/import/")
    class Import(faust.web.View):
        async def post(self, request: faust.web.Request) -> faust.web.Response:
            return await serve(self, request, lambda body: bitmaps.import_bits(wh, body, limits))

    @app.page("/warehouse/bitmaps/delete/")
    class Delete(faust.web.View):
        async def post(self, request: faust.web.Request) -> faust.web.Response:
            return await serve(self, request, lambda body: bitmaps.delete(wh, body, limits))
