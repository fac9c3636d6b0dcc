"""Which card maps run, when: per card, at most once per its debounce, over what changed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cardflow.agents.card_maps import MapProcess
from cardflow.card_results import Partial
from cardflow.cards import Card

MAX_PENALTY_S = 300.0


class CardScheduler:
    """Decides which card maps run, when: per card, at most once per its debounce, over the
    partitions that changed since its last run (all owned partitions after an assignment)."""

    def __init__(self, cards: tuple[Card, ...], process: MapProcess, send: Callable[[Partial], Any],
                 owned: Callable[[], set[int]], db_path: Callable[[int], Path],
                 busy: Callable[[], bool], behind_factor: float = 5.0,
                 read: Callable[[int, list[bytes]], list[tuple[bytes, bytes | None]] | None] | None = None,
                 ) -> None:
        self.cards = {card.id: card for card in cards}
        self.process = process
        self.send = send
        self.owned = owned
        self.db_path = db_path
        # The stored values of changed keys, read from the worker's table (blocking: called in the
        # executor thread); None when it cannot (the map process then reads the whole partition).
        self.read = read or (lambda partition, keys: None)
        self.busy = busy
        self.dirty: dict[str, set[int]] = {card.id: set() for card in cards}
        self.not_before: dict[str, float] = {card.id: 0.0 for card in cards}  # all run once at start
        self.penalty: dict[str, float] = {}
        self.pending_since: dict[str, float] = {}  # card → when its oldest unpublished change came
        self.behind_factor = behind_factor
        self.changed_keys: dict[int, set[bytes]] = defaultdict(set)  # since the partition's last run
        self.reload: set[int] = set()  # partitions to read whole next time
        self._known: set[int] = set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cardflow-maps")

    def mark_dirty(self, partitions: Iterable[int]) -> None:
        parts = set(partitions)
        now = time.monotonic()
        for card_id, dirty in self.dirty.items():
            dirty |= parts
            if parts:
                self.pending_since.setdefault(card_id, now)

    def mark_changed(self, changed: dict[int, set[bytes]]) -> None:
        """The profile keys a batch wrote, per partition."""
        self.mark_dirty(changed)
        for partition, keys in changed.items():
            self.changed_keys[partition] |= keys

    def reload_all(self) -> None:
        """After a rebalance: recovery may have written profiles that no batch reported, so every
        owned partition is read whole again, as a newly assigned one is."""
        self._known = set()

    async def tick(self) -> None:
        if self.busy():
            return  # rebalancing or recovering: the local profiles may be incomplete
        owned = self.owned()
        new = owned - self._known
        self._known = owned
        if new:
            self.mark_dirty(new)
            self.reload |= new
        now = time.monotonic()
        self.report_lag(now)
        jobs: dict[int, list[str]] = defaultdict(list)
        taken: dict[str, float] = {}
        for card_id, dirty in self.dirty.items():
            dirty &= owned
            if not dirty:
                self.pending_since.pop(card_id, None)  # nothing of its own left (partitions moved)
            elif now >= self.not_before[card_id]:
                for partition in sorted(dirty):
                    jobs[partition].append(card_id)
                dirty.clear()  # marks made while the maps run are kept for the next run
                self.not_before[card_id] = self.next_run(card_id, now)
                taken[card_id] = self.pending_since.pop(card_id, now)
        loop = asyncio.get_running_loop()
        for partition in set(self.changed_keys) - owned:
            del self.changed_keys[partition]
        for partition, card_ids in sorted(jobs.items()):
            sent: list[concurrent.futures.Future[Any]] = []
            # Each partial is published as soon as it is made, not after the partition's last card.
            publish = functools.partial(self._publish, loop, sent)
            keys: list[bytes] | None = list(self.changed_keys.pop(partition, ()))
            if partition in self.reload:
                keys = None
                self.reload.discard(partition)
            resting = frozenset(c for c in self.penalty if time.monotonic() < self.not_before[c])
            try:
                _, overran = await loop.run_in_executor(
                    self._executor, self._run, partition, card_ids, publish, keys, resting)
            except BaseException:
                self.reload.add(partition)  # the child may have missed these keys
                for card_id, since in taken.items():  # still pending, since then
                    self.pending_since[card_id] = min(since, self.pending_since.get(card_id, since))
                raise
            for future in sent:
                await asyncio.wrap_future(future)
            for card_id in card_ids:
                if card_id in overran:
                    # Back off a card that keeps overrunning: each overrun costs a new child process.
                    self.penalty[card_id] = min(MAX_PENALTY_S, max(5.0, self.penalty.get(card_id, 0) * 2))
                    self.not_before[card_id] = time.monotonic() + self.penalty[card_id]
                else:
                    self.penalty.pop(card_id, None)

    def _run(self, partition: int, card_ids: list[str], publish: Callable[[Partial], Any],
             keys: list[bytes] | None, resting: frozenset[str]) -> tuple[list[Partial], list[str]]:
        """In the executor thread: read the changed profiles, then run the maps."""
        changed = self.read(partition, keys) if keys is not None else None
        return self.process.run(partition, self.db_path(partition), card_ids, publish, changed, resting)

    def next_run(self, card_id: str, now: float) -> float:
        """When the card may run next (monotonic): after its debounce, or at its schedule's next time."""
        card = self.cards[card_id]
        if card.timetable is None:
            return now + card.debounce
        wall = time.time()
        return now + card.timetable.next_after(wall) - wall

    def report_lag(self, now: float) -> None:
        metrics = self.process.metrics
        for card_id, card in self.cards.items():
            pending = now - self.pending_since[card_id] if card_id in self.pending_since else 0.0
            metrics.pending_seconds.labels(card_id).set(pending)
            metrics.behind.labels(card_id).set(int(pending > card.cadence * self.behind_factor))

    def behind(self) -> dict[str, float]:
        """Cards whose oldest pending change waited over ``behind_factor`` debounces: card → seconds."""
        now, pending = time.monotonic(), self.pending_since.copy()  # copied at once: another thread's
        return {card_id: round(now - since, 1) for card_id, since in sorted(pending.items())
                if now - since > self.cards[card_id].cadence * self.behind_factor}

    def _publish(self, loop: asyncio.AbstractEventLoop, sent: list[concurrent.futures.Future[Any]],
                 partial: Partial) -> None:
        """Called in the executor thread: hand the partial to the event loop to send."""
        sent.append(asyncio.run_coroutine_threadsafe(self.send(partial), loop))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.process.close()
