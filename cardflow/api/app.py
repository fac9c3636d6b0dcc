"""Builds and runs the API service."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from cardflow.config import Settings

from .auth import SETTINGS_KEY
from .cards import add_card_routes
from .errors import json_errors
from .health import add_health_routes
from .ingest import add_ingest_routes
from .openapi import add_openapi_route
from .profiles import add_profile_routes
from .server import serve
from .users import add_user_routes
from .warehouse import add_warehouse_routes

log = logging.getLogger(__name__)

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)


def create_api(settings: Settings) -> web.Application:
    registry = CollectorRegistry()
    requests = Counter("cardflow_api_requests", "HTTP requests served",
                       ["method", "status"], registry=registry)

    @web.middleware
    async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            requests.labels(request.method, str(exc.status)).inc()
            raise
        requests.labels(request.method, str(response.status)).inc()
        return response

    # Bodies are read and gunzipped by ingest with its own limits (a gzip bomb stops at
    # max_body_bytes), so aiohttp must not decompress them first.
    app = web.Application(middlewares=[count, json_errors], client_max_size=settings.max_body_bytes + 1,
                          handler_args={"auto_decompress": False})
    app[REGISTRY_KEY] = registry
    app[SETTINGS_KEY] = settings
    add_health_routes(app, settings, registry)
    add_ingest_routes(app, settings, registry)
    add_profile_routes(app, settings)
    add_card_routes(app, settings)
    add_warehouse_routes(app, settings)
    add_user_routes(app, settings)
    add_openapi_route(app)
    if not settings.api_tokens:
        log.warning("CARDFLOW_API_TOKENS is empty: the API accepts requests without a token")
    return app


def run_api(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    log.info("cardflow API on http://%s:%d/", settings.api_host, settings.api_port)
    try:
        asyncio.run(serve(create_api(settings), settings))
    except (web.GracefulExit, KeyboardInterrupt):
        pass
