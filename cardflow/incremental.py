"""Incremental partials: a partition's partial kept as the sum of its profiles' contributions.

A card that defines ``contribute(profile)`` gives each profile's share of its partition's
partial. When a profile changes, the runtime takes its previous share out (``retract``) and puts
the new one in (``accumulate``), so a round costs what changed, not the partition's size.

Plain contributions need no code: numbers add and subtract, ``Counter``s and dicts work key by
key, lists element by element. Sets and bitmaps are kept as counts per element while
accumulating (a multiset), so an element two profiles contributed stays until both took it
back; the partial a card's ``render`` sees has plain sets and bitmaps again. Strings, booleans
and None inside a contribution cannot be taken back: such a card defines ``retract`` (and its
own ``reduce``) or keeps ``map``. Floats add and subtract as floats, so a long-lived sum may
drift in its last digits from a fresh ``map``; count in integers where exactness matters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pyroaring import BitMap

from cardflow.errors import CardError


class Rebuild(Exception):  # noqa: N818 - a signal, not an error: "map this partition again"
    """Raised by a card's ``retract`` when it cannot take a share back exactly (e.g. a top-N
    list that lost a member): the runtime maps the whole partition again for that card."""


class _Multiset(Counter[Any]):
    """A set being accumulated: element → how many contributions hold it."""


class _BitCounts(Counter[int]):
    """A bitmap being accumulated: element → how many contributions hold it."""


def accumulate(state: Any, part: Any) -> Any:
    """``state`` with the contribution ``part`` added (sets and bitmaps counted)."""
    if part is None:
        return state
    if state is None:
        return _counted(part)
    if isinstance(part, bool) or isinstance(state, bool):
        raise CardError("a contribution cannot hold booleans; use 0/1")
    if isinstance(state, Counter):
        state.update(_elements(part))
        return state
    if isinstance(state, int | float) and isinstance(part, int | float):
        return state + part
    if isinstance(state, dict) and isinstance(part, Mapping):
        for key, value in part.items():
            state[key] = accumulate(state.get(key), value)
        return state
    if isinstance(state, list) and isinstance(part, list):
        for i, value in enumerate(part):
            if i < len(state):
                state[i] = accumulate(state[i], value)
            else:
                state.append(_counted(value))
        return state
    raise CardError(f"cannot add a contribution of {type(part).__name__} to {type(state).__name__}")


def retract(state: Any, part: Any) -> Any:
    """``state`` with the contribution ``part`` taken out; elements counted down to zero go."""
    if part is None:
        return state
    if state is None:
        raise Rebuild("retracting from nothing")
    if isinstance(state, Counter):
        for key, n in _elements(part).items():
            left = state[key] - n
            if left < 0:
                raise Rebuild(f"element {key!r} retracted more often than added")
            if left:
                state[key] = left
            else:
                del state[key]
        return state
    if isinstance(state, int | float) and not isinstance(state, bool) and isinstance(part, int | float):
        return state - part
    if isinstance(state, dict) and isinstance(part, Mapping):
        for key, value in part.items():
            state[key] = retract(state.get(key), value)
        return state
    if isinstance(state, list) and isinstance(part, list) and len(part) <= len(state):
        for i, value in enumerate(part):
            state[i] = retract(state[i], value)
        return state
    raise Rebuild(f"cannot take a {type(part).__name__} out of a {type(state).__name__}")


def materialize(state: Any) -> Any:
    """The partial ``render`` and ``reduce`` see: counted sets and bitmaps as sets and bitmaps
    again, Counters without zero entries. A fresh copy: the state goes on changing."""
    if isinstance(state, _Multiset):
        return set(state)
    if isinstance(state, _BitCounts):
        return BitMap(state)
    if isinstance(state, Counter):
        return Counter({k: v for k, v in state.items() if v})
    if isinstance(state, dict):
        return {k: materialize(v) for k, v in state.items()}
    if isinstance(state, list):
        return [materialize(v) for v in state]
    return state


def _counted(part: Any) -> Any:
    """A fresh, mutable copy of ``part`` in the accumulating form."""
    if isinstance(part, BitMap):
        return _BitCounts(dict.fromkeys(part, 1))
    if isinstance(part, set | frozenset):
        return _Multiset(dict.fromkeys(part, 1))
    if isinstance(part, Counter):
        return Counter(part)
    if isinstance(part, Mapping):
        return {k: _counted(v) for k, v in part.items()}
    if isinstance(part, list | tuple):
        return [_counted(v) for v in part]
    if isinstance(part, bool) or not isinstance(part, int | float):
        raise CardError(
            f"a contribution cannot hold {type(part).__name__} ({part!r:.40}): it cannot be taken back "
            "when the profile changes; use numbers, Counters, sets, bitmaps, dicts and lists of these, "
            "or define retract() and reduce(), or use map()"
        )
    return part


def _elements(part: Any) -> Mapping[Any, int]:
    if isinstance(part, BitMap | set | frozenset):
        return dict.fromkeys(part, 1)
    if isinstance(part, Mapping):
        return part
    raise CardError(f"cannot count a {type(part).__name__} into a set or Counter")


Change = tuple[dict[str, Any] | None, dict[str, Any] | None]  # a profile before and after (None: absent)


class PartitionPartials:
    """One partition's running partials, one per incremental card, kept up to date change by
    change. A card is *stale* until it was built from a full pass over the partition (at start,
    after a ``Rebuild``, after its contribution raised, or when its ``window()`` moved)."""

    def __init__(self, cards: Iterable[Any]) -> None:
        self.cards = {card.id: card for card in cards if card.incremental()}
        self.states: dict[str, Any] = dict.fromkeys(self.cards)
        self.sizes: dict[str, int] = dict.fromkeys(self.cards, 0)  # profiles in the partial
        self.windows: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.stale: set[str] = set(self.cards)

    def needs_pass(self, card_id: str) -> bool:
        return card_id in self.stale or self.windows.get(card_id) != self.cards[card_id].window()

    def rebuild(self, card_id: str, profiles: Iterable[dict[str, Any]]) -> None:
        """The card's partial from every profile of the partition (raises what contribute raises)."""
        card = self.cards[card_id]
        self.stale.add(card_id)
        self.errors.pop(card_id, None)
        window = card.window()
        state, size = None, 0
        for profile in profiles:
            state = card.accumulate(state, card.contribute(profile))
            size += 1
        self.states[card_id], self.sizes[card_id], self.windows[card_id] = state, size, window
        self.stale.discard(card_id)

    def change(self, card_id: str, changes: Iterable[Change]) -> None:
        """Apply ``(old, new)`` profile pairs (None: absent) to the card's partial. A ``Rebuild``
        marks it stale (the caller passes over the partition); other exceptions propagate."""
        if card_id in self.stale:
            return
        card = self.cards[card_id]
        state, size = self.states[card_id], self.sizes[card_id]
        try:
            for old, new in changes:
                size += (new is not None) - (old is not None)
                new_part = None if new is None else card.contribute(new)
                old_part = None if old is None else card.contribute(old)
                if new_part == old_part:
                    continue
                state = card.retract(card.accumulate(state, new_part), old_part)
        except Rebuild:
            self.stale.add(card_id)
            return
        except Exception:
            self.stale.add(card_id)
            raise
        self.states[card_id], self.sizes[card_id] = state, size

    def partial(self, card_id: str) -> Any:
        """The partial as ``map`` gives it: of no profiles exactly as ``map(())`` (not an emptied
        structure), else the running state."""
        card = self.cards[card_id]
        state = self.states[card_id]
        return card.map(()) if state is None or not self.sizes[card_id] else card.finish(state)
