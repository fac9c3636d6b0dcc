"""Card maps in the people topology: [profile-changes] → map per partition → [card-partials].

The card agent consumes ``profile-changes``, co-partitioned with the profiles
table: a worker gets the changes of the partitions whose profiles it holds,
marks those partitions and keys dirty, and every tick the scheduler
(agents/card_scheduler.py) runs the maps of the cards whose debounce has
passed over the dirty partitions, in a child process (agents/card_maps.py)
reading the profiles that changed (the worker's stored values) or, for a whole pass, the
partition's RocksDB. Each partial goes to ``card-partials``,
where the reducer (agents/card_reducer.py) turns them into results.

Because the trigger is the topic, not a call from the folder, a card worker
can also run apart from the profiles worker, reading the same topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import faust

from cardflow.agents.card_maps import MapProcess
from cardflow.agents.card_metrics import CardMetrics
from cardflow.agents.card_scheduler import CardScheduler
from cardflow.batches import BatchingApp, RecordRun, partition_directory, read_stored
from cardflow.card_results import Partial, card_partition, partial_key
from cardflow.cards import Card, placement
from cardflow.config import Settings

log = logging.getLogger(__name__)


def changed_keys(runs: list[RecordRun]) -> dict[int, set[bytes]]:
    """The profile keys that profile-change records name, per partition (a record's key is its
    user's profile key, on the profile's partition)."""
    changed: dict[int, set[bytes]] = defaultdict(set)
    for run in runs:
        keys = changed[run.partition]
        keys.update(record.key for record in run.records if record.key is not None)
    return changed


def map_cards(app: BatchingApp, settings: Settings, cards: tuple[Card, ...], changes: faust.TopicT,
              profiles: faust.types.TableT, partials: faust.TopicT, metrics: CardMetrics) -> None:
    """The map stage: ``changes`` (profile-changes) and the ``profiles`` table → ``partials``."""
    changes_topic = changes.get_topic_name()
    place = placement(cards)
    cards = tuple(card for card in cards if card.maps())  # the others are rendered from these

    def owned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == changes_topic}

    async def send(partial: Partial) -> None:
        await partials.send(key=partial_key(partial.card_id, partial.partition), value=partial.encode(),
                            partition=card_partition(place[partial.card_id], settings.partitions))

    process = MapProcess(settings, {card.id: card for card in cards}, metrics,
                         settings.data_dir / "card-maps" / app.conf.id)
    scheduler = CardScheduler(cards, process, send, owned, lambda p: partition_directory(profiles.data, p),
                              busy=lambda: app.recovering, behind_factor=settings.card_behind_factor,
                              read=lambda p, keys: read_stored(profiles.data, p, keys))
    app.health_reports["cards_behind"] = scheduler.behind

    async def mark(runs: list[RecordRun]) -> None:
        scheduler.mark_changed(changed_keys(runs))  # nothing to make durable: acknowledged at once

    # First in a batch: the maps can start while the batch's events are folded.
    app.batches(changes, mark, first=True)

    @app.task
    async def run_cards() -> None:
        # A loop, not app.timer: a tick that runs maps may take longer than the interval.
        while True:
            await asyncio.sleep(settings.card_tick_ms / 1000)
            try:
                await scheduler.tick()
            except Exception:
                if app.should_stop:
                    return  # stopping: the map process may already be gone with the signal
                log.exception("card maps failed; retrying next tick")
                scheduler.mark_dirty(scheduler.owned())

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _reload_maps(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        scheduler.reload_all()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    def _stop_maps(app: faust.App, **kwargs: Any) -> None:
        scheduler.close()

    del run_cards, _reload_maps, _stop_maps
