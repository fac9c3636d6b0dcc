"""bitmaps: bitmapist's API on cardflow vs bitmapist on Redis, from the same marks.

Marks (bench/cohort.py's, seeded): ``users`` users over 90 days, each with a first day and
heavy-tailed returns; marked as bitmapist's ``mark_event`` would: events ``first_seen`` (the first
day) and ``active`` (every active day), in day, ISO-week and month bitmaps. Two id layouts:
``dense`` (ids 0…users-1: a young product) and ``sparse`` (every 16th id: most ids ever issued
belong to users who are gone, the usual case for an old product).

- Redis: the keys bitmapist would write (under its names, written whole), Debian's redis-server;
  ``used_memory`` added by them.
- cardflow: the same marks as events in the warehouse (chDB, its own process), the bitmaps made by
  migration 3's materialized view; bytes on disk of ``bitmaps`` (all it keeps; nothing stays in
  memory between requests) and the process's resident memory after the queries.
Timed, alternated, results checked equal: the 90 × 90 cohort table (``cohort.get_dates_data``,
days, first_seen → active, counts) and a nested operation over 8 bitmaps (cardflow's cold — read
from the warehouse — and with the worker's cache warm: the data unchanged since a first request).
cardflow's side is
``cardflow.bitmaps.run`` on the request the client sends (the HTTP hop to the API is not timed).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.cohort import AFTER, ROWS, Redis, marks
from bench.harness import ROOT, Bench, Progress, Result, alternate, medians, target

SPREAD = {"dense": 1, "sparse": 16}
# The table both sides compute (bitmapist's get_dates_data arguments).
COHORT: dict[str, Any] = {
    "select1": "first_seen",
    "select2": "active",
    "time_group": "days",
    "as_percent": False,
    "num_results": ROWS,
    "num_of_rows": AFTER,
}


def cells(rows: list[list[Any]]) -> list[Any]:
    """A cohort table as JSON: date, size, counts (None where blank)."""
    return [[r[0].date().isoformat(), r[1], [None if c == "" else int(c) for c in r[2:]]] for r in rows]


def nested(module: Any, start: dt.date) -> Any:
    """(active in month 1 & month 2 & week 5) | (first_seen in week 3 ^ ~active on day 40)."""
    m1 = module.MonthEvents("active", start.year, start.month)
    m2 = m1.next()
    w5 = module.WeekEvents.from_date("active", start + dt.timedelta(days=35))
    w3 = module.WeekEvents.from_date("first_seen", start + dt.timedelta(days=21))
    d40 = module.DayEvents.from_date("active", start + dt.timedelta(days=40))
    return module.BitOpOr(module.BitOpAnd(m1, m2, w5), module.BitOpXor(w3, ~d40))


def redis_keys(m: list[list[int]], spread: int) -> dict[str, bytes]:
    """bitmapist's keys for the marks, as mark_event leaves them (ids ``u * spread``)."""
    import bitmapist
    import numpy as np

    size = (len(m) - 1) * spread // 8 + 1
    ids: dict[str, list[int]] = {}
    for u, days in enumerate(m):
        for name, chosen in (("first_seen", days[:1]), ("active", days)):
            for day in chosen:
                d = dt.date.fromordinal(day + 719_163)
                for key in (
                    bitmapist.DayEvents.from_date(name, d).redis_key,
                    bitmapist.WeekEvents.from_date(name, d).redis_key,
                    bitmapist.MonthEvents.from_date(name, d).redis_key,
                ):
                    ids.setdefault(key, []).append(u * spread)
    out = {}
    for key, members in ids.items():
        bits = np.zeros(size * 8, dtype=np.uint8)
        bits[np.asarray(members)] = 1
        top = max(members) // 8 + 1  # Redis grows a key to its highest bit only
        out[key] = np.packbits(bits)[:top].tobytes()
    return out


