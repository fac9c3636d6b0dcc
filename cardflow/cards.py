"""The card SDK: a few lines of Python over all profiles become a dashboard card.

A card runs as map (per partition, next to the profiles) → reduce (merge the
partials) → render (widgets). Partials made of numbers, Counters, sets,
roaring bitmaps and dicts/lists of these merge without a ``reduce``.

A card that defines ``contribute(profile)`` — one profile's share of the
partial — instead of ``map`` is *incremental*: when profiles change, the
runtime takes their old shares out and puts the new ones in, so a round costs
what changed, not the number of profiles (cardflow/incremental.py).

Your first card::

    from cardflow.cards import Card
    from cardflow.widgets import Number

    class Buyers(Card):
        title = "Buyers"
        def map(self, profiles):
            return sum(1 for p in profiles if p.get("events", {}).get("purchase"))
        def render(self, total):
            return [Number(total, label="users who bought")]

The same card, incremental::

    class Buyers(Card):
        def contribute(self, profile):
            return 1 if profile.get("events", {}).get("purchase") else 0
        def render(self, total):
            return [Number(total or 0, label="users who bought")]
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import orjson
from pyroaring import BitMap

from cardflow.errors import CardError
from cardflow.incremental import accumulate, materialize, retract
from cardflow.plugins import objects_at
from cardflow.widgets import Widget, WidgetError


class Card:
    """Subclass and define ``map`` (or ``contribute``) and ``render``; ``reduce``, ``retract``,
    ``window`` and ``summary`` are optional.

    Class attributes: ``title``, ``version`` (bump when the output changes),
    ``params`` (defaults, overridable per deployment), ``requires`` (profile
    script names the card reads), ``uses`` (ids of cards whose latest totals
    ``render(total, cards)`` gets; a card with ``uses`` may have no ``map`` at
    all), ``debounce`` (seconds between runs per partition), ``schedule`` (run
    on a schedule instead of on every change: an interval such as ``"5m"``, or
    a cron expression) and ``budget`` (seconds a run may take).
    """

    id: ClassVar[str] = ""
    title: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    params: ClassVar[dict[str, Any]] = {}
    requires: ClassVar[tuple[str, ...]] = ("standard",)
    uses: ClassVar[tuple[str, ...]] = ()
    schedule: ClassVar[str | None] = None
    examples: ClassVar[list[dict[str, Any]]] = []  # for `cardflow card test`: events in, summary/total out
    debounce: ClassVar[float] = 1.0
    budget: ClassVar[float] = 10.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("id"):
            cls.id = re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__).lower()
        if not cls.__dict__.get("title"):
            cls.title = cls.__name__

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.params)
        if unknown:
            raise CardError(f"card {self.id!r}: unknown parameter(s) {sorted(unknown)}; "
                            f"it takes {sorted(self.params)}")
        self.p: dict[str, Any] = {**self.params, **params}
        self.timetable = Schedule.parse(self.schedule, self.id) if self.schedule else None
        cls = type(self)
        if self.incremental() and cls.reduce is not Card.reduce and cls.retract is Card.retract:
            raise CardError(f"card {self.id!r} defines contribute() and its own reduce(), so its partial "
                            "is not plain: define retract() too (raise cardflow.incremental.Rebuild "
                            "when a share cannot be taken back), or use map() instead of contribute()")

    @property
    def config(self) -> str:
        """A digest of what the card's partials mean: its class, version and parameters. Partials
        and results carry it, so a result never mixes two configurations of a card."""
        what = [type(self).__module__, type(self).__qualname__, self.version, self.p]
        return hashlib.sha256(orjson.dumps(what, option=orjson.OPT_SORT_KEYS, default=repr)).hexdigest()[:16]

    @classmethod
    def incremental(cls) -> bool:
        """True when the card defines ``contribute``."""
        return cls.contribute is not Card.contribute

    @property
    def cadence(self) -> float:
        """Seconds between two runs: the schedule's period, else the debounce."""
        return self.timetable.period if self.timetable is not None else self.debounce

    @classmethod
    def maps(cls) -> bool:
        """True when the card reads profiles (``map`` or ``contribute``); a card built only on
        the cards it ``uses`` does not."""
        return cls.incremental() or cls.map is not Card.map

    def map(self, profiles: Iterable[dict[str, Any]]) -> Any:
        """The partial of one partition. ``profiles`` are streamed from the partition's store:
        read them, never change them. An incremental card's default adds up its contributions."""
        if not self.incremental():
            raise NotImplementedError(f"card {self.id!r} has neither map() nor contribute()")
        state = None
        for profile in profiles:
            state = self.accumulate(state, self.contribute(profile))
        return self.finish(state)

    def contribute(self, profile: dict[str, Any]) -> Any:
        """One profile's share of its partition's partial (None: nothing). Must depend on the
        profile (and the params, and ``window()``) only, so that the share it gave can be
        computed again and taken back when the profile changes."""
        raise NotImplementedError(f"card {self.id!r} has no contribute()")

    def window(self) -> Any:
        """For cards whose contributions depend on the time (a window ending today): a value
        that changes when the window moves (e.g. today's date). Each change re-maps every
        partition once; None (the default) never does."""
        return None

    def accumulate(self, state: Any, part: Any) -> Any:
        """Add one contribution to a partition's running partial (default: plain partials, sets
        and bitmaps counted; a card with its own ``reduce`` uses it)."""
        if type(self).reduce is Card.reduce:
            return accumulate(state, part)
        return part if state is None else self.reduce(state, part) if part is not None else state

    def retract(self, state: Any, part: Any) -> Any:
        """Take one contribution back out; raise ``cardflow.incremental.Rebuild`` when it cannot
        be done exactly (the runtime then maps the partition again)."""
        return retract(state, part)

    def finish(self, state: Any) -> Any:
        """The running partial as ``reduce`` and ``render`` see it (a fresh copy)."""
        return materialize(state) if type(self).reduce is Card.reduce else state

    def reduce(self, a: Any, b: Any) -> Any:
        return merge(a, b)

    def render(self, total: Any) -> list[Widget]:
        """The widgets of ``total``. A card with ``uses`` defines ``render(self, total, cards)``
        and gets each used card's latest total by id (None while it has none); its ``summary``
        may take ``cards`` too."""
        raise NotImplementedError(f"card {self.id!r} has no render()")

    def summary(self, total: Any) -> str:
        return ""

    def summary_of(self, total: Any, cards: Mapping[str, Any] | None = None) -> str:
        """``summary``, given ``cards`` when it takes them."""
        if self.uses and len(inspect.signature(self.summary).parameters) >= 2:
            return str(self.summary(total, cards))  # type: ignore[call-arg]
        return str(self.summary(total))

    def total(self, partials: Iterable[Any]) -> Any:
        """All partials reduced into one (None when there are none)."""
        result: Any = None
        for partial in partials:
            result = partial if result is None else self.reduce(result, partial)
        return result

    def widgets(self, total: Any, cards: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``render`` checked and serialised; WidgetError names what is wrong."""
        rendered = self.render(total, cards) if self.uses else self.render(total)  # type: ignore[call-arg]
        if isinstance(rendered, Widget):
            rendered = [rendered]
        out = []
        for i, widget in enumerate(rendered):
            if not isinstance(widget, Widget):
                raise WidgetError(f"card {self.id!r}: render()[{i}] is not a widget: {widget!r}")
            out.append(widget.to_json())
        return out


def merge(a: Any, b: Any) -> Any:
    """Merge two plain partials: numbers add, Counters add, sets and bitmaps unite,
    dicts merge key by key, lists merge element by element."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, bool) or isinstance(b, bool):
        raise CardError("booleans do not merge; use 0/1 or define reduce()")
    if isinstance(a, Counter) and isinstance(b, Mapping):
        out = Counter(a)
        out.update(b)
        return out
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a + b
    if isinstance(a, BitMap) and isinstance(b, BitMap):
        return a | b
    if isinstance(a, set | frozenset) and isinstance(b, set | frozenset):
        return a | b
    if isinstance(a, dict) and isinstance(b, dict):
        out_d = dict(a)
        for key, value in b.items():
            out_d[key] = merge(out_d.get(key), value)
        return out_d
    if isinstance(a, list) and isinstance(b, list):
        longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
        return [merge(x, shorter[i]) if i < len(shorter) else x for i, x in enumerate(longer)]
    raise CardError(f"cannot merge {type(a).__name__} with {type(b).__name__}; define reduce()")


def encode_partial(value: Any) -> bytes:
    """JSON with tags for Counters, sets and bitmaps, so partials cross Kafka intact."""
    return orjson.dumps(_tag(value))


def decode_partial(data: bytes) -> Any:
    return _untag(orjson.loads(data))


def _tag(value: Any) -> Any:
    if isinstance(value, Counter):
        return {"$counter": [[k, v] for k, v in value.items()]}
    if isinstance(value, BitMap):
        return {"$bitmap": base64.b64encode(value.serialize()).decode()}
    if isinstance(value, set | frozenset):
        return {"$set": sorted(value, key=repr)}
    if isinstance(value, dict):
        return {"$dict": [[k, _tag(v)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_tag(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise CardError(f"a partial cannot hold {type(value).__name__}; use numbers, str, Counter, "
                    "set, BitMap, dict or list")


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(v) for v in value]
    if isinstance(value, dict):
        if "$counter" in value:
            return Counter({_key(k): v for k, v in value["$counter"]})
        if "$bitmap" in value:
            return BitMap.deserialize(base64.b64decode(value["$bitmap"]))
        if "$set" in value:
            return {_key(v) for v in value["$set"]}
        if "$dict" in value:
            return {_key(k): _untag(v) for k, v in value["$dict"]}
    return value


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def load_cards(paths: Iterable[str], scripts: Iterable[str],
               params: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[Card, ...]:
    """Card instances from modules (every Card subclass defined there) or ``module:Class``, with
    their ``params``; a ``params`` entry with a ``"card"`` key runs that card once more under the
    entry's own id (``{"retention-weekly": {"card": "retention", "period": "weeks"}}``).

    Raises CardError when a card needs a profile script that is not loaded, or ``params`` names a
    card that is not loaded.
    """
    available = set(scripts)
    params = params or {}
    cards: dict[str, Card] = {}
    by_id: dict[str, type[Card]] = {}
    for path in paths:
        try:
            candidates = objects_at(path, "the card paths")
        except ImportError as exc:
            raise CardError(f"card {exc}") from exc
        classes: list[type[Card]] = [c for c in candidates
                                     if inspect.isclass(c) and issubclass(c, Card) and c is not Card]
        if not classes:
            raise CardError(f"{path!r} holds no Card subclass")
        for cls in classes:
            missing = sorted(set(cls.requires) - available)
            if missing:
                raise CardError(f"card {cls.id!r} needs profile script(s) {missing}, which are not loaded; "
                                "add them to CARDFLOW_PROFILE_SCRIPTS")
            if cls.id in cards:
                raise CardError(f"two cards have the id {cls.id!r}")
            own = dict(params.get(cls.id, {}))
            if own.pop("card", cls.id) != cls.id:
                raise CardError(f"card_params[{cls.id!r}]: {cls.id!r} is a loaded card's id; give the "
                                "other configuration an id of its own")
            cards[cls.id] = cls(**own)
            by_id[cls.id] = cls
    for card_id, entry in params.items():
        if card_id in cards:
            continue
        base = entry.get("card") if isinstance(entry, Mapping) else None
        if base is None:
            raise CardError(f"card_params names {card_id!r}, which is not a loaded card (loaded: "
                            f"{', '.join(sorted(cards)) or 'none'}); to run a card again under another id "
                            f"with its own parameters, give \"card\": \"<its id>\"")
        if base not in by_id:
            raise CardError(f"card_params[{card_id!r}]: card {base!r} is not loaded (loaded: "
                            f"{', '.join(sorted(by_id)) or 'none'})")
        alias = by_id[base](**{k: v for k, v in entry.items() if k not in ("card", "title")})
        alias.id = card_id  # type: ignore[misc]  # an instance of the class under its own id
        alias.title = str(entry.get("title") or f"{by_id[base].title} ({card_id})")  # type: ignore[misc]
        cards[card_id] = alias
    _check_uses(cards)
    return tuple(cards.values())


class Schedule:
    """When a scheduled card runs: every ``"30s"``/``"5m"``/``"1h"``/``"1d"`` (aligned to the
    epoch, so every worker agrees), or at the times of a cron expression (UTC; a sixth field
    is seconds)."""

    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}

    def __init__(self, text: str, interval: float | None) -> None:
        self.text = text
        self.interval = interval
        self.period = interval if interval is not None else self._cron_period()

    @classmethod
    def parse(cls, text: Any, card_id: str) -> Schedule:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text) if isinstance(text, str) else None
        if match:
            interval = float(match[1]) * cls.UNITS[match[2]]
            if interval < 1:
                raise CardError(f"card {card_id!r}: schedule {text!r} is under a second")
            return cls(text, interval)
        from croniter import croniter

        if not isinstance(text, str) or not croniter.is_valid(text):
            raise CardError(f"card {card_id!r}: schedule {text!r} is neither an interval such as '5m' "
                            "(s, m, h, d) nor a cron expression such as '*/5 * * * *'")
        return cls(text, None)

    def next_after(self, wall: float) -> float:
        """The first run time (epoch seconds) after ``wall``."""
        if self.interval is not None:
            return (wall // self.interval + 1) * self.interval
        from croniter import croniter

        return float(croniter(self.text, wall).get_next(float))

    def _cron_period(self) -> float:
        first = self.next_after(time.time())
        return self.next_after(first) - first


def _check_uses(cards: Mapping[str, Card]) -> None:
    """Every card a card ``uses`` is loaded, and no card uses itself through others."""
    for card in cards.values():
        missing = [u for u in card.uses if u not in cards]
        if missing:
            raise CardError(f"card {card.id!r} uses {missing}, which are not loaded (loaded: "
                            f"{', '.join(sorted(cards))})")
        if not card.maps() and not card.uses:
            raise CardError(f"card {card.id!r} has neither map() nor contribute() (nor uses other cards)")
    done: set[str] = set()

    def visit(card_id: str, path: tuple[str, ...]) -> None:
        if card_id in path:
            cycle = " → ".join(path[path.index(card_id):] + (card_id,))
            raise CardError(f"cards use each other in a cycle: {cycle}; a card may only use cards that "
                            "do not use it")
        if card_id in done:
            return
        for used in cards[card_id].uses:
            visit(used, path + (card_id,))
        done.add(card_id)

    for card_id in cards:
        visit(card_id, ())


def placement(cards: Iterable[Card]) -> dict[str, str]:
    """Card id → the key its partials are placed by: cards that use each other (directly or
    through others) share one, so one reducer holds every total a card's ``render`` needs."""
    cards = list(cards)
    group = {card.id: card.id for card in cards}

    def root(card_id: str) -> str:
        while group[card_id] != card_id:
            card_id = group[card_id]
        return card_id

    for card in cards:
        for used in card.uses:
            if used in group:
                a, b = sorted((root(card.id), root(used)))
                group[b] = a
    return {card_id: root(card_id) for card_id in group}
