"""The card scheduler's own logic with a fake map process: what it reports as behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from cardflow.agents.card_metrics import CardMetrics
from cardflow.agents.card_scheduler import CardScheduler
from cardflow.builtin_cards import TopEvents


class FakeProcess:
    def __init__(self) -> None:
        self.metrics = CardMetrics(CollectorRegistry())
        self.jobs: list[tuple[int, list[str], Any, frozenset[str]]] = []

    def run(self, partition: int, db_path: Path, card_ids: list[str], publish: Any, keys: Any,
            resting: frozenset[str]) -> tuple[list[Any], list[str]]:
        self.jobs.append((partition, card_ids, keys, resting))
        return [], []

    def close(self) -> None:
        pass


def test_a_card_is_behind_when_its_oldest_change_waited_past_the_factor() -> None:
    process = FakeProcess()
    card = TopEvents()
    scheduler = CardScheduler((card,), process, lambda p: None, owned=lambda: {0, 1},  # type: ignore[arg-type]
                              db_path=lambda p: Path("/nonexistent"), busy=lambda: True, behind_factor=4)
    scheduler.mark_changed({0: {b"user-1"}})
    assert scheduler.behind() == {}
    scheduler.pending_since[card.id] -= card.debounce * 4 + 1  # as if it had waited that long
    assert list(scheduler.behind()) == [card.id]
    scheduler.report_lag(scheduler.pending_since[card.id] + card.debounce * 4 + 1)
    gauge = process.metrics.behind.labels(card.id)._value.get()
    assert gauge == 1

    # Once its maps ran, nothing is pending.
    scheduler.busy = lambda: False
    asyncio.run(scheduler.tick())
    assert process.jobs and process.jobs[0][1] == [card.id]
    assert scheduler.behind() == {} and card.id not in scheduler.pending_since
    scheduler.close()
