"""Card maps in a child process, and its supervisor.

The child opens a partition's RocksDB as a *secondary* instance (RocksDB's
read-only follower that catches up with the worker's writes). An incremental
card's partial is kept per partition and updated from the profiles that
changed (their previous versions come from the child's own *shadow* RocksDB,
on disk); a ``map`` card streams the partition's profiles. Memory does not
grow with the number of profiles. One partial per card goes back.
A child process, not a thread, because a card that loops forever must be
stopped: the parent (``MapProcess``) kills the child when a card overruns its
budget, publishes an error partial for it and starts a new child. It also
keeps card code off the worker's event loop and GIL.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from cardflow.agents.card_metrics import CardMetrics
from cardflow.batches import is_table_key
from cardflow.card_results import Partial, incremental_partial, map_partition
from cardflow.cards import Card, load_cards
from cardflow.config import Settings
from cardflow.incremental import Change, PartitionPartials
from cardflow.profile_values import decode_watermark, profile_json_of
from cardflow.profiles import load_scripts

LOAD_TIMEOUT_S = 120.0  # reading and decoding one partition; card budgets start after it


def serve_maps(conn: Connection, card_paths: tuple[str, ...], script_paths: tuple[str, ...],
               params: dict[str, dict[str, Any]], workdir: str, incremental: bool = True) -> None:
    """The child's loop: for each job ``(partition, db_path, card_ids, due, keys)`` send
    ``("loaded", n, seconds, offset, max_ts)``, then per card of ``card_ids``, in order, its
    encoded Partial when it is in ``due``, else an empty message (an incremental card brought
    up to date, nothing to publish).

    ``keys`` names the profiles changed since the partition's last job, or is None to read the
    whole partition again."""
    from rocksdict import AccessType, BlockBasedOptions, Cache, Options, Rdict

    # One small block cache for every DB the child opens (RocksDB's default is one per DB): a pass
    # over a partition streams through it, so memory stays flat however many profiles there are.
    table = BlockBasedOptions()
    table.set_block_cache(Cache(16 << 20))
    table.set_cache_index_and_filter_blocks(True)  # else every open table file's index stays in memory

    def options() -> Options:
        opened = Options(raw_mode=True)
        opened.set_block_based_table_factory(table)
        return opened

    cards = {c.id: c for c in load_cards(card_paths, [s.name for s in load_scripts(script_paths)], params)}
    kept = [c for c in cards.values() if incremental and c.incremental()]  # partials kept here
    dbs: dict[str, Rdict] = {}
    shadows: dict[str, Rdict] = {}  # db path → profile key → the profile JSON the partials hold
    partials: dict[str, PartitionPartials] = {}  # db path → its incremental cards' partials
    marks: dict[str, tuple[int, int, int]] = {}  # db path → (profiles, offset, max_ts)

    def open_secondary(path: str) -> Rdict:
        db = dbs.get(path)
        if db is not None:
            try:
                db.try_catch_up_with_primary()
                return db
            except Exception:  # noqa: BLE001 - the primary was reopened (rebalance): open afresh
                db.close()
        follower = options()
        follower.set_max_open_files(-1)  # a secondary instance requires it
        secondary = os.path.join(workdir, f"s{len(dbs)}-{os.path.basename(path)}")
        db = dbs[path] = Rdict(path, follower, access_type=AccessType.secondary(secondary))
        db.try_catch_up_with_primary()
        return db

    def new_shadow(path: str) -> Rdict:
        old = shadows.pop(path, None)
        if old is not None:
            old_path = old.path()
            old.close()
            Rdict.destroy(old_path)
        shadow = options()
        shadow.set_write_buffer_size(2 << 20)  # small memtables, flushed to disk often
        shadow.set_max_write_buffer_number(2)
        shadows[path] = Rdict(os.path.join(workdir, f"shadow{time.time_ns()}-{os.path.basename(path)}"),
                              shadow)
        return shadows[path]

    def decode(key: bytes, profile_json: bytes) -> dict[str, Any]:
        profile: dict[str, Any] = orjson.loads(profile_json)
        profile["uid"] = key.decode()
        return profile

    def stream(db: Rdict | None) -> Iterator[dict[str, Any]]:
        """Every profile of the partition, decoded one at a time (none kept)."""
        for key, value in (db.items() if db is not None else ()):
            assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
            if is_table_key(key):
                yield decode(key, profile_json_of(value))

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return  # the worker is gone (killed): nothing to answer, nothing to report
        if job is None:
            return
        partition, path, card_ids, due, keys = job
        started = time.perf_counter()
        db = open_secondary(path) if os.path.isdir(path) else None  # none: nothing folded here yet
        changes: list[Change] = []
        if path not in partials or keys is None or db is None or not kept:
            partials[path] = PartitionPartials(kept)
            shadow = new_shadow(path) if kept else None  # map cards only: nothing to keep
            count, offset, max_ts = 0, -1, 0
            for key, value in (db.items() if db is not None else ()):
                assert isinstance(key, bytes)  # raw mode
                if is_table_key(key):
                    if shadow is not None:
                        shadow[key] = profile_json_of(value)
                    o, t = decode_watermark(value)
                    count, offset, max_ts = count + 1, max(offset, o), max(max_ts, t)
        else:
            shadow = shadows[path]
            count, offset, max_ts = marks[path]
            for key in keys:
                value, before = db.get(key), shadow.get(key)
                after = None if value is None else profile_json_of(value)
                if after == before:
                    continue
                if value is None:
                    del shadow[key]
                    count -= 1
                else:
                    shadow[key] = after
                    count += before is None
                    o, t = decode_watermark(value)
                    offset, max_ts = max(offset, o), max(max_ts, t)
                changes.append((None if before is None else decode(key, before),
                                None if after is None else decode(key, after)))
        marks[path] = (count, offset, max_ts)
        here = partials[path]
        here.stale.update(set(here.cards) - set(card_ids))  # they miss these changes
        try:
            conn.send(("loaded", count, time.perf_counter() - started, offset, max_ts))
            for card_id in card_ids:
                card = cards[card_id]
                if card_id in here.cards:
                    partial = incremental_partial(here, card, partition, changes,
                                                  functools.partial(stream, db), max_ts, offset)
                    conn.send_bytes(partial.encode() if card_id in due else b"")
                else:
                    conn.send_bytes(map_partition(card, partition, stream(db), max_ts, offset).encode())
        except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
            return


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
                                 args=(child, s.cards, s.profile_scripts, s.card_params, self._workdir,
                                       s.cards_incremental))
        self._proc.start()
        child.close()
        self._conn = parent
        return parent

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.pid is not None:  # made but not started (a stop meanwhile): none to kill
            proc.kill()
            proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        self._kill()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def run(self, partition: int, db_path: Path, card_ids: list[str],
            on_partial: Callable[[Partial], Any] | None = None,
            keys: list[bytes] | None = None,
            resting: frozenset[str] = frozenset()) -> tuple[list[Partial], list[str]]:
        """Partials for ``card_ids`` over one partition, and the ids of the cards that overran their
        budget or ended the map process (each gets an error partial).
        ``on_partial`` (from this thread) gets each partial as soon as it is made. ``keys``: the
        profiles changed since this partition's last run, or None to read them all. Every
        incremental card takes the changes, due or not (the child keeps one previous version of
        each profile, so all must move together) but those ``resting`` after an overrun (they are
        built again from the whole partition when they next run); only ``card_ids`` publish."""
        partials: list[Partial] = []
        due = set(card_ids)

        def keep(partial: Partial) -> None:
            partials.append(partial)
            if on_partial is not None:
                on_partial(partial)

        overran: list[str] = []
        kept = self.settings.cards_incremental
        pending = list(card_ids) + [c for c, card in self.cards.items()
                                    if kept and card.incremental() and c not in due and c not in resting]
        while pending:
            conn = self._conn if self._proc is not None and self._proc.is_alive() else None
            if conn is None:
                self._kill()
                conn = self._start()  # a new child has no profiles cached: it reads them all
            conn.send((partition, str(db_path), pending, due, keys))
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
                        data = conn.recv_bytes()
                        partial = Partial.decode(data) if data else None
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
                                 int(time.time() * 1000), card.budget * 1000, problem, card.config))
                    break
                pending.pop(0)
                if partial is None:
                    continue  # brought up to date, not due
                keep(partial)
                self.metrics.maps.labels(card.id, "error" if partial.error else "ok").inc()
                self.metrics.map_seconds.labels(card.id).observe(partial.run_ms / 1000)
        return partials, overran
