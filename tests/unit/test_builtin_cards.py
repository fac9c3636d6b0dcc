"""The built-in cards' own logic on hand-made profiles (the end-to-end checks are in integration)."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from cardflow.builtin_cards import (
    ActiveUsers,
    FunnelCard,
    Periods,
    RecentUsers,
    Retention,
    UsersByProperty,
    day_number,
    steps_reached,
)
from cardflow.cards import CardError, decode_partial, encode_partial
from cardflow.events import Event
from cardflow.standard import DAY_MS, standard


def profile(uid: str, *events: tuple[str, str], country: str | None = None) -> dict:
    p: dict = {}
    for i, (name, day) in enumerate(events):
        ts = day_number(date.fromisoformat(day)) * DAY_MS + 3_600_000
        standard(p, Event(f"{uid}-{i}", uid, name, ts, {}, {"country": country} if country else {}, {}, "t"))
    p["uid"] = uid
    return p


def split_total(card, profiles):
    """Map two halves separately and reduce through bytes, as the worker and reducer do."""
    half = len(profiles) // 2
    parts = [decode_partial(encode_partial(card.map(profiles[:half]))),
             decode_partial(encode_partial(card.map(profiles[half:])))]
    return card.total(parts)


def test_active_users_counts_windows() -> None:
    card = ActiveUsers(days=3, as_of="2026-03-10")
    users = [profile("a", ("x", "2026-03-10")), profile("b", ("x", "2026-03-04")),
             profile("c", ("x", "2026-02-10")), profile("d", ("x", "2026-03-09"), ("y", "2026-03-10")),
             profile("e", ("x", "2026-02-08"))]
    total = split_total(card, users)
    last = day_number(date(2026, 3, 10))
    assert total["dau"][last] == 2 and total["dau"][last - 1] == 1
    assert total["wau"][last] == 3  # a, b (6 days before), d
    assert total["mau"][last] == 4  # c (28 days before) is in the 30 days, e (30 days before) is not
    widgets = card.widgets(total)
    assert widgets[0]["children"][0]["value"] == 2
    assert [p[1] for p in widgets[1]["series"]["DAU"]] == [0, 1, 2]


def test_funnel_steps_in_order_within_window() -> None:
    steps = ["a", "b", "c"]
    assert steps_reached(profile("u", ("a", "2026-01-01"), ("b", "2026-01-03"), ("c", "2026-01-08")),
                         steps, 7) == 3
    assert steps_reached(profile("u", ("a", "2026-01-01"), ("b", "2026-01-03"), ("c", "2026-01-09")),
                         steps, 7) == 2  # c is 8 days after a
    assert steps_reached(profile("u", ("b", "2026-01-01"), ("a", "2026-01-02"), ("c", "2026-01-02")),
                         steps, 7) == 1  # b came before a
    # A later start can do better than the first one.
    assert steps_reached(profile("u", ("a", "2026-01-01"), ("a", "2026-02-01"), ("b", "2026-02-02"),
                                 ("c", "2026-02-02")), steps, 7) == 3
    card = FunnelCard(steps=steps, window_days=7)
    total = split_total(card, [profile("u1", ("a", "2026-01-01"), ("b", "2026-01-02")),
                               profile("u2", ("a", "2026-01-01")), profile("u3", ("c", "2026-01-01"))])
    assert card.widgets(total)[0]["steps"] == [["a", 2], ["b", 1], ["c", 0]]


def test_retention_periods_follow_bitmapist() -> None:
    weeks = Periods("weeks", rows=3, after=1, start_date=None, as_of="2027-01-06")
    assert weeks.dates[0] == date(2026, 12, 23)
    assert weeks.keys[:3] == [(2026, 52), (2026, 53), (2027, 1)]  # ISO years and weeks
    months = Periods("months", rows=3, after=0, start_date=None, as_of="2026-03-31")
    assert months.dates == [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1)]
    with pytest.raises(CardError, match="period must be one of"):
        Periods("hours", 1, 1, None, None)


def test_retention_first_and_every_forms() -> None:
    users = [profile("a", ("s", "2026-01-01"), ("s", "2026-01-02"), ("r", "2026-01-03")),
             profile("b", ("s", "2026-01-02"))]
    base = {"cohort_event": "s", "return_event": "r", "periods": 3, "after": 2, "start_date": "2026-01-01"}
    first = Retention(**base, form="first")
    assert first.cells(split_total(first, users)) == [
        ("2026-01-01", 1, [None, None, 1]),  # r happened on day 2 only: days 0 and 1 are blank
        ("2026-01-02", 1, [None, 0, None]),  # b's first s; r on the 3rd, not by b: 0
        ("2026-01-03", 0, [None, None, None])]
    every = Retention(**base, form="every")
    assert every.cells(split_total(every, users))[1] == ("2026-01-02", 2, [None, 1, None])
    rendered = every.widgets(split_total(every, users))[0]
    assert rendered["rows"][1]["cells"] == [None, 0.5, None]
    assert rendered["rows"][1]["counts"] == [None, 1, None]
    with pytest.raises(CardError, match="form must be"):
        Retention(form="sometimes").map([])


def test_users_by_property_and_recent_users() -> None:
    users = [profile("a", ("x", "2026-01-01"), country="fi"), profile("b", ("x", "2026-01-05"), country="FI"),
             profile("c", ("x", "2026-01-03"), country="Mars"), profile("d", ("x", "2026-01-02"))]
    card = UsersByProperty()
    total = split_total(card, users)
    assert total == Counter({"fi": 1, "FI": 1, "Mars": 1, "(not set)": 1})
    widgets = card.widgets(total)
    assert widgets[0]["values"] == {"FI": 2}  # only ISO codes go on the map
    recent = RecentUsers(limit=2)
    assert [u["uid"] for u in recent.widgets(split_total(recent, users))[0]["users"]] == ["b", "c"]
