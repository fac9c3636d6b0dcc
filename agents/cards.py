"""Cards in the people topology: map per partition → [card-partials] → reduce → [results].

**Map.** Profile changes mark partitions dirty. Every tick the scheduler picks
the cards whose debounce has passed and that have dirty partitions this
worker owns, and hands each partition to a child process (``MapProcess``).
The child opens the partition's RocksDB as a *secondary* instance (RocksDB's
read-only follower that catches up with the worker's writes), decodes the
profiles once, runs each card's ``map`` and sends back one partial per card.
A child process, not a thread, because a card that loops forever must be
stopped: the parent kills the child when a card overruns its budget,
publishes an error partial for it and starts a new child. It also keeps card
code off the worker's event loop and GIL.

**Reduce.** Partials are keyed ``card/partition`` (the topic is compacted, so
it always holds the latest partial of every partition) and all partials of a
card go to one partition of ``card-partials``, chosen by the card id. The
reducer agent keeps the latest partial per (card, partition) — a newer
partial replaces the old one whichever worker made it — merges, renders and
publishes the result to the compacted ``results`` topic. When it gets a
partition of ``card-partials`` (start, rebalance) it first reads that
partition from the beginning, so its state never depends on what an earlier
owner held in memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import faust
from aiokafka.partitioner import murmur2
from prometheus_client import CollectorRegistry, Counter, Histogram

from cardflow.card_results import CARD_RESULT, CardReducer, Partial, map_partition
from cardflow.cards import Card, load_cards
from cardflow.config import Settings
from cardflow.connectors.kafka_read import manual_consumer, read_to_end
from cardflow.profiles import decode_profile, decode_watermark, load_scripts

log = logging.getLogger(__name__)

FAUST_KEY_PREFIX = b"__faust"  # Faust keeps its changelog offset in the same RocksDB
LOAD_TIMEOUT_S = 120.0  # reading and decoding one partition; card budgets start after it
MAX_PENALTY_S = 300.0


def partial_key(card_id: str, partition: int) -> bytes:
    return f"{card_id}/{partition}".encode()


def card_partition(card_id: str, partitions: int) -> int:
    """The card-partials partition holding every partial of ``card_id`` (the Java partitioner's choice)."""
    return (murmur2(card_id.encode()) & 0x7FFFFFFF) % partitions


class CardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.maps = Counter("cardflow_card_maps", "card map runs over one partition", ["card", "outcome"],
                            registry=registry)
        self.map_seconds = Histogram("cardflow_card_map_seconds", "one card's map over one partition",
                                     ["card"], registry=registry,
                                     buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.load_seconds = Histogram("cardflow_card_load_seconds",
                                      "reading and decoding one partition's profiles", registry=registry,
                                      buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.results = Counter("cardflow_card_results", "results published", ["card", "outcome"],
                               registry=registry)
        self.bad_partials = Counter("cardflow_card_bad_partials",
                                    "records in card-partials that are not CardPartials (skipped)",
                                    registry=registry)


# --- the child process -----------------------------------------------------------------------------


def serve_maps(conn: Connection, card_paths: tuple[str, ...], script_paths: tuple[str, ...],
               params: dict[str, dict[str, Any]], workdir: str) -> None:
    """The child's loop: for each job ``(partition, db_path, card_ids, keys)`` send
    ``("loaded", n, seconds, offset, max_ts)``, then one encoded Partial per card, in order.

    Decoded profiles are kept between jobs; ``keys`` names the profiles changed since the
    partition's last job (re-read alone), or is None to read the whole partition again."""
    from rocksdict import AccessType, Options, Rdict

    cards = {c.id: c for c in load_cards(card_paths, [s.name for s in load_scripts(script_paths)], params)}
    dbs: dict[str, Rdict] = {}
    cached: dict[str, dict[bytes, dict[str, Any]]] = {}  # db path → key → decoded profile
    marks: dict[str, tuple[int, int]] = {}  # db path → (offset, max_ts) over its profiles

    def open_secondary(path: str) -> Rdict:
        db = dbs.get(path)
        if db is not None:
            try:
                db.try_catch_up_with_primary()
                return db
            except Exception:  # noqa: BLE001 - the primary was reopened (rebalance): open afresh
                db.close()
        options = Options(raw_mode=True)
        options.set_max_open_files(-1)  # a secondary instance requires it
        secondary = os.path.join(workdir, f"s{len(dbs)}-{os.path.basename(path)}")
        db = dbs[path] = Rdict(path, options, access_type=AccessType.secondary(secondary))
        db.try_catch_up_with_primary()
        return db

    def decode(key: bytes, value: bytes) -> dict[str, Any]:
        profile = decode_profile(value)
        profile["uid"] = key.decode()
        return profile

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return  # the worker is gone (killed): nothing to answer, nothing to report
        if job is None:
            return
        partition, path, card_ids, keys = job
        started = time.perf_counter()
        profiles = cached.get(path)
        offset, max_ts = marks.get(path, (-1, 0))
        if not os.path.isdir(path):  # no DB yet: nothing has been folded on this partition
            profiles, offset, max_ts = {}, -1, 0
        else:
            db = open_secondary(path)
            read: Iterable[tuple[Any, Any]]
            if profiles is None or keys is None:
                profiles, offset, max_ts = {}, -1, 0
                read = db.items()
            else:
                read = ((key, db.get(key)) for key in keys)
            for key, value in read:
                assert isinstance(key, bytes)  # raw mode
                if key.startswith(FAUST_KEY_PREFIX):
                    continue
                if value is None:  # a changed key that is gone
                    profiles.pop(key, None)
                    continue
                profiles[key] = decode(key, value)
                o, t = decode_watermark(value)
                offset, max_ts = max(offset, o), max(max_ts, t)
        cached[path], marks[path] = profiles, (offset, max_ts)
        rows = list(profiles.values())
        try:
            conn.send(("loaded", len(rows), time.perf_counter() - started, offset, max_ts))
            for card_id in card_ids:
                conn.send_bytes(map_partition(cards[card_id], partition, rows, max_ts, offset).encode())
        except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
            return


# --- the parent side -------------------------------------------------------------------------------


class MapProcess:
    """Runs card maps in a child process; kills and restarts it when a card overruns its budget.

    ``run`` blocks: call it from a thread (the scheduler uses a one-thread executor).
    """

    def __init__(self, settings: Settings, cards: dict[str, Card], metrics: CardMetrics,
                 workdir: Path) -> None:
        self.settings = settings
        self.cards = cards
        self.metrics = metrics
        # The child's secondary RocksDB instances. Under the worker's own data directory, not the
        # system's temp: a killed worker's is removed by the next start (close() removes it too).
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        self._workdir = str(workdir)
        self._proc: Any = None
        self._conn: Connection | None = None

    def _start(self) -> Connection:
        ctx = multiprocessing.get_context("spawn")  # never fork a process running asyncio and librdkafka
        parent, child = ctx.Pipe()
        s = self.settings
        self._proc = ctx.Process(target=serve_maps, name="cardflow-maps", daemon=True,
                                 args=(child, s.cards, s.profile_scripts, s.card_params, self._workdir))
        self._proc.start()
        child.close()
        self._conn = parent
        return parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        self._kill()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def run(self, partition: int, db_path: Path, card_ids: list[str],
            on_partial: Callable[[Partial], Any] | None = None,
            keys: list[bytes] | None = None) -> tuple[list[Partial], list[str]]:
        """Partials for ``card_ids`` over one partition, and the ids of the cards that overran their
        budget or ended the map process (each gets an error partial).
        ``on_partial`` (from this thread) gets each partial as soon as it is made. ``keys``: the
        profiles changed since this partition's last run, or None to read them all."""
        partials: list[Partial] = []

        def keep(partial: Partial) -> None:
            partials.append(partial)
            if on_partial is not None:
                on_partial(partial)

        overran: list[str] = []
        pending = list(card_ids)
        while pending:
            conn = self._conn if self._proc is not None and self._proc.is_alive() else None
            if conn is None:
                self._kill()
                conn = self._start()  # a new child has no profiles cached: it reads them all
            conn.send((partition, str(db_path), pending, keys))
            if not conn.poll(LOAD_TIMEOUT_S):
                self._kill()
                raise TimeoutError(f"card maps: reading partition {partition} took over {LOAD_TIMEOUT_S}s")
            _, count, seconds, offset, max_ts = conn.recv()
            self.metrics.load_seconds.observe(seconds)
            while pending:
                card = self.cards[pending[0]]
                problem = None
                if not conn.poll(card.budget):
                    problem = (f"map ran longer than its budget of {card.budget:g}s over {count} profiles; "
                               "stopped (make it faster or raise the card's budget)")
                else:
                    try:
                        partial = Partial.decode(conn.recv_bytes())
                    except (EOFError, OSError):
                        self._proc.join(5)
                        problem = (f"map ended the map process (exit code {self._proc.exitcode}), e.g. by "
                                   "sys.exit() or a crash in native code")
                if problem is not None:
                    # Stop the card (a new map process starts) and go on with the rest.
                    self._kill()
                    pending.pop(0)
                    overran.append(card.id)
                    self.metrics.maps.labels(card.id, "overran" if "budget" in problem else "crashed").inc()
                    keep(Partial(card.id, card.version, partition, b"null", max_ts, offset,
                                 int(time.time() * 1000), card.budget * 1000, problem))
                    break
                pending.pop(0)
                keep(partial)
                self.metrics.maps.labels(card.id, "error" if partial.error else "ok").inc()
                self.metrics.map_seconds.labels(card.id).observe(partial.run_ms / 1000)
        return partials, overran


class CardScheduler:
    """Decides which card maps run, when: per card, at most once per its debounce, over the
    partitions that changed since its last run (all owned partitions after an assignment)."""

    def __init__(self, cards: tuple[Card, ...], process: MapProcess, send: Callable[[Partial], Any],
                 owned: Callable[[], set[int]], db_path: Callable[[int], Path],
                 busy: Callable[[], bool]) -> None:
        self.cards = {card.id: card for card in cards}
        self.process = process
        self.send = send
        self.owned = owned
        self.db_path = db_path
        self.busy = busy
        self.dirty: dict[str, set[int]] = {card.id: set() for card in cards}
        self.not_before: dict[str, float] = {card.id: 0.0 for card in cards}
        self.penalty: dict[str, float] = {}
        self.changed_keys: dict[int, set[bytes]] = defaultdict(set)  # since the partition's last run
        self.reload: set[int] = set()  # partitions to read whole next time
        self._known: set[int] = set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cardflow-maps")

    def mark_dirty(self, partitions: Iterable[int]) -> None:
        parts = set(partitions)
        for dirty in self.dirty.values():
            dirty |= parts

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
        jobs: dict[int, list[str]] = defaultdict(list)
        for card_id, dirty in self.dirty.items():
            dirty &= owned
            if dirty and now >= self.not_before[card_id]:
                for partition in sorted(dirty):
                    jobs[partition].append(card_id)
                dirty.clear()  # marks made while the maps run are kept for the next run
                self.not_before[card_id] = now + self.cards[card_id].debounce
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
            try:
                _, overran = await loop.run_in_executor(
                    self._executor, self.process.run, partition, self.db_path(partition), card_ids,
                    publish, keys)
            except BaseException:
                self.reload.add(partition)  # the child may have missed these keys
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

    def _publish(self, loop: asyncio.AbstractEventLoop, sent: list[concurrent.futures.Future[Any]],
                 partial: Partial) -> None:
        """Called in the executor thread: hand the partial to the event loop to send."""
        sent.append(asyncio.run_coroutine_threadsafe(self.send(partial), loop))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.process.close()


class ResultPublisher:
    """The reducer's state: the latest partials per (card, partition) of the card-partials partitions
    this worker owns, loaded from the topic's start when a partition is first seen."""

    def __init__(self, settings: Settings, cards: tuple[Card, ...], partials_topic: str,
                 metrics: CardMetrics) -> None:
        self.settings = settings
        self.reducer = CardReducer(cards)
        self.partials_topic = partials_topic
        self.metrics = metrics
        self.loaded: set[int] = set()

    def cards_of(self, partition: int) -> list[str]:
        """The cards whose partials live on ``partition`` of card-partials (only their owner renders them)."""
        n = self.settings.partitions
        return [card_id for card_id in self.reducer.cards if card_partition(card_id, n) == partition]

    def forget(self) -> None:
        """After a rebalance: reload every partition when it is next seen."""
        self.loaded.clear()

    def load(self, partition: int, upto: int) -> int:
        """Read ``partition`` of card-partials from its start up to (not including) ``upto``; blocking."""
        consumer = manual_consumer(self.settings, f"{self.settings.topic_prefix}cardflow-reducer-load")
        kept = 0
        try:
            for msg in read_to_end(consumer, self.partials_topic, {partition: 0}, timeout=30.0):
                if msg.offset() >= upto:
                    break
                try:
                    kept += self.reducer.add(Partial.decode(msg.value()))
                except Exception:  # noqa: BLE001 - counted; the live path logs it
                    self.metrics.bad_partials.inc()
        finally:
            consumer.close()
        return kept

    def render(self, card_id: str) -> bytes:
        record = self.reducer.result(card_id)
        self.metrics.results.labels(card_id, "error" if record["error"] else "ok").inc()
        return CARD_RESULT.encode(record)


def register_card_agents(app: faust.App, settings: Settings, cards: tuple[Card, ...],
                         scheduler: CardScheduler, publisher: ResultPublisher,
                         partials: faust.TopicT, results: faust.TopicT) -> None:
    @app.task
    async def run_cards() -> None:
        # A loop, not app.timer: a tick that runs maps may take longer than the interval.
        while True:
            await asyncio.sleep(settings.card_tick_ms / 1000)
            try:
                await scheduler.tick()
            except Exception:
                if app.should_stop:
                    return  # stopping: the map process may already be gone with the signal
                log.exception("card maps failed; retrying next tick")
                scheduler.mark_dirty(scheduler.owned())

    @app.agent(partials, name="card-reducer", concurrency=1)
    async def reduce(stream: faust.StreamT[bytes]) -> None:
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(1000, within=0.05):  # type: ignore[attr-defined]
            changed: set[str] = set()
            for event in batch:
                message = event.message
                if message.partition not in publisher.loaded:
                    await loop.run_in_executor(None, publisher.load, message.partition, message.offset)
                    publisher.loaded.add(message.partition)
                    changed.update(publisher.cards_of(message.partition))
                try:
                    partial = Partial.decode(message.value)
                except Exception as exc:  # noqa: BLE001 - not ours: skipped, logged and counted
                    publisher.metrics.bad_partials.inc()
                    log.error("card-partials %d@%d is not a CardPartial (%s); skipped",
                              message.partition, message.offset, exc)
                    continue
                if publisher.reducer.add(partial):
                    changed.add(partial.card_id)
            for card_id in sorted(changed):
                await results.send(key=card_id.encode(), value=publisher.render(card_id))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _forget(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        publisher.forget()

    del run_cards, reduce, _forget
