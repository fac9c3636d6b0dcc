"""Incremental partials: for any history of profile changes, a card's running partial equals a
full ``map`` over the same profiles (built-in cards and a user-written one)."""

from __future__ import annotations

import copy
import functools
from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from cardflow.builtin_cards import ActiveUsers, FunnelCard, RecentUsers, Retention, TopEvents, UsersByProperty
from cardflow.card_results import incremental_partial
from cardflow.cards import Card, CardError, decode_partial, encode_partial
from cardflow.events import Event
from cardflow.incremental import PartitionPartials, Rebuild, accumulate, materialize, retract
from cardflow.standard import DAY_MS, standard

AS_OF = date(2026, 3, 31)


class Buyers(Card):
    """A user-written card: sets, a bitmap, a Counter, numbers and a list, with no reduce."""

    def contribute(self, profile: dict[str, Any]) -> dict[str, Any]:
        events = profile.get("events", {})
        bought = events.get("purchase", 0)
        country = (profile.get("properties", {}).get("country") or [None])[0]
        n = int(profile["uid"].rsplit("-", 1)[1])
        return {
            "buyers": {profile["uid"]} if bought else set(),
            "countries": {country} if country else set(),  # one element from many profiles
            "ids": BitMap([n]) if bought else BitMap(),
            "purchases": bought,
            "by_event": Counter(events),
            "steps": [1, 1 if bought else 0],
        }

    def render(self, total: Any) -> list[Any]:
        return []


def cards() -> list[Card]:
    as_of = AS_OF.isoformat()
    weekly = Retention(as_of=as_of, period="weeks", periods=4, after=3, form="every", cohort_event="signup")
    weekly.id = "retention-weekly"  # type: ignore[misc]
    return [
        ActiveUsers(as_of=as_of, days=20),
        TopEvents(),
        Retention(as_of=as_of, periods=10, after=8),
        weekly,
        FunnelCard(steps=["signup", "view", "purchase"], window_days=5),
        UsersByProperty(),
        RecentUsers(limit=3),
        Buyers(),
    ]


event_names = st.sampled_from(["signup", "view", "purchase", "search"])
events_of = st.lists(
    st.tuples(event_names, st.integers(0, 45), st.sampled_from([None, "FI", "SE", "DE"])),
    min_size=1,
    max_size=6,
)
uids = st.integers(0, 11).map(lambda n: f"user-{n}")
operations = st.lists(
    st.one_of(
        st.tuples(st.just("fold"), uids, events_of),  # new or more events for a user
        st.tuples(st.just("delete"), uids, st.just([])),  # the profile is gone
        st.tuples(st.just("away_and_back"), st.just(""), st.just([])),  # the partition moved and returned
        st.tuples(st.just("next_day"), st.just(""), st.just([])),  # the window moves
    ),
    min_size=1,
    max_size=25,
)


def fold(profile: dict[str, Any] | None, uid: str, events: list[tuple[str, int, str | None]], seq: int
         ) -> dict[str, Any]:
    p = {k: v for k, v in copy.deepcopy(profile or {}).items() if k != "uid"}
    for i, (name, days_ago, country) in enumerate(events):
        ts = ((AS_OF - timedelta(days=days_ago)) - date(1970, 1, 1)).days * DAY_MS + 3_600_000 + i
        props = {"country": country} if country else {}
        standard(p, Event(f"{uid}-{seq}-{i}", uid, name, ts, {}, props, {}, "t"))
    return {**p, "uid": uid}


def as_bytes(partial: Any) -> Any:
    return decode_partial(encode_partial(partial))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_an_incremental_partial_always_equals_a_full_map(ops: list[tuple[str, str, list]]) -> None:
    all_cards = cards()
    profiles: dict[str, dict[str, Any]] = {}
    state = PartitionPartials(all_cards)
    day = 0
    for seq, (op, uid, events) in enumerate(ops):
        changes: list[tuple[Any, Any]] = []
        if op == "fold":
            before = profiles.get(uid)
            profiles[uid] = fold(before, uid, events, seq)
            changes.append((before, profiles[uid]))
        elif op == "delete" and uid in profiles:
            changes.append((profiles.pop(uid), None))
        elif op == "away_and_back":
            state = PartitionPartials(all_cards)
        elif op == "next_day":
            day += 1
            for card in all_cards:
                if "as_of" in card.p:
                    card.p["as_of"] = (AS_OF + timedelta(days=day)).isoformat()
        for card in all_cards:
            everyone = list(profiles.values())
            partial = incremental_partial(state, card, 0, changes, functools.partial(iter, everyone), 0, 0)
            assert partial.error is None, partial.error
            expected = as_bytes(card.map(list(profiles.values())))
            assert decode_partial(partial.partial) == expected, (card.id, op, seq)


def test_sets_are_counted_while_accumulating() -> None:
    state = accumulate(accumulate(None, {"c": {"FI"}}), {"c": {"FI", "SE"}})
    state = retract(state, {"c": {"FI"}})
    assert materialize(state) == {"c": {"FI", "SE"}}  # another profile still holds FI
    assert materialize(retract(state, {"c": {"FI", "SE"}})) == {"c": set()}


def test_a_value_that_cannot_be_taken_back_is_a_clear_error() -> None:
    class Names(Card):
        def contribute(self, profile: dict[str, Any]) -> Any:
            return {"last": profile["uid"]}

        def render(self, total: Any) -> list[Any]:
            return []

    with pytest.raises(CardError, match="cannot hold str"):
        Names().map([{"uid": "u"}])


def test_contribute_with_its_own_reduce_needs_retract_at_load() -> None:
    class Top(Card):
        def contribute(self, profile: dict[str, Any]) -> Any:
            return [profile["uid"]]

        def reduce(self, a: Any, b: Any) -> Any:
            return sorted(a + b)[:3]

        def render(self, total: Any) -> list[Any]:
            return []

    with pytest.raises(CardError, match="define retract"):
        Top()


def test_a_retract_that_cannot_be_exact_rebuilds_the_partition() -> None:
    card = RecentUsers(limit=1)
    a = {"uid": "user-1", "last_seen": 5, "events": {"x": 1}}
    b = {"uid": "user-2", "last_seen": 3, "events": {"x": 1}}
    state = PartitionPartials([card])
    state.rebuild(card.id, [a, b])
    with pytest.raises(Rebuild):
        card.retract(card.accumulate(state.states[card.id], None), card.contribute(a))
    gone = incremental_partial(state, card, 0, [(a, None)], lambda: iter([b]), 0, 0)
    assert decode_partial(gone.partial) == card.map([b])  # user-2 is the most recent now


def test_a_contribution_that_raises_is_the_cards_error_and_is_rebuilt_next_time() -> None:
    class Fragile(Card):
        def contribute(self, profile: dict[str, Any]) -> Any:
            if profile.get("bad"):
                raise ValueError("bad profile")
            return 1

        def render(self, total: Any) -> list[Any]:
            return []

    card = Fragile()
    state = PartitionPartials([card])
    profiles = [{"uid": "a"}]
    assert decode_partial(incremental_partial(state, card, 0, [], lambda: iter(profiles), 0, 0).partial) == 1
    bad = {"uid": "b", "bad": True}
    failed = incremental_partial(state, card, 0, [(None, bad)], lambda: iter([*profiles, bad]), 0, 0)
    assert failed.error and "bad profile" in failed.error
    fixed = incremental_partial(state, card, 0, [], lambda: iter([*profiles, {"uid": "b"}]), 0, 0)
    assert fixed.error is None and decode_partial(fixed.partial) == 2