def child(path: Path, marks_csv: Path, spread: int, start: str) -> None:
    """The warehouse in its own process: load the marks, then time one request per stdin line."""
    import resource

    from cardflow import bitmapist as cfb
    from cardflow import bitmaps
    from cardflow.bitmapist import cohort
    from cardflow.connectors.warehouse import ChdbWarehouse, migrate

    wh = ChdbWarehouse(path, "bench")
    migrate(wh)
    limits = bitmaps.Limits()

    cache = bitmaps.Cache(64 << 20)  # the worker's default bitmaps_cache_mb

    class InProcess:  # the request the client sends, answered by the server's code, no HTTP
        cached = False  # through the cache (warm once a first request filled it), or cold

        def ops(self, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            held = cache if self.cached else None
            return bitmaps.run(wh, {"queries": queries}, limits, held)["results"]  # type: ignore[no-any-return]

    connection = InProcess()
    cfb._connection = connection  # type: ignore[assignment]  # noqa: SLF001 - the bench's own transport
    t = time.perf_counter()
    wh.command(f"""INSERT INTO bench.events SELECT concat('m', toString(rowNumberInAllBlocks())),
        toString(uid * {spread}), arrayJoin(if(first, ['first_seen', 'active'], ['active'])),
        toDateTime64(day * 86400 + 3600, 3, 'UTC'),
        '{{}}', '{{}}', 'bench', 'events', 0, rowNumberInAllBlocks(), now64(3)
        FROM file('{marks_csv}', 'CSV', 'uid UInt32, day UInt32, first UInt8')""")
    wh.command("OPTIMIZE TABLE bench.bitmaps FINAL")
    load_s = time.perf_counter() - t
    (size,) = wh.query(
        "SELECT sum(bytes_on_disk) AS b FROM system.parts WHERE active AND database = 'bench' "
        "AND table IN ('bitmaps', 'bitmap_flags')"
    )
    print(json.dumps({"load_s": load_s, "bytes": int(size["b"])}), flush=True)
    first = dt.date.fromisoformat(start)
    for line in sys.stdin:
        t = time.perf_counter()
        if line.strip() == "cohort":
            rows = cohort.get_dates_data(**COHORT, start_date=start)
            answer: Any = cells(rows)
        else:
            connection.cached = line.strip() == "nested-cached"
            answer = len(nested(cfb, first))
            connection.cached = False
        seconds = time.perf_counter() - t
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"seconds": seconds, "answer": answer, "peak_rss_mib": rss_mib}), flush=True)


