"""The people app (consumer group "people"): events → profiles → profile changes, plus lookups."""

from __future__ import annotations

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cardflow.agents.profiles import PeopleMetrics, ProfileFolder, Topics, register_profiles_agent
from cardflow.app import create_app, table_options
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import EVENTS, EVENTS_DLQ, PROFILE_CHANGES
from cardflow.profiles import decode_value, load_scripts

DAY_MS = 86_400_000


def build_people(settings: Settings) -> faust.App:
    app = create_app(settings, "people")
    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions)

    topics = Topics(events=raw_topic(EVENTS), changes=raw_topic(PROFILE_CHANGES), dlq=raw_topic(EVENTS_DLQ))
    # Keys are plain UTF-8 uid bytes like the events' keys; values are our own JSON bytes.
    # (A Schema would set only the changelog's codecs; the store follows key_type/value_type.)
    profiles = app.Table(
        "profiles", partitions=settings.partitions, options=table_options(settings),
        key_type=bytes, value_type=bytes,  # bytes means the "raw" codec for store and changelog
    )
    registry = CollectorRegistry()
    metrics = PeopleMetrics(registry)
    folder = ProfileFolder(
        profiles, topics, settings.decoder(), load_scripts(settings.profile_scripts),
        int(settings.dedup_horizon_days * DAY_MS), settings.partitions, metrics,
    )
    register_profiles_agent(app, topics, folder, settings.batch_size, settings.batch_within_ms / 1000)

    @app.page("/profiles/{uid}/")
    @app.table_route(table=profiles, match_info="uid")
    async def profile(view: faust.web.View, request: faust.web.Request, uid: str) -> faust.web.Response:
        stored = profiles.get(uid)
        if stored is None:
            return view.json({"error": "not_found", "message": f"no profile for uid {uid!r}"}, status=404)
        value = decode_value(stored)
        meta = value["meta"]
        return view.json({"uid": uid, "profile": value["profile"],
                         "meta": {"offset": meta["offset"], "version": meta["version"],
                                  "max_ts": meta["max_ts"]}})

    @app.page("/metrics/")
    async def metrics_page(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        for tp in app.consumer.assignment():
            if tp.topic == topics.events.get_topic_name():
                high = app.consumer.highwater(tp)
                last = folder.last_offsets.get(tp.partition, -1)
                metrics.lag.labels(str(tp.partition)).set(max(0, (high or 0) - last - 1))
        return view.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app
