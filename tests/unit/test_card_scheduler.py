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


def test_changed_profiles_go_to_the_map_process_as_the_worker_stored_them() -> None:
    process = FakeProcess()
    card = TopEvents()
    stored = {b"user-1": b"v1", b"user-2": None}  # user-2 deleted
    reads: list[tuple[int, list[bytes]]] = []

    def read(partition: int, keys: list[bytes]) -> Any:
        reads.append((partition, sorted(keys)))
        return None if partition == 1 else [(k, stored[k]) for k in sorted(keys)]

    scheduler = CardScheduler((card,), process, lambda p: None, owned=lambda: {0, 1},  # type: ignore[arg-type]
                              db_path=lambda p: Path("/nonexistent"), busy=lambda: False, read=read)
    asyncio.run(scheduler.tick())  # newly owned partitions: read whole, nothing asked of the worker
    assert [(p, changed) for p, _, changed, _ in process.jobs] == [(0, None), (1, None)] and reads == []

    scheduler.not_before[card.id] = 0
    scheduler.mark_changed({0: {b"user-1", b"user-2"}, 1: {b"user-3"}})
    process.jobs.clear()
    asyncio.run(scheduler.tick())
    assert reads == [(0, [b"user-1", b"user-2"]), (1, [b"user-3"])]
    # Partition 1's table could not be read (moving away): its pass reads the partition whole.
    assert [(p, changed) for p, _, changed, _ in process.jobs] == [
        (0, [(b"user-1", b"v1"), (b"user-2", None)]), (1, None)]
    scheduler.close()