def run(bench: Bench) -> Result:
    import bitmapist
    from bitmapist.cohort import get_dates_data

    progress = Progress("bitmaps")
    users = bench.size(100_000, 1_000_000)
    start = dt.date.today() - dt.timedelta(days=ROWS - 1)
    m = marks(users, start.toordinal() - 719_163)
    result = Result(
        "bitmaps",
        {
            "users": users,
            "days": ROWS,
            "marks": sum(map(len, m)),
            "cohort": f"{ROWS} x {AFTER + 1}",
            "spreads": SPREAD,
        },
    )
    csv = bench.tmp / "bitmap-marks.csv"
    csv.write_text(
        "".join(f"{u},{d},{int(i == 0)}\n" for u, days in enumerate(m) for i, d in enumerate(days))
    )
    memory: list[list[Any]] = [
        [
            "ids",
            "Redis used_memory MiB",
            "cardflow bitmaps on disk MiB",
            "Redis / cardflow",
            "warehouse process peak RSS MiB",
        ]
    ]

    def measure(layout: str, spread: int) -> None:
        redis = Redis(bench.tmp)
        proc = None
        try:
            progress(f"{layout}: loading Redis")
            before = int(redis.client.info("memory")["used_memory"])  # type: ignore[index]
            pipe = redis.client.pipeline()
            for key, value in redis_keys(m, spread).items():
                pipe.set(key, value)
            pipe.execute()
            redis_bytes = int(redis.client.info("memory")["used_memory"]) - before  # type: ignore[index]
            bitmapist.setup_redis("default", "127.0.0.1", redis.port)
            progress(f"{layout}: loading the warehouse")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.bitmaps",
                    str(bench.tmp / f"chdb-{layout}"),
                    str(csv),
                    str(spread),
                    start.isoformat(),
                ],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            loaded = json.loads(proc.stdout.readline())
            answers: dict[str, Any] = {}
            peak = [0.0]
            stdin, stdout = proc.stdin, proc.stdout

            def ask(what: str) -> dict[str, float]:
                stdin.write(what + "\n")
                stdin.flush()
                reply = json.loads(stdout.readline())
                answers.setdefault(f"cardflow {what}", reply["answer"])
                peak[0] = reply["peak_rss_mib"]
                return {"seconds": reply["seconds"]}

            def on_redis(what: str) -> dict[str, float]:
                t = time.perf_counter()
                if what == "cohort":
                    rows = get_dates_data(
                        **COHORT,
                        start_date=start.isoformat(),
                    )
                    answer: Any = cells(rows)
                else:
                    answer = len(nested(bitmapist, start))
                seconds = time.perf_counter() - t
                answers.setdefault(f"redis {what}", answer)
                return {"seconds": seconds}

            rows = alternate(
                bench.rounds,
                {
                    f"{layout}: cohort table, bitmapist on Redis": lambda r: on_redis("cohort"),
                    f"{layout}: cohort table, cardflow": lambda r: ask("cohort"),
                    f"{layout}: nested operation, bitmapist on Redis": lambda r: on_redis("nested"),
                    f"{layout}: nested operation, cardflow": lambda r: ask("nested"),
                    f"{layout}: nested operation, cardflow, cache warm": lambda r: ask("nested-cached"),
                },
                progress,
            )
            result.contenders.update(rows)
            answers["redis nested-cached"] = answers["redis nested"]
            for what in ("cohort", "nested", "nested-cached"):
                if answers[f"cardflow {what}"] != answers[f"redis {what}"]:
                    raise AssertionError(f"{layout} {what}: cardflow and bitmapist answer differently")
            sec = {name: medians(r)["seconds"] for name, r in rows.items()}
            speed = (
                sec[f"{layout}: cohort table, bitmapist on Redis"] / sec[f"{layout}: cohort table, cardflow"]
            )
            result.ratios[f"{layout}: cohort table, Redis time / cardflow time"] = round(speed, 2)
            result.ratios[f"{layout}: nested operation, cache warm, Redis time / cardflow time"] = round(
                sec[f"{layout}: nested operation, bitmapist on Redis"]
                / sec[f"{layout}: nested operation, cardflow, cache warm"],
                2,
            )
            result.ratios[f"{layout}: nested operation, Redis time / cardflow time"] = round(
                sec[f"{layout}: nested operation, bitmapist on Redis"]
                / sec[f"{layout}: nested operation, cardflow"],
                2,
            )
            saving = redis_bytes / max(loaded["bytes"], 1)
            result.ratios[f"{layout}: Redis memory / cardflow bitmaps"] = round(saving, 2)
            result.targets.append(
                target(f"{layout}: cohort table ≥ 5× faster than bitmapist on Redis", speed, ">=", 5)
            )
            result.targets.append(target(f"{layout}: ≥ 10× less memory than Redis", saving, ">=", 10))
            memory.append(
                [
                    layout,
                    round(redis_bytes / 2**20, 1),
                    round(loaded["bytes"] / 2**20, 2),
                    round(saving, 1),
                    round(peak[0], 1),
                ]
            )
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
            redis.stop()

    for layout, spread in SPREAD.items():
        measure(layout, spread)
    result.tables["memory"] = memory
    result.notes.append(
        "cardflow keeps the bitmaps on disk (ClickHouse parts) and reads them per request, or from "
        "its cache (bitmaps_cache_mb, 64 MiB at most); Redis keeps every key in memory. The "
        "warehouse process's resident memory (chDB's engine included) is in the table, not in the ratio"
    )
    result.notes.append(
        "answers checked equal (cohort cells and the nested operation's count) before the ratios"
    )
    return result


if __name__ == "__main__":
    child(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
