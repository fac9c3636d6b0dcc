"""Insights and SQL: ``POST /v1/query`` (read), ``POST /v1/sql`` (admin), ``GET /v1/warehouse/schema``;
bitmapist's bitmaps: ``POST /v1/bitmaps/ops`` (read), ``POST /v1/bitmaps/delete`` and
``/v1/bitmaps/import`` (admin).

The API does not open the warehouse: chDB serves a directory to one process, the warehouse worker,
so the API forwards these requests to that worker's web server (``warehouse_worker_url``), which
validates, runs and caches them. With a ClickHouse server the same path is kept: one place checks
queries and holds the cache.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from cardflow.config import Scope, Settings

from .auth import SETTINGS_KEY, require
from .errors import error

SESSION_KEY = web.AppKey("warehouse_session", aiohttp.ClientSession)


async def _forward(request: web.Request, method: str, path: str) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    if not settings.warehouse_worker_url:
        raise error(
            503,
            "no_warehouse",
            "this API has no warehouse: run `cardflow worker warehouse` and set "
            "CARDFLOW_WAREHOUSE_WORKER_URL to its web server",
        )
    body = await _body(request, settings.query_max_body_bytes) if method == "POST" else b""
    url = f"{settings.warehouse_worker_url.rstrip('/')}{path}"
    try:
        async with request.app[SESSION_KEY].request(
            method, url, data=body or None, headers={"Content-Type": "application/json"}
        ) as got:
            payload = await got.read()
            status = got.status
            cache = got.headers.get("X-Cardflow-Cache")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise error(
            503,
            "warehouse_unavailable",
            f"the warehouse worker at {settings.warehouse_worker_url} did "
            f"not answer: {exc or type(exc).__name__}",
            headers={"Retry-After": "2"},
        ) from None
    if status not in (200, 400, 413, 503, 504):
        raise error(
            503,
            "warehouse_unavailable",
            f"the warehouse worker answered {status}",
            headers={"Retry-After": "2"},
        )
    headers: dict[str, Any] = {"X-Cardflow-Cache": cache} if cache else {}
    return web.Response(status=status, body=payload, content_type="application/json", headers=headers)


async def _body(request: web.Request, limit: int) -> bytes:
    """The whole body, however many reads it takes (a read returns what arrived so far), up to
    ``limit`` bytes; past it a 413."""
    too_large = error(413, "body_too_large", f"the body is over {limit} bytes (query_max_body_bytes)")
    if (request.content_length or 0) > limit:
        raise too_large
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


@require(Scope.READ)
async def post_query(request: web.Request) -> web.Response:
    return await _forward(request, "POST", "/warehouse/query/")


@require(Scope.ADMIN)
async def post_sql(request: web.Request) -> web.Response:
    return await _forward(request, "POST", "/warehouse/sql/")


@require(Scope.READ)
async def get_schema(request: web.Request) -> web.Response:
    return await _forward(request, "GET", "/warehouse/schema/")


@require(Scope.READ)
async def post_bitmap_ops(request: web.Request) -> web.Response:
    return await _forward(request, "POST", "/warehouse/bitmaps/ops/")


@require(Scope.ADMIN)
async def post_bitmap_delete(request: web.Request) -> web.Response:
    return await _forward(request, "POST", "/warehouse/bitmaps/delete/")


@require(Scope.ADMIN)
async def post_bitmap_import(request: web.Request) -> web.Response:
    return await _forward(request, "POST", "/warehouse/bitmaps/import/")


def add_warehouse_routes(app: web.Application, settings: Settings) -> None:
    async def open_session(app: web.Application) -> None:
        app[SESSION_KEY] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.sql_max_seconds + 30)
        )

    async def close_session(app: web.Application) -> None:
        await app[SESSION_KEY].close()

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_post("/v1/query", post_query)
    app.router.add_post("/v1/sql", post_sql)
    app.router.add_get("/v1/warehouse/schema", get_schema)
    app.router.add_post("/v1/bitmaps/ops", post_bitmap_ops)
    app.router.add_post("/v1/bitmaps/delete", post_bitmap_delete)
    app.router.add_post("/v1/bitmaps/import", post_bitmap_import)
