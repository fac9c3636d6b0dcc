"""The card reducer: [card-partials] → merge → render → [results].

Partials are keyed ``card/partition`` (the topic is compacted, so it always
holds the latest partial of every partition) and all partials of a card go to
one partition of ``card-partials``, chosen by the card id. The reducer keeps
the latest partial per (card, partition) — a newer partial replaces the old
one whichever worker made it — merges, renders and publishes the result to
the compacted ``results`` topic. When it gets a partition of
``card-partials`` (start, rebalance) it first reads that partition from the
beginning, so its state never depends on what an earlier owner held in memory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from cardflow.agents.card_metrics import CardMetrics
from cardflow.card_results import CARD_RESULT, CardReducer, Partial, card_partition
from cardflow.cards import Card
from cardflow.config import Settings
from cardflow.connectors.kafka_read import manual_consumer, read_to_end

log = logging.getLogger(__name__)


class ResultPublisher:
    """The reducer's state: the latest partials per (card, partition) of the card-partials partitions
    this worker owns, loaded from the topic's start when a partition is first seen."""

    def __init__(self, settings: Settings, cards: tuple[Card, ...], partials_topic: str,
                 metrics: CardMetrics) -> None:
        self.settings = settings
        self.reducer = CardReducer(cards, settings.partitions)
        self.partials_topic = partials_topic
        self.metrics = metrics
        self.loaded: set[int] = set()

    def cards_of(self, partition: int) -> list[str]:
        """The cards whose partials live on ``partition`` of card-partials (only their owner renders them)."""
        n = self.settings.partitions
        place = self.reducer.place
        return [card_id for card_id in self.reducer.cards if card_partition(place[card_id], n) == partition]

    def forget(self) -> None:
        """After a rebalance: reload every partition when it is next seen."""
        self.loaded.clear()

    def load(self, partition: int, upto: int) -> int:
        """Read ``partition`` of card-partials from its start up to (not including) ``upto``; blocking."""
        consumer = manual_consumer(self.settings, f"{self.settings.topic_prefix}cardflow-reducer-load")
        kept = 0
        try:
            for msg in read_to_end(consumer, self.partials_topic, {partition: 0}, timeout=30.0):
                if msg.offset() >= upto:
                    break
                try:
                    kept += self.reducer.add(Partial.decode(msg.value()))
                except Exception:  # noqa: BLE001 - counted; the live path logs it
                    self.metrics.bad_partials.inc()
        finally:
            consumer.close()
        return kept

    def render(self, card_id: str) -> bytes:
        record = self.reducer.result(card_id)
        self.metrics.results.labels(card_id, "error" if record["error"] else "ok").inc()
        return CARD_RESULT.encode(record)


def reduce_cards(app: faust.App, settings: Settings, cards: tuple[Card, ...], partials: faust.TopicT,
                 results: faust.TopicT, metrics: CardMetrics) -> None:
    """The reducer stage: ``partials`` → ``results``, one agent per worker (concurrency 1)."""
    publisher = ResultPublisher(settings, cards, partials.get_topic_name(), metrics)

    @app.agent(partials, name="card-reducer", concurrency=1)
    async def reduce(stream: faust.StreamT[bytes]) -> None:
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(1000, within=0.05):  # type: ignore[attr-defined]
            changed: set[str] = set()
            for event in batch:
                message = event.message
                if message.partition not in publisher.loaded:
                    await loop.run_in_executor(None, publisher.load, message.partition, message.offset)
                    publisher.loaded.add(message.partition)
                    changed.update(publisher.cards_of(message.partition))
                try:
                    partial = Partial.decode(message.value)
                except Exception as exc:  # noqa: BLE001 - not ours: skipped, logged and counted
                    publisher.metrics.bad_partials.inc()
                    log.error("card-partials %d@%d is not a CardPartial (%s); skipped",
                              message.partition, message.offset, exc)
                    continue
                if publisher.reducer.add(partial):
                    changed.add(partial.card_id)
            for card_id in sorted(publisher.reducer.dependents(changed)):  # and the cards using them
                await results.send(key=card_id.encode(), value=publisher.render(card_id))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _forget(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        publisher.forget()

    del reduce, _forget
