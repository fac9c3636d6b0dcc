"""The card map process's side: what runs in the child ``MapProcess`` starts.

A partition's first pass opens its RocksDB as a *secondary* instance (RocksDB's read-only
follower of the worker's) and copies every profile into the child's own *shadow* RocksDB, on
disk. After that the worker sends the profiles that changed, as it stored them: an incremental
card's partial (kept per partition) takes each one's previous version (from the shadow) out and
the new one in; a ``map`` card, or a rebuild, streams the shadow. Memory does not grow with the
number of profiles. One partial per card goes back.

Its own module, run as ``python -m cardflow.agents.map_child``, importing only what the child
needs: the worker's modules (Faust, aiokafka, pydantic) would cost it ~40 MiB for nothing.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import orjson

from cardflow.card_results import incremental_partial, map_partition
from cardflow.cards import load_cards
from cardflow.incremental import Change, PartitionPartials
from cardflow.profile_values import decode_watermark, profile_json_of
from cardflow.profiles import load_scripts


def serve_maps(conn: Connection, card_paths: tuple[str, ...], script_paths: tuple[str, ...],
               params: dict[str, dict[str, Any]], workdir: str, incremental: bool,
               faust_prefix: bytes) -> None:
    """The child's loop: for each job ``(partition, db_path, card_ids, due, changed)`` send
    ``("loaded", n, seconds, offset, max_ts)``, then per card of ``card_ids``, in order, its
    encoded Partial when it is in ``due``, else an empty message (an incremental card brought
    up to date, nothing to publish).

    ``changed`` holds the profiles changed since the partition's last job, ``(key, stored value
    or None when deleted)``, as the worker read them from its own table; None: read the whole
    partition again. The partition's RocksDB is opened (as a secondary) only for a whole pass —
    the first, or every one without incremental cards — and closed after the job: a secondary
    replays the worker's unflushed writes into memtables of its own, most of this process's
    memory when kept open. Later passes (a ``map`` card, a rebuild) read the shadow.
    Keys starting with ``faust_prefix`` are Faust's bookkeeping, not profiles
    (given by the worker: the runtime, cardflow.batches, is where Faust's internals are named)."""
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
    shadows: dict[str, Rdict] = {}  # db path → profile key → the profile JSON the partials hold
    partials: dict[str, PartitionPartials] = {}  # db path → its incremental cards' partials
    marks: dict[str, tuple[int, int, int]] = {}  # db path → (profiles, offset, max_ts)

    def open_secondary(path: str) -> Rdict:
        follower = options()
        follower.set_max_open_files(-1)  # a secondary instance requires it
        secondary = os.path.join(workdir, f"secondary-{os.path.basename(path)}")
        db = Rdict(path, follower, access_type=AccessType.secondary(secondary))
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
            if not key.startswith(faust_prefix):
                yield decode(key, profile_json_of(value))

    def stream_shadow(shadow: Rdict) -> Iterator[dict[str, Any]]:
        for key, profile_json in shadow.items():
            assert isinstance(key, bytes) and isinstance(profile_json, bytes)  # raw mode
            yield decode(key, profile_json)

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return  # the worker is gone (killed): nothing to answer, nothing to report
        if job is None:
            return
        partition, path, card_ids, due, changed = job
        started = time.perf_counter()
        opened: list[Rdict] = []

        def secondary(path: str = path, opened: list[Rdict] = opened) -> Rdict | None:
            """The partition's RocksDB for this job (None: nothing folded here yet)."""
            if not opened and os.path.isdir(path):
                opened.append(open_secondary(path))
            return opened[0] if opened else None

        changes: list[Change] = []
        if path not in partials or changed is None or not kept:
            partials[path] = PartitionPartials(kept)
            shadow = new_shadow(path) if kept else None  # map cards only: nothing to keep
            count, offset, max_ts = 0, -1, 0
            db = secondary()
            for key, value in (db.items() if db is not None else ()):
                assert isinstance(key, bytes)  # raw mode
                if not key.startswith(faust_prefix):
                    if shadow is not None:
                        shadow[key] = profile_json_of(value)
                    o, t = decode_watermark(value)
                    count, offset, max_ts = count + 1, max(offset, o), max(max_ts, t)
        else:
            shadow = shadows[path]
            count, offset, max_ts = marks[path]
            for key, value in changed:
                before = shadow.get(key)
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
        # A pass reads the shadow when there is one: it holds exactly the versions the partials
        # and the marks were made from (the worker's table may have moved on since).
        profiles = functools.partial(stream_shadow, shadow) if shadow is not None else (
            lambda: stream(secondary()))
        here = partials[path]
        here.stale.update(set(here.cards) - set(card_ids))  # they miss these changes
        try:
            conn.send(("loaded", count, time.perf_counter() - started, offset, max_ts))
            for card_id in card_ids:
                card = cards[card_id]
                if card_id in here.cards:
                    partial = incremental_partial(here, card, partition, changes, profiles, max_ts, offset)
                    conn.send_bytes(partial.encode() if card_id in due else b"")
                else:
                    conn.send_bytes(map_partition(card, partition, profiles(), max_ts, offset).encode())
        except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
            return
        finally:
            for db in opened:
                db.close()


def main() -> None:
    """``python -m cardflow.agents.map_child FD``: serve the worker on the connection at FD; its
    first message is ``(sys.path, card paths, script paths, params, workdir, incremental, the key
    prefix of Faust's bookkeeping)``."""
    conn = Connection(int(sys.argv[1]))
    try:
        path, cards, scripts, params, workdir, incremental, faust_prefix = conn.recv()
    except (EOFError, OSError):
        return
    sys.path[:] = path  # the worker's: cards and scripts are imported from where it imports them
    serve_maps(conn, cards, scripts, params, workdir, incremental, faust_prefix)


if __name__ == "__main__":
    main()
