"""The warehouse app (consumer group "warehouse"): events and profile changes → the warehouse.

    events ──load──▶ warehouse: events (ReplacingMergeTree, deduplicated inserts)
    profile-changes ──load──▶ warehouse: users (the latest version wins)

chDB opens its directory from one process only: this worker owns it, and serves what others
need to read from it on its web server (``/warehouse/stats/`` so far).
"""

from __future__ import annotations

import asyncio

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cardflow.agents.warehouse import EventLoader, UserLoader, WarehouseMetrics, load_events, load_users
from cardflow.app import create_app, raw_topic
from cardflow.batches import BatchingApp
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import EVENTS, PROFILE_CHANGES
from cardflow.connectors.warehouse import migrate, open_warehouse


def build_warehouse(settings: Settings) -> faust.App:
    app = create_app(settings, "warehouse", app_class=BatchingApp, batch_size=settings.batch_size,
                     batch_within=settings.batch_within_ms / 1000)
    assert isinstance(app, BatchingApp)
    events, changes = (raw_topic(app, settings, name) for name in (EVENTS, PROFILE_CHANGES))
    wh = open_warehouse(settings.effective_warehouse_url)
    migrate(wh)
    registry = CollectorRegistry()
    loader = EventLoader(wh, settings.decoder(), WarehouseMetrics(registry))

    load_events(app, events, loader)                      # events → warehouse.events
    load_users(app, changes, UserLoader(wh, loader.metrics))  # profile-changes → warehouse.users

    @app.page("/warehouse/stats/")
    async def stats(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(None, wh.query, (
            f"SELECT count() AS rows, uniqExact(event_id) AS event_ids, uniqExact(uid) AS users "
            f"FROM {wh.database}.events"))
        users = await loop.run_in_executor(None, wh.query, (
            f"SELECT count() AS profiles, sum(version) AS versions FROM {wh.database}.users FINAL"))
        return view.json({**{k: int(v) for k, v in rows[0].items()},
                          **{k: int(v or 0) for k, v in users[0].items()}})

    @app.page("/metrics/")
    async def metrics_page(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return view.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app
