"""cohort: a 90-day retention table (first seen → any event, by day) over ``users`` users, from the
same marks, three ways, checked cell for cell:

- ``retention card``: the built-in card's map over every profile (8 partitions) and its reduce —
  a full recompute; the live card serves its last result without computing anything per request;
- ``warehouse``: the insights retention query on chDB (``user_days``/``user_first``), cache off,
  in a process of its own (chDB: one engine per process);
- ``bitmapist``: ``cohort.get_dates_data`` on a real Redis (Debian's ``redis-server``, started
  here), the bitmaps written under bitmapist's own key names.

Marks (seeded): each user's first day is uniform over the 90 days; later active days follow a
heavy-tailed gap after it. Memory: Redis's ``used_memory`` for the bitmaps; the profiles' JSON and
the card's partial; the warehouse's bytes on disk.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Bench, Progress, Result, alternate, medians, target
from cardflow.local_kafka import free_port

DAY_MS = 86_400_000
ROWS, AFTER = 90, 89
Marks = list[list[int]]  # per user, their active days (day numbers since 1970), the first one first


def marks(users: int, first_day: int, seed: int = 7) -> Marks:
    rng = random.Random(seed)
    out = []
    last = first_day + ROWS - 1
    for _ in range(users):
        first = first_day + rng.randrange(ROWS)
        days = {first}
        for _ in range(int(rng.expovariate(1 / 4))):  # ~4 returns on average, most soon after
            day = first + int(rng.paretovariate(0.7))
            if day <= last:
                days.add(day)
        out.append(sorted(days))
    return out


def _hex_days(days: list[int]) -> list[Any]:
    end = days[-1]
    bits = 0
    for d in days:
        bits |= 1 << (end - d)
    return [end, format(bits, "x")]


def profiles(m: Marks) -> list[dict[str, Any]]:
    """The profiles the standard script would have built from one page_view per active day."""
    return [
        {
            "first_seen": days[0] * DAY_MS + 3_600_000,
            "last_seen": days[-1] * DAY_MS + 3_600_000,
            "events": {"page_view": len(days)},
            "days": {"page_view": _hex_days(days)},
        }
        for days in m
    ]


def card_cells(card: Any, all_profiles: list[dict[str, Any]]) -> tuple[list[Any], int]:
    """A full recompute: map per partition (8, split by uid; any split sums to the same), then reduce."""
    parts: list[list[dict[str, Any]]] = [[] for _ in range(8)]
    for u, p in enumerate(all_profiles):
        parts[zlib.crc32(b"user-%d" % u) % 8].append(p)
    from cardflow.cards import encode_partial

    partials = [card.map(part) for part in parts]
    total = card.total(partials)
    return [[d, n, counts] for d, n, counts in card.cells(total)], len(encode_partial(total))


class LiveCard:
    """The retention card as the map process keeps it: a running partial per partition. ``update``
    gives ``share`` of the users one more active day (the last), takes their old shares out and
    puts the new ones in, and renders the cells; ``undo`` puts them back (not timed)."""

    def __init__(self, card: Any, all_profiles: list[dict[str, Any]], share: float) -> None:
        from cardflow.incremental import PartitionPartials

        self.card, self.profiles = card, all_profiles
        self.parts = [PartitionPartials([card]) for _ in range(8)]
        self.home = [zlib.crc32(b"user-%d" % u) % 8 for u in range(len(all_profiles))]
        for i, part in enumerate(self.parts):
            part.rebuild(card.id, (p for u, p in enumerate(all_profiles) if self.home[u] == i))
        step = max(1, int(1 / share))
        self.changed = list(range(0, len(all_profiles), step))
        self.changes = 0

    def _apply(self, pairs: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> None:
        by_part: dict[int, list[Any]] = {}
        for u, old, new in pairs:
            by_part.setdefault(self.home[u], []).append((old, new))
        for i, changes in by_part.items():
            self.parts[i].change(self.card.id, changes)

    def update(self) -> list[Any]:
        last = max(p["last_seen"] for p in self.profiles) // DAY_MS
        self.pairs = []
        for u in self.changed:
            old = self.profiles[u]
            end, bits = old["days"]["page_view"]
            days = sorted(
                {last} | {end - i for i in range(int(bits, 16).bit_length()) if int(bits, 16) >> i & 1}
            )
            new = {**old, "last_seen": last * DAY_MS + 3_600_000, "days": {"page_view": _hex_days(days)}}
            self.pairs.append((u, old, new))
        self._apply(self.pairs)
        self.changes = len(self.pairs)
        total = self.card.total(part.partial(self.card.id) for part in self.parts)
        return [[d, n, counts] for d, n, counts in self.card.cells(total)]

    def after(self) -> list[dict[str, Any]]:
        new = {u: n for u, _, n in self.pairs}
        return [new.get(u, p) for u, p in enumerate(self.profiles)]

    def undo(self) -> None:
        self._apply([(u, new, old) for u, old, new in self.pairs])


# bitmapist on Redis ----------------------------------------------------------------------------


class Redis:
    def __init__(self, directory: Path) -> None:
        if not shutil.which("redis-server"):
            raise RuntimeError(
                "redis-server is not installed (Debian: apt-get install redis-server; "
                "`make test-packages` does it)"
            )
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        self.client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not answer")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def load_bitmapist(redis: Redis, m: Marks) -> int:
    """The bitmaps ``mark_event("first_seen" | "active", uid, now=day)`` would leave, written whole
    (SETBIT offset u is bit 7 - u % 8 of byte u // 8), under bitmapist's own key names. Returns
    the bytes Redis uses for them."""
    import bitmapist

    size = len(m) // 8 + 1
    maps: dict[str, bytearray] = {}
    for u, days in enumerate(m):
        byte, bit = u // 8, 0x80 >> (u % 8)
        for name, chosen in (("first_seen", days[:1]), ("active", days)):
            for day in chosen:
                d = dt.date.fromordinal(day + 719_163)
                key = bitmapist.DayEvents(name, d.year, d.month, d.day).redis_key
                maps.setdefault(key, bytearray(size))[byte] |= bit
    before = int(redis.client.info("memory")["used_memory"])  # type: ignore[index]
    pipe = redis.client.pipeline()
    for key, value in maps.items():
        pipe.set(key, bytes(value))
    pipe.execute()
    return int(redis.client.info("memory")["used_memory"]) - before  # type: ignore[index]


def bitmapist_cells(redis: Redis, start: dt.date) -> list[Any]:
    import bitmapist
    from bitmapist.cohort import get_dates_data

    bitmapist.setup_redis("bench", "127.0.0.1", redis.port)
    rows = get_dates_data(
        "first_seen",
        "active",
        time_group="days",
        system="bench",
        as_percent=False,
        num_results=ROWS,
        num_of_rows=AFTER,
        start_date=start.isoformat(),
    )
    return [[r[0].date().isoformat(), r[1], [None if c == "" else int(c) for c in r[2:]]] for r in rows]


# The warehouse, in its own process -------------------------------------------------------------


def warehouse_child(path: Path, marks_csv: Path, as_of: str) -> None:
    """Load the marks, then answer one retention query per line read from stdin."""
    from cardflow.connectors.warehouse import ChdbWarehouse, migrate
    from cardflow.insights import Answers, Limits
    from cardflow.sql_policy import SqlLimits

    wh = ChdbWarehouse(path, "bench")
    migrate(wh)
    started = time.perf_counter()
    wh.command(f"""INSERT INTO bench.events SELECT concat('m', toString(rowNumberInAllBlocks())),
        concat('user-', toString(uid)), 'page_view', toDateTime64(day * 86400 + 3600, 3, 'UTC'),
        '{{}}', '{{}}', 'bench', 'events', 0, rowNumberInAllBlocks(), now64(3)
        FROM file('{marks_csv}', 'CSV', 'uid UInt32, day UInt32')""")
    wh.command("OPTIMIZE TABLE bench.events FINAL")
    load_s = time.perf_counter() - started
    (size,) = wh.query(
        "SELECT sum(bytes_on_disk) AS b FROM system.parts WHERE active AND database = 'bench' "
        "AND table IN ('events', 'user_days', 'user_first')"
    )
    answers = Answers(wh, Limits(), SqlLimits(), entries=0)
    query = {"kind": "retention", "period": "day", "periods": ROWS, "after": AFTER, "as_of": as_of}
    print(json.dumps({"load_s": load_s, "bytes": int(size["b"])}), flush=True)
    for _ in sys.stdin:
        t = time.perf_counter()
        out, _cached = answers.query(query)
        seconds = time.perf_counter() - t
        cells = [[r["date"], r["size"], r["counts"]] for r in out["rows"]]
        print(json.dumps({"seconds": seconds, "cells": cells}), flush=True)


def run(bench: Bench) -> Result:
    from cardflow.builtin_cards import Retention

    progress = Progress("cohort")
    users = bench.size(100_000, 1_000_000)
    today = dt.date.today()
    start = today - dt.timedelta(days=ROWS - 1)
    first_day = start.toordinal() - 719_163
    progress(f"marks for {users:,} users")
    m = marks(users, first_day)
    n_marks = sum(map(len, m))
    result = Result(
        "cohort",
        {
            "users": users,
            "marks": n_marks,
            "rows": ROWS,
            "after": AFTER,
            "start": start.isoformat(),
            "as_of": today.isoformat(),
        },
    )
    ps = profiles(m)
    card = Retention(periods=ROWS, after=AFTER, as_of=today.isoformat())
    csv = bench.tmp / "marks.csv"
    csv.write_text("".join(f"{u},{d}\n" for u, days in enumerate(m) for d in days))
    redis = Redis(bench.tmp)
    child = None
    try:
        progress("loading Redis")
        redis_bytes = load_bitmapist(redis, m)
        progress("loading the warehouse")
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.cohort",
                "warehouse",
                str(bench.tmp / "chdb"),
                str(csv),
                today.isoformat(),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        loaded = json.loads(child.stdout.readline())
        answers: dict[str, list[Any]] = {}

        def timed(name: str, fn: Any) -> dict[str, float]:
            t = time.perf_counter()
            cells = fn()
            answers.setdefault(name, cells)
            return {"seconds": time.perf_counter() - t}

        stdin, stdout = child.stdin, child.stdout

        def warehouse() -> list[Any]:
            stdin.write("q\n")
            stdin.flush()
            reply = json.loads(stdout.readline())
            return reply["cells"]

        partial_bytes = [0]

        def card_run() -> list[Any]:
            cells, partial_bytes[0] = card_cells(card, ps)
            return cells

        progress("the live card's running partials")
        live = LiveCard(card, ps, 0.01)

        def live_update(r: int) -> dict[str, float]:
            out = timed("live", live.update)
            if "live truth" not in answers:  # once: a full map over the changed profiles
                answers["live truth"] = card_cells(card, live.after())[0]
            live.undo()
            return out

        result.contenders = alternate(
            bench.rounds,
            {
                "retention card (full recompute)": lambda r: timed("card", card_run),
                "retention card (live: 1% of users changed)": live_update,
                "warehouse query (chDB)": lambda r: timed("warehouse", warehouse),
                "bitmapist on Redis": lambda r: timed("bitmapist", lambda: bitmapist_cells(redis, start)),
            },
            progress,
        )
    finally:
        if child is not None:
            child.kill()
        redis.stop()
    progress.done()
    truth = answers["bitmapist"]
    for name in ("card", "warehouse"):
        equal = answers[name] == truth
        result.targets.append(target(f"cells equal: {name} vs bitmapist", 1.0 if equal else 0.0, ">=", 1))
        if not equal:
            diff = next(i for i, (a, b) in enumerate(zip(answers[name], truth, strict=True)) if a != b)
            result.notes.append(
                f"{name} differs from bitmapist first at row {diff}: {answers[name][diff]} vs {truth[diff]}"
            )
    live_equal = answers["live"] == answers["live truth"]
    result.targets.append(
        target("cells equal: live card after the change vs a full map", float(live_equal), ">=", 1)
    )
    result.params["live_changes"] = live.changes
    t = {name: medians(rows)["seconds"] for name, rows in result.contenders.items()}
    bitmapist_s = t["bitmapist on Redis"]
    result.ratios = {
        "bitmapist / card": round(bitmapist_s / t["retention card (full recompute)"], 3),
        "bitmapist / live card update": round(
            bitmapist_s / t["retention card (live: 1% of users changed)"], 3
        ),
        "bitmapist / warehouse": round(bitmapist_s / t["warehouse query (chDB)"], 3),
    }
    profile_bytes = sum(len(json.dumps(p, separators=(",", ":"))) for p in ps)
    result.tables["memory and storage"] = [
        ["what", "bytes", "bytes per user"],
        ["Redis used_memory for bitmapist's bitmaps", redis_bytes, round(redis_bytes / users, 1)],
        ["profiles (JSON) the card maps", profile_bytes, round(profile_bytes / users, 1)],
        ["the card's partial (encoded)", partial_bytes[0], round(partial_bytes[0] / users, 2)],
        [
            "warehouse on disk (events, user_days, user_first)",
            loaded["bytes"],
            round(loaded["bytes"] / users, 1),
        ],
    ]
    result.notes.append(
        f"warehouse load of {n_marks:,} marks: {loaded['load_s']:.1f} s; the live card answers "
        "from its last result (no per-request compute)"
    )
    result.targets.append(
        target("faster than bitmapist: warehouse", result.ratios["bitmapist / warehouse"], ">=", 5)
    )
    result.targets.append(
        target(
            "faster than bitmapist: live card update", result.ratios["bitmapist / live card update"], ">=", 5
        )
    )
    result.targets.append(
        target("faster than bitmapist: card recompute", result.ratios["bitmapist / card"], ">=", 5)
    )
    return result


if __name__ == "__main__" and sys.argv[1:2] == ["warehouse"]:
    warehouse_child(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
