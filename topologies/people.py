"""The people app (consumer group "people"): events → profiles → profile changes."""

from __future__ import annotations

import faust

from cardflow.agents.profiles import register_profiles_agent
from cardflow.app import create_app, table_options
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import EVENTS, EVENTS_DLQ, PROFILE_CHANGES


def build_people(settings: Settings) -> faust.App:
    app = create_app(settings, "people")
    events = app.topic(
        settings.topic(EVENTS), key_serializer="raw", value_serializer="raw",
        partitions=settings.partitions,
    )
    changes = app.topic(
        settings.topic(PROFILE_CHANGES), key_serializer="raw", value_serializer="raw",
        partitions=settings.partitions,
    )
    profiles = app.Table(
        "profiles", default=dict, partitions=settings.partitions,
        # Keys are plain UTF-8 uid bytes, like the events topic's keys.
        schema=faust.Schema(key_serializer="raw", value_serializer="json"),
        options=table_options(settings),
    )
    dlq = app.topic(
        settings.topic(EVENTS_DLQ), key_serializer="raw", value_serializer="raw",
        partitions=settings.partitions,
    )
    register_profiles_agent(app, events, profiles, changes, dlq, settings.decoder())
    return app
