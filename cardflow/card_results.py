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

from cardflow.cards import Card, decode_partial, encode_partial, placement
from cardflow.codec import AvroCodec
from cardflow.incremental import Change, PartitionPartials

CARD_PARTIAL = AvroCodec.named("CardPartial")
CARD_RESULT = AvroCodec.named("CardResult")


def partial_key(card_id: str, partition: int) -> bytes:
    """The key of a partial in card-partials: compaction keeps the latest per (card, partition)."""
    return f"{card_id}/{partition}".encode()


def card_partition(card_id: str, partitions: int) -> int:
    """The card-partials partition holding every partial of a card placed by ``card_id`` (its id,
    or the id its group of cards that use each other is placed by: ``placement``); one reducer
    owns a card."""
    # Imported here: it brings aiokafka, which the map process (importing this module) does not need.
    from cardflow.partitioning import partition_of

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
        self.place = placement(cards)
        self._partials: dict[str, dict[int, Partial]] = {card.id: {} for card in cards}
        self._totals: dict[str, Any] = {}  # card → its total, until a new partial of it is kept
        self.users: dict[str, set[str]] = {card.id: set() for card in cards}  # card → cards using it
        for card in cards:
            for used in card.uses:
                self.users[used].add(card.id)

    def dependents(self, card_ids: Iterable[str]) -> set[str]:
        """``card_ids`` and every card using one of them, directly or through others."""
        out: set[str] = set()
        todo = list(card_ids)
        while todo:
            card_id = todo.pop()
            if card_id not in out:
                out.add(card_id)
                todo.extend(self.users.get(card_id, ()))
        return out

    def total(self, card_id: str) -> Any:
        """The card's total over its latest partials (None: a card without partials)."""
        if card_id not in self._totals:
            partials = sorted(self._partials[card_id].values(), key=lambda p: p.partition)
            self._totals[card_id] = self.cards[card_id].total(decode_partial(p.partial) for p in partials)
        return self._totals[card_id]

    def offsets(self, card_id: str) -> dict[int, int]:
        """Per partition, the events offset the card's result includes: its partials', and for a
        card built on cards, the least of theirs (its result is only as new as the oldest)."""
        card = self.cards[card_id]
        own = {p: partial.offset for p, partial in self._partials[card_id].items()}
        sources = [own] if card.maps() else []
        sources += [self.offsets(used) for used in card.uses]
        if len(sources) == 1:
            return sources[0]
        common = set.intersection(*(set(s) for s in sources)) if sources else set()
        return {p: min(s[p] for s in sources) for p in sorted(common)}

    def complete(self, card_id: str) -> bool:
        """Every partition has a partial of the card's configuration, and so has every card it uses."""
        card = self.cards[card_id]
        own = not card.maps() or set(self._partials[card_id]) >= set(range(self.partitions))
        return own and all(self.complete(used) for used in card.uses)

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
        self._totals.pop(partial.card_id, None)
        return True

    def result(self, card_id: str) -> dict[str, Any]:
        """The CardResult record for ``card_id``."""
        card = self.cards[card_id]
        partials = sorted(self._partials[card_id].values(), key=lambda p: p.partition)
        if not card.maps():  # built on other cards only: as fresh as they are
            partials = [p for used in card.uses for p in self._partials[used].values()]
        started = time.perf_counter()
        record: dict[str, Any] = {
            "card_id": card.id, "card_version": card.version, "title": card.title, "summary": "",
            "widgets": "[]", "generated_at": int(time.time() * 1000),
            "max_ts": max((p.max_ts for p in partials), default=0),
            "offsets": {str(p): o for p, o in self.offsets(card_id).items()},
            "run_ms": 0.0, "error": None, "config": self.configs[card_id],
            "partitions": len(self._partials[card_id]) if card.maps() else self.partitions,
            "complete": self.complete(card_id),
        }
        failed = [p for p in partials if p.error]
        if failed:
            record["error"] = f"partition {failed[0].partition}: {failed[0].error}"
        else:
            try:
                total = self.total(card_id)
                used = {u: self.total(u) for u in card.uses}
                record["widgets"] = _json(card.widgets(total, used))
                record["summary"] = card.summary_of(total, used)
            except Exception as exc:  # noqa: BLE001 - user code: reported in the result
                record["error"] = _describe("reduce/render", exc)
        record["run_ms"] = (time.perf_counter() - started) * 1000 + sum(p.run_ms for p in partials)
        return record


def served(record: dict[str, Any]) -> dict[str, Any]:
    """A CardResult record as the API serves it (and the dashboard draws it)."""
    return {"id": record["card_id"], "version": record["card_version"], "title": record["title"],
            "summary": record["summary"], "widgets": orjson.loads(record["widgets"]),
            "generated_at": record["generated_at"], "max_ts": record["max_ts"],
            "offsets": record["offsets"], "run_ms": round(record["run_ms"], 3), "error": record["error"],
            "config": record["config"], "complete": record["complete"], "partitions": record["partitions"]}


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _describe(stage: str, exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
    return f"{stage} raised {type(exc).__name__}: {exc}{where}"
