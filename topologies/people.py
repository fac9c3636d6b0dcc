"""The people app (consumer group "people"): events → profiles → profile changes, plus lookups."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cardflow.agents.cards import (
    CardMetrics,
    CardScheduler,
    MapProcess,
    ResultPublisher,
    card_partition,
    partial_key,
    register_card_agents,
)
from cardflow.agents.profiles import PeopleMetrics, ProfileFolder, Topics, register_profiles
from cardflow.app import create_app, table_options
from cardflow.card_results import Partial
from cardflow.cards import Card, load_cards
from cardflow.config import Settings
from cardflow.connectors.faust_batches import BatchingApp
from cardflow.connectors.kafka_admin import (
    CARD_PARTIALS,
    EVENTS,
    EVENTS_DLQ,
    PROFILE_CHANGES,
    RESULTS,
    max_message_bytes,
)
from cardflow.connectors.producer import BatchSink, producer_config
from cardflow.profiles import decode_value, load_scripts

DAY_MS = 86_400_000


def raw_topic(app: faust.App, settings: Settings, name: str) -> faust.TopicT:
    return app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw",
                     partitions=settings.partitions)


def build_people(settings: Settings) -> faust.App:
    app = create_app(settings, "people", app_class=BatchingApp,
                     table_standby_replicas=settings.standby_replicas)
    topics = Topics(events=raw_topic(app, settings, EVENTS),
                    changes=raw_topic(app, settings, PROFILE_CHANGES),
                    dlq=raw_topic(app, settings, EVENTS_DLQ))
    # Keys are plain UTF-8 uid bytes like the events' keys; values are our own JSON bytes.
    # (A Schema would set only the changelog's codecs; the store follows key_type/value_type.)
    profiles = app.Table(
        "profiles", partitions=settings.partitions, options=table_options(settings),
        key_type=bytes, value_type=bytes,  # bytes means the "raw" codec for store and changelog
        extra_topic_configs={"max.message.bytes": max_message_bytes(settings)},
    )
    registry = CollectorRegistry()
    metrics = PeopleMetrics(registry)
    scripts = load_scripts(settings.profile_scripts)
    folder = ProfileFolder(
        profiles, topics, settings.decoder(), scripts,
        int(settings.dedup_horizon_days * DAY_MS), settings.partitions, metrics,
        # A batch's writes are flushed when it ends, and a flush sends at once, so the linger only
        # groups them into fewer, larger requests (2 ms → 200 ms: the broker's CPU for a million
        # events' writes fell from 20 s to 6 s, on cores the worker shares; docs/benchmarks.md).
        BatchSink(producer_config(settings, **{"linger.ms": 200, "queue.buffering.max.messages": 500_000})),
        settings.profile_cache_size, max_profile_bytes=settings.max_profile_bytes,
        max_record_bytes=settings.max_record_bytes,
    )
    register_profiles(app, topics, folder, settings.batch_size, settings.batch_within_ms / 1000)
    cards = load_cards(settings.cards, [s.name for s in scripts], settings.card_params)
    if cards:
        _add_cards(app, settings, cards, profiles, folder, topics, CardMetrics(registry))

    @app.page("/profiles/{uid}/")
    async def profile_page(view: faust.web.View, request: faust.web.Request, uid: str) -> faust.web.Response:
        try:
            response: faust.web.Response = await profile(view, request, uid=uid)  # type: ignore[call-arg]
            return response
        except TypeError as exc:
            # Faust's router has no metadata for the table yet (the worker is starting): retry.
            return view.json({"error": "not_ready", "message": f"this worker cannot route {uid!r} yet "
                              f"({exc}); retry in a moment"}, status=503)

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
        metrics.lag.clear()  # partitions this worker no longer holds have no lag of its own
        for tp in app.consumer.assignment():
            if tp.topic == topics.events.get_topic_name():
                high = app.consumer.highwater(tp)
                last = folder.last_offsets.get(tp.partition, -1)
                metrics.lag.labels(str(tp.partition)).set(max(0, (high or 0) - last - 1))
        return view.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def _add_cards(app: faust.App, settings: Settings, cards: tuple[Card, ...], profiles: faust.types.TableT,
               folder: ProfileFolder, topics: Topics, metrics: CardMetrics) -> None:
    partials = raw_topic(app, settings, CARD_PARTIALS)
    results = raw_topic(app, settings, RESULTS)
    events_topic = topics.events.get_topic_name()

    def owned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == events_topic}

    async def send(partial: Partial) -> None:
        await partials.send(key=partial_key(partial.card_id, partial.partition), value=partial.encode(),
                            partition=card_partition(partial.card_id, settings.partitions))

    process = MapProcess(settings, {card.id: card for card in cards}, metrics,
                         settings.data_dir / "card-maps" / app.conf.id)
    scheduler = CardScheduler(
        cards, process, send, owned, profiles.data.partition_path,  # type: ignore[attr-defined]
        busy=lambda: bool(app.rebalancing or getattr(app, "in_recovery", False)))
    folder.on_folded = scheduler.mark_changed

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _reload_maps(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        scheduler.reload_all()
    publisher = ResultPublisher(settings, cards, partials.get_topic_name(), metrics)
    register_card_agents(app, settings, cards, scheduler, publisher, partials, results)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    def _stop_maps(app: faust.App, **kwargs: Any) -> None:
        scheduler.close()
