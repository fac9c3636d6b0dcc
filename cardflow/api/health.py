"""Liveness, readiness and Prometheus metrics endpoints."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import admin_client

READY_CACHE_SECONDS = 2.0


class BrokerProbe:
    """Answers "is the broker reachable?", at most one metadata request per interval."""

    def __init__(self, settings: Settings) -> None:
        self._admin = admin_client(settings)
        self._checked = 0.0
        self._ok = False
        self._error = "not checked yet"
        self._lock = asyncio.Lock()

    def _metadata(self) -> None:
        meta = self._admin.list_topics(timeout=2)
        if not meta.brokers:
            raise RuntimeError("no brokers in metadata")

    async def check(self) -> tuple[bool, str]:
        async with self._lock:
            if time.monotonic() - self._checked > READY_CACHE_SECONDS:
                loop = asyncio.get_running_loop()
                try:
                    # confluent-kafka blocks: keep it off the event loop.
                    await loop.run_in_executor(None, self._metadata)
                    self._ok, self._error = True, ""
                except Exception as exc:  # noqa: BLE001 - reported as not ready, with the reason
                    self._ok, self._error = False, str(exc)
                self._checked = time.monotonic()
            return self._ok, self._error


def add_health_routes(app: web.Application, settings: Settings, registry: CollectorRegistry) -> None:
    probe = BrokerProbe(settings)
    up = Gauge("cardflow_api_broker_up", "1 when the broker answered a metadata request",
               registry=registry)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        from .cards import STORE_KEY

        ok, error = await probe.check()
        up.set(1 if ok else 0)
        if not ok:
            return web.json_response({"status": "not ready", "broker": error}, status=503)
        store = request.app.get(STORE_KEY)
        if store is not None and not store.loaded.is_set():  # a replica must not serve half the cards
            return web.json_response({"status": "not ready", "results": "still reading the results topic"},
                                     status=503)
        return web.json_response({"status": "ready"})

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
