from __future__ import annotations

from collections import Counter

import orjson

from cardflow.card_results import CardReducer, Partial, map_partition
from cardflow.cards import Card
from cardflow.widgets import Bar, Number


class TopEvents(Card):
    params = {"limit": 10}

    def map(self, profiles):
        total: Counter[str] = Counter()
        for profile in profiles:
            total.update(profile["events"])
        return total

    def render(self, total):
        return [Bar(sorted(total.items(), key=lambda kv: -kv[1]))]

    def summary(self, total):
        return f"{sum(total.values())} events"


class Broken(Card):
    def map(self, profiles):
        return 1 / 0

    def render(self, total):
        return [Number(total)]


class BadRender(Card):
    def map(self, profiles):
        return len(profiles)

    def render(self, total):
        return [Number(float("nan"))]


P0 = [{"events": {"view": 3, "buy": 1}}]
P1 = [{"events": {"view": 2}}]


def test_result_merges_partials_with_watermark() -> None:
    card = TopEvents()
    reducer = CardReducer((card,), partitions=2)
    assert reducer.add(Partial.decode(map_partition(card, 0, P0, max_ts=10, offset=5).encode()))
    assert reducer.add(map_partition(card, 1, P1, max_ts=20, offset=7))
    result = reducer.result("top-events")
    widgets = orjson.loads(result["widgets"])
    assert widgets == [{"type": "bar", "label": "", "data": [["view", 5], ["buy", 1]]}]
    assert result["summary"] == "6 events" and result["error"] is None
    assert result["max_ts"] == 20 and result["offsets"] == {"0": 5, "1": 7}


def test_a_partition_moved_between_workers_counts_once() -> None:
    card = TopEvents()
    reducer = CardReducer((card,), partitions=2)
    old = map_partition(card, 0, P0, max_ts=10, offset=5)
    moved = map_partition(card, 0, P0 + P1, max_ts=20, offset=9)  # the new owner's run
    assert reducer.add(old) and reducer.add(moved)
    assert not reducer.add(old), "a late partial from the old owner must not replace the newer one"
    assert orjson.loads(reducer.result("top-events")["widgets"])[0]["data"] == [["view", 5], ["buy", 1]]


def test_errors_become_error_results() -> None:
    broken, bad = Broken(), BadRender()
    reducer = CardReducer((broken, bad), partitions=1)
    reducer.add(map_partition(broken, 0, P0, 0, 0))
    reducer.add(map_partition(bad, 0, P0, 0, 0))
    error = reducer.result("broken")["error"]
    assert error.startswith("partition 0: map raised ZeroDivisionError: division by zero")
    assert "test_card_results.py" in error
    assert "Number.value must be finite" in reducer.result("bad-render")["error"]


def test_unknown_cards_and_old_versions_are_ignored() -> None:
    card = TopEvents()
    reducer = CardReducer((card,), partitions=2)
    stale = map_partition(card, 0, P0, 0, 0)
    assert not reducer.add(Partial(**{**stale.__dict__, "card_version": "0"}))
    assert not reducer.add(Partial(**{**stale.__dict__, "card_id": "other"}))


def test_a_result_never_mixes_configurations_and_says_when_it_is_incomplete() -> None:
    old, new = TopEvents(limit=10), TopEvents(limit=3)
    reducer = CardReducer((new,), partitions=2)
    assert not reducer.add(map_partition(old, 0, P0, 0, 5)), "a partial of the old configuration"
    assert reducer.add(map_partition(new, 0, P0, 0, 5))
    first = reducer.result("top-events")
    assert first["complete"] is False and first["partitions"] == 1 and first["config"] == new.config
    assert reducer.add(map_partition(new, 1, P1, 0, 7))
    assert reducer.result("top-events")["complete"] is True
    record = Partial.decode(map_partition(new, 0, P0, 0, 5).encode())
    assert record.config == new.config  # carried through Kafka


def test_partials_written_before_configs_existed_still_decode_and_are_ignored() -> None:
    from cardflow.codec import AvroCodec, load_schema

    v1 = AvroCodec(load_schema("CardPartial.v1"))
    card = TopEvents()
    data = v1.encode({k: v for k, v in map_partition(card, 0, P0, 0, 5).__dict__.items() if k != "config"})
    partial = Partial.decode(data)
    assert partial.config == ""
    assert not CardReducer((card,), partitions=1).add(partial)


class Users(Card):
    def contribute(self, profile):
        return 1

    def render(self, total):
        return [Number(total)]


class Buyers(Card):
    def contribute(self, profile):
        return 1 if profile["events"].get("buy") else 0

    def render(self, total):
        return [Number(total)]


class BuyerShare(Card):
    """Built on two cards only: no map of its own."""

    uses = ("users", "buyers")

    def render(self, total, cards):
        return [Number(round(cards["buyers"] / cards["users"], 3))]

    def summary(self, total, cards):
        return f"{cards['buyers']} of {cards['users']}"


def test_a_card_built_on_cards_renders_their_totals_and_is_complete_when_they_are() -> None:
    users, buyers, share = Users(), Buyers(), BuyerShare()
    reducer = CardReducer((users, buyers, share), partitions=2)
    # One group, placed by its smallest id: one reducer holds every total the share needs.
    assert reducer.place == {"users": "buyer-share", "buyers": "buyer-share", "buyer-share": "buyer-share"}
    assert reducer.dependents({"buyers"}) == {"buyers", "buyer-share"}
    for card in (users, buyers):
        reducer.add(map_partition(card, 0, P0, max_ts=10, offset=5))
    result = reducer.result("buyer-share")
    assert result["complete"] is False and result["summary"] == "1 of 1"
    for card in (users, buyers):
        reducer.add(map_partition(card, 1, P1, max_ts=20, offset=7))
    result = reducer.result("buyer-share")
    assert result["complete"] is True and result["error"] is None and result["max_ts"] == 20
    assert orjson.loads(result["widgets"])[0]["value"] == 0.5 and result["summary"] == "1 of 2"
    assert result["offsets"] == {"0": 5, "1": 7}  # as far as both used cards include
    reducer.add(map_partition(users, 1, P1, max_ts=30, offset=9))
    assert reducer.result("buyer-share")["offsets"] == {"0": 5, "1": 7}
