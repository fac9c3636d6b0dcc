"""The archive app (consumer group "archive"): events, events-dlq → the data lake, byte for byte.

    events, events-dlq ──archive──▶ lake: topic=…/dt=…/hour=…/<topic>+<partition>+<first offset>.avro
"""

from __future__ import annotations

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cardflow.agents.archive import ArchiveMetrics, Archiver, archive_records
from cardflow.app import create_app, raw_topic
from cardflow.batches import BatchingApp
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import EVENTS, EVENTS_DLQ
from cardflow.connectors.lake import open_lake
from cardflow.connectors.lake_objects import check_format


def build_archive(settings: Settings) -> faust.App:
    check_format(settings.archive_format, settings.archive_codec)
    app = create_app(settings, "archive", app_class=BatchingApp, batch_size=settings.archive_batch_events,
                     batch_within=settings.archive_batch_seconds)
    assert isinstance(app, BatchingApp)
    events, dlq = (raw_topic(app, settings, name) for name in (EVENTS, EVENTS_DLQ))
    lake = open_lake(settings.effective_lake_url, settings.lake_endpoint_url, settings.lake_region,
                     settings.lake_multipart_bytes)
    lake.check()
    registry = CollectorRegistry()
    metrics = ArchiveMetrics(registry)
    archiver = Archiver(lake, settings.archive_format, settings.archive_codec, settings.archive_batch_bytes,
                        metrics, sleep=app.pause)

    archive_records(app, [events, dlq], archiver)           # events, events-dlq → the lake

    @app.page("/metrics/")
    async def metrics_page(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return view.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app
