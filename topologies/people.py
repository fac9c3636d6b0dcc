"""The people app (consumer group "people"): events → profiles → cards → results.

    events ──fold──▶ profiles table ──▶ profile-changes ──map──▶ card-partials ──reduce──▶ results
              └────▶ events-dlq (what cannot be folded, with its reason)
"""

from __future__ import annotations

import itertools

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cardflow.agents.card_metrics import CardMetrics
from cardflow.agents.card_reducer import reduce_cards
from cardflow.agents.cards import map_cards
from cardflow.agents.derived import DerivedSink
from cardflow.agents.folder import PeopleMetrics, ProfileFolder, Topics
from cardflow.agents.profiles import fold_profiles
from cardflow.app import create_app, raw_topic, table_options
from cardflow.batches import BatchingApp, is_table_key, partition_db
from cardflow.cards import load_cards
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import (
    CARD_PARTIALS,
    EVENTS,
    EVENTS_DLQ,
    PROFILE_CHANGES,
    RESULTS,
    max_message_bytes,
)
from cardflow.connectors.producer import BatchSink
from cardflow.kafka_clients import sink_config
from cardflow.profile_values import decode_value
from cardflow.profiles import ScriptSet, load_scripts

DAY_MS = 86_400_000


def build_people(settings: Settings) -> faust.App:
    app = create_app(settings, "people", app_class=BatchingApp, batch_size=settings.batch_size,
                     batch_within=settings.batch_within_ms / 1000,
                     table_standby_replicas=settings.standby_replicas)
    assert isinstance(app, BatchingApp)
    names = (EVENTS, PROFILE_CHANGES, EVENTS_DLQ, CARD_PARTIALS, RESULTS)
    events, changes, dlq, partials, results = (raw_topic(app, settings, name) for name in names)
    profiles = profiles_table(app, settings)
    scripts = ScriptSet(load_scripts(settings.profile_scripts), settings.profile_script_timeout_ms / 1000,
                        settings.profile_script_max_failures, max_derived_depth=settings.max_derived_depth)
    scripts.start()  # the time budget's signal handler: here, on the main thread
    cards = load_cards(settings.cards, [s.name for s in scripts.scripts], settings.card_params)
    registry = CollectorRegistry()

    folder = ProfileFolder(
        profiles, Topics(events=events, changes=changes, dlq=dlq), settings.decoder(), scripts,
        int(settings.dedup_horizon_days * DAY_MS), settings.partitions, PeopleMetrics(registry),
        BatchSink(sink_config(settings)), settings.profile_cache_size,
        max_profile_bytes=settings.max_profile_bytes, max_record_bytes=settings.max_record_bytes,
        derived=DerivedSink(settings, events.get_topic_name()))
    fold_profiles(app, events, folder)                    # events → profiles, profile-changes, events-dlq
    if cards:
        card_metrics = CardMetrics(registry)
        map_cards(app, settings, cards, changes, profiles, partials, card_metrics)  # → card-partials
        reduce_cards(app, settings, cards, partials, results, card_metrics)        # → results

    profile_pages(app, profiles, events.get_topic_name())
    metrics_page(app, registry, folder)
    return app


def profiles_table(app: faust.App, settings: Settings) -> faust.types.TableT:
    """One profile per user. Keys are plain UTF-8 uid bytes like the events' keys; values are the
    stored form of cardflow/profile_values.py. (A Schema would set only the changelog's codecs;
    the store follows key_type/value_type, and bytes means the "raw" codec for both.)"""
    return app.Table(
        "profiles", partitions=settings.partitions, options=table_options(settings),
        key_type=bytes, value_type=bytes,
        extra_topic_configs={"max.message.bytes": max_message_bytes(settings)},
    )


def profile_pages(app: faust.App, profiles: faust.types.TableT, events_topic: str) -> None:
    """``GET /profiles/{uid}/`` on any worker: answered by the worker holding the profile."""

    @app.page("/profiles/{uid}/")
    async def profile_page(view: faust.web.View, request: faust.web.Request, uid: str) -> faust.web.Response:
        try:
            response: faust.web.Response = await profile(view, request, uid=uid)  # type: ignore[call-arg]
            return response
        except TypeError as exc:
            # Faust's router has no metadata for the table yet (the worker is starting): retry.
            return view.json({"error": "not_ready", "message": f"this worker cannot route {uid!r} yet "
                              f"({exc}); retry in a moment"}, status=503)

    @app.page("/profiles/")
    async def sample_page(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """Up to ``?limit=`` uids (at most 200) from this worker's own partitions: a profiles
        browser's sample, spread over the partitions."""
        try:
            limit = max(1, min(200, int(request.query.get("limit", "20"))))
        except ValueError:
            limit = 20
        owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == events_topic)
        found: list[list[str]] = []
        for partition in owned:  # up to the limit from each, then taken in turns: spread, and full
            keys = (k.decode() for k in partition_db(profiles.data, partition).keys() if is_table_key(k))
            found.append(list(itertools.islice(keys, limit)))
        uids = [uid for turn in itertools.zip_longest(*found) for uid in turn if uid is not None]
        return view.json({"uids": uids[:limit]})

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


def metrics_page(app: faust.App, registry: CollectorRegistry, folder: ProfileFolder) -> None:
    """``GET /metrics/``: Prometheus text, with the lag of the events partitions this worker holds."""
    events_topic = folder.names["events"]

    @app.page("/metrics/")
    async def metrics(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        lag = folder.metrics.lag
        lag.clear()  # partitions this worker no longer holds have no lag of its own
        for tp in app.consumer.assignment():
            if tp.topic == events_topic:
                high = app.consumer.highwater(tp)
                last = folder.last_offsets.get(tp.partition, -1)
                lag.labels(str(tp.partition)).set(max(0, (high or 0) - last - 1))
        return view.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
