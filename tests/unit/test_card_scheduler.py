"""Which maps a tick runs: rounds per card, cheap rounds whole, costly ones a partition a tick."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardflow.agents.cards import SLICE_S, CardScheduler
from cardflow.cards import Card

pytestmark = pytest.mark.unit


class Cheap(Card):
    pass


class Costly(Card):
    debounce = 5.0


def scheduler(owned: set[int]) -> CardScheduler:
    return CardScheduler((Cheap(), Costly()), process=None, send=lambda p: None,  # type: ignore[arg-type]
                         owned=lambda: owned, db_path=lambda p: Path(), busy=lambda: False)


def test_costly_rounds_advance_a_partition_a_tick_and_cheap_ones_run_whole() -> None:
    s = scheduler({0, 1, 2, 3})
    s.mark_dirty({0, 1, 2, 3})
    # Unknown costs: every card runs its whole round.
    assert s._plan({0, 1, 2, 3}, now=0.0) == {p: ["cheap", "costly"] for p in range(4)}
    s.cost = {"cheap": SLICE_S / 10, "costly": SLICE_S}
    s.mark_dirty({1, 2, 3})
    assert s._plan({0, 1, 2, 3}, now=0.5) == {}  # debounce: cheap until 1.0, costly until 5.0
    assert s._plan({0, 1, 2, 3}, now=1.0) == {1: ["cheap"], 2: ["cheap"], 3: ["cheap"]}
    assert s._plan({0, 1, 2, 3}, now=5.0) == {1: ["costly"]}
    s.mark_dirty({0})  # cheap runs it now; costly in its next round
    assert s._plan({0, 1, 2, 3}, now=5.1) == {0: ["cheap"], 2: ["costly"]}
    assert s._plan({0, 1, 2, 3}, now=5.2) == {3: ["costly"]}
    assert s._plan({0, 1, 2, 3}, now=5.3) == {}
    assert s._plan({0, 1, 2, 3}, now=10.2) == {0: ["costly"]}


def test_a_partition_that_moved_away_leaves_the_round() -> None:
    s = scheduler({0, 1, 2})
    s.cost = {"cheap": 0.0, "costly": SLICE_S}
    s.mark_dirty({0, 1, 2})
    assert s._plan({0, 1, 2}, now=0.0) == {0: ["cheap", "costly"], 1: ["cheap"], 2: ["cheap"]}
    assert s._plan({2}, now=0.1) == {2: ["costly"]}
    assert s.rounds["costly"] == set()
