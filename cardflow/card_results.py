"""From card partials to card results: the reducer's logic, free of Kafka and Faust.

The reducer keeps the latest partial per (card, partition); a newer partial
for a partition replaces the old one whichever worker sent it, so a
partition that moved between workers is never counted twice or lost. A
result merges the partials, renders the widgets and carries the input
watermark (latest event time and offset per partition). A card that raised
in ``map`` on any partition, or raises in ``reduce``/``render``, gives an
error result instead of widgets.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from cardflow.cards import Card, decode_partial, encode_partial
from cardflow.codec import AvroCodec
from cardflow.incremental import Change, PartitionPartials
from cardflow.partitioning import partition_of

CARD_PARTIAL = AvroCodec.named("CardPartial")
CARD_RESULT = AvroCodec.named("CardResult")


def partial_key(card_id: str, partition: int) -> bytes:
    """The key of a partial in card-partials: compaction keeps the latest per (card, partition)."""
    return f"{card_id}/{partition}".encode()


def card_partition(card_id: str, partitions: int) -> int:
    """The card-partials partition holding every partial of ``card_id`` (one reducer owns a card)."""
    return partition_of(card_id.encode(), partitions)


@dataclass(frozen=True)
class Partial:
    card_id: str
    card_version: str
    partition: int
    partial: bytes
    max_ts: int
    offset: int
    produced_at: int
    run_ms: float
    error: str | None
    config: str = ""

    @classmethod
    def decode(cls, data: bytes) -> Partial:
        return cls(**CARD_PARTIAL.decode(data))

    def encode(self) -> bytes:
        return CARD_PARTIAL.encode(self.__dict__)


def map_partition(card: Card, partition: int, profiles: Iterable[dict[str, Any]], max_ts: int,
                  offset: int) -> Partial:
    """Run ``card.map`` over one partition's profiles; an exception becomes the partial's error."""
    return _partial(card, partition, "map", lambda: card.map(profiles), max_ts, offset)


def incremental_partial(partials: PartitionPartials, card: Card, partition: int, changes: list[Change],
                        profiles: Callable[[], Iterable[dict[str, Any]]], max_ts: int,
                        offset: int) -> Partial:
    """Bring an incremental card's partial of one partition up to date with ``changes`` (or with
    a pass over ``profiles()`` when it needs one); an exception becomes the partial's error."""

    def update() -> Any:
        if not partials.needs_pass(card.id):  # else the pass below covers the changes
            partials.change(card.id, changes)
        if partials.needs_pass(card.id):
            partials.rebuild(card.id, profiles())
        return partials.partial(card.id)

    return _partial(card, partition, "contribute", update, max_ts, offset)


def _partial(card: Card, partition: int, stage: str, compute: Callable[[], Any], max_ts: int,
             offset: int) -> Partial:
    started = time.perf_counter()
    try:
        encoded, error = encode_partial(compute()), None
    except Exception as exc:  # noqa: BLE001 - user code: reported in the result, never fatal
        encoded, error = b"null", _describe(stage, exc)
    return Partial(card.id, card.version, partition, encoded, max_ts, offset,
                   int(time.time() * 1000), (time.perf_counter() - started) * 1000, error, card.config)


class CardReducer:
    """The latest partial per (card, partition) of each card's current configuration, and the
    result they make: ``complete`` once all ``partitions`` have one."""

    def __init__(self, cards: tuple[Card, ...], partitions: int) -> None:
        self.cards = {card.id: card for card in cards}
        self.configs = {card.id: card.config for card in cards}
        self.partitions = partitions
        self._partials: dict[str, dict[int, Partial]] = {card.id: {} for card in cards}

    def add(self, partial: Partial) -> bool:
        """Keep ``partial`` unless an as-new one for its partition is held; True when kept.
        A partial of another version or configuration of the card is never merged (it would mix
        two meanings into one table)."""
        held = self._partials.get(partial.card_id)
        if held is None or (partial.card_version, partial.config) != (
                self.cards[partial.card_id].version, self.configs[partial.card_id]):
            return False  # an unknown card, or a partial of another version or configuration
        old = held.get(partial.partition)
        if old is not None and (old.offset, old.produced_at) > (partial.offset, partial.produced_at):
            return False
        held[partial.partition] = partial
        return True

    def result(self, card_id: str) -> dict[str, Any]:
        """The CardResult record for ``card_id``."""
        card = self.cards[card_id]
        partials = sorted(self._partials[card_id].values(), key=lambda p: p.partition)
        started = time.perf_counter()
        record: dict[str, Any] = {
            "card_id": card.id, "card_version": card.version, "title": card.title, "summary": "",
            "widgets": "[]", "generated_at": int(time.time() * 1000),
            "max_ts": max((p.max_ts for p in partials), default=0),
            "offsets": {str(p.partition): p.offset for p in partials}, "run_ms": 0.0, "error": None,
            "config": self.configs[card_id], "partitions": len(partials),
            "complete": {p.partition for p in partials} >= set(range(self.partitions)),
        }
        failed = [p for p in partials if p.error]
        if failed:
            record["error"] = f"partition {failed[0].partition}: {failed[0].error}"
        else:
            try:
                total = card.total(decode_partial(p.partial) for p in partials)
                record["widgets"] = _json(card.widgets(total))
                record["summary"] = str(card.summary(total))
            except Exception as exc:  # noqa: BLE001 - user code: reported in the result
                record["error"] = _describe("reduce/render", exc)
        record["run_ms"] = (time.perf_counter() - started) * 1000 + sum(p.run_ms for p in partials)
        return record


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _describe(stage: str, exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
    return f"{stage} raised {type(exc).__name__}: {exc}{where}"
