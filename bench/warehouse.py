"""warehouse: load throughput through the topology, and insights query times.

- load: ``cardflow worker warehouse`` from its readiness to the last row inserted (rows/s), vs a
  plain chDB bulk insert of the same rows (JSONEachRow, the same batch size, rows pre-built) in a
  process of its own (chDB: one engine per process), and vs the worker with
  ``warehouse_bitmaps`` off (what bitmapist's bitmaps cost the load);
- queries: a synthetic warehouse (each user's first day uniform over 90 days, later events after
  it; five event names; browser and amount properties; a country per user), then each insights
  query kind several times through ``Answers`` with the cache off: p50 and p95 in ms.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    ROOT,
    Bench,
    Data,
    Progress,
    Result,
    Worker,
    alternate,
    medians,
    produce_held,
    target,
    timed_counter,
)
from cardflow.config import Settings, load_settings

LOAD_USERS = 100_000


def load_worker(settings: Settings, records: list[tuple[bytes, bytes]]) -> dict[str, float]:
    # The records held in a transaction until the worker is up: its start-up (the engine, the
    # migrations) is left out, as the baseline's warm-up is.
    commit = produce_held(settings, records)
    worker = Worker(
        settings, "worker", "warehouse", log=settings.data_dir / f"warehouse-{time.time_ns()}.log"
    )
    try:
        return timed_counter(
            worker, 'cardflow_warehouse_rows_total{table="events"}', len(records), release=commit
        )
    finally:
        worker.stop()


def load_baseline(path: Path, n: int, batch: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.warehouse", "baseline-insert", str(path), str(n), str(batch)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {"events_per_s": float(out.stdout.strip().splitlines()[-1])}


def baseline_insert(path: Path, n: int, batch: int) -> None:
    from cardflow.agents.warehouse import _dt  # the loader's own time format
    from cardflow.connectors.warehouse import ChdbWarehouse, migrate

    wh = ChdbWarehouse(path, "baseline")
    migrate(wh)
    decoder, now = load_settings(env={}).decoder(), int(time.time() * 1000)
    rows = []
    for i, (_, value) in enumerate(Data(users=LOAD_USERS, events=n, seed=5).records()):
        e = decoder.record(value, now)
        rows.append(
            {
                "event_id": e.event_id,
                "uid": e.uid,
                "event": e.event,
                "ts": _dt(e.ts),
                "properties": json.dumps(e.properties),
                "set_properties": "{}",
                "source": e.source,
                "kafka_topic": "events",
                "kafka_partition": i % 8,
                "kafka_offset": i,
                "ingested_at": _dt(now),
            }
        )
    wh.insert("events", rows[:1000], "warm-up")  # the engine's first insert pays its start-up
    wh.command("TRUNCATE TABLE baseline.events")
    started = time.perf_counter()
    for at in range(0, n, batch):
        wh.insert("events", rows[at : at + batch], f"baseline/{at}")
    print(n / (time.perf_counter() - started))


QUERIES: dict[str, dict[str, Any]] = {
    "trend count by day": {
        "kind": "trend",
        "event": "purchase",
        "period": "day",
        "from": "2026-09-01",
        "to": "2026-11-29",
    },
    "trend unique users by week": {
        "kind": "trend",
        "aggregation": "unique_users",
        "period": "week",
        "from": "2026-09-01",
        "to": "2026-11-29",
    },
    "trend p90 by browser": {
        "kind": "trend",
        "aggregation": "p90",
        "property": "amount",
        "period": "day",
        "from": "2026-09-01",
        "to": "2026-11-29",
        "breakdown": "browser",
    },
    "trend with a user filter": {
        "kind": "trend",
        "event": "purchase",
        "period": "day",
        "from": "2026-09-01",
        "to": "2026-11-29",
        "filters": [
            {"property": "country", "op": "eq", "value": "DE", "on": "user"},
            {"property": "amount", "op": "gte", "value": 100},
        ],
    },
    "retention 30 days": {
        "kind": "retention",
        "period": "day",
        "periods": 30,
        "after": 29,
        "as_of": "2026-11-29",
    },
    "funnel 3 steps": {
        "kind": "funnel",
        "steps": ["signup", "search", "purchase"],
        "from": "2026-09-01",
        "to": "2026-11-29",
    },
}


def queries(path: Path, events: int, users: int, rounds: int, progress: Progress) -> list[list[Any]]:
    from cardflow.connectors.warehouse import ChdbWarehouse, migrate
    from cardflow.insights import Answers, Limits
    from cardflow.sql_policy import SqlLimits

    wh = ChdbWarehouse(path, "bench")
    migrate(wh)
    started = time.perf_counter()
    # Each user's first day is uniform over 90 days; their events fall on or after it.
    wh.command(f"""INSERT INTO bench.events SELECT concat('e', toString(number)), concat('u', toString(u)),
        ['page_view', 'search', 'signup', 'purchase', 'share'][1 + intHash32(number) % 5],
        toDateTime64('2026-09-01 00:00:00', 3, 'UTC') + toIntervalMillisecond(
            (first + intHash64(number) % (90 - first)) * 86400000 + intHash32(number + 7) % 86400000),
        concat('{{"browser":"', ['firefox', 'chrome', 'safari'][1 + number % 3], '","amount":',
               toString(intHash32(number) % 500), '}}'),
        '{{}}', 'bench', 'events', number % 8, number, now64(3)
        FROM (SELECT number, number % {users} AS u, intHash32(u) % 90 AS first FROM numbers({events}))""")
    wh.command(f"""INSERT INTO bench.users SELECT concat('u', toString(number)),
        concat('{{"country":"', ['DE', 'FR', 'US', 'BR', 'JP'][1 + number % 5], '"}}'), '{{}}',
        now64(3), now64(3), 1, 1, now64(3) FROM numbers({users})""")
    loaded = time.perf_counter() - started
    answers = Answers(wh, Limits(), SqlLimits(), entries=0)
    out: list[list[Any]] = [["query", "p50 ms", "p95 ms"]]
    progress(f"generated {events:,} events in {loaded:.0f} s; querying")
    for name, q in QUERIES.items():
        progress(f"query: {name}")
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            answers.query(q)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out.append(
            [
                name,
                round(statistics.median(times), 1),
                round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
            ]
        )
    return out


def run(bench: Bench) -> Result:
    progress = Progress("warehouse")
    n = bench.size(50_000, 500_000)
    q_events, q_users = bench.size(1_000_000, 10_000_000), bench.size(100_000, 1_000_000)
    q_rounds = bench.size(3, 7, smoke=1)
    result = Result(
        "warehouse",
        {"load_events": n, "query_events": q_events, "query_users": q_users, "query_rounds": q_rounds},
    )
    records = Data(users=LOAD_USERS, events=n, seed=5).records()
    rounds: dict[int, Settings] = {}

    def worker_settings(r: int, who: str = "") -> Settings:
        here = bench.settings(f"warehouse{r}{who}")
        # Batches of a fifth of the events (the baseline inserts the same sizes), so the rate
        # is timed over several inserts.
        return here.replace(warehouse_url=f"chdb://{here.data_dir}/chdb", batch_size=n // 5)

    def prepare(r: int) -> None:
        rounds[r] = worker_settings(r)

    result.contenders = alternate(
        bench.rounds,
        {
            "cardflow worker warehouse": lambda r: load_worker(worker_settings(r), records),
            "cardflow worker warehouse, warehouse_bitmaps off": lambda r: load_worker(
                worker_settings(r, "off").replace(warehouse_bitmaps=False), records
            ),
            "plain chDB insert": lambda r: load_baseline(
                rounds[r].data_dir / "baseline", n, rounds[r].batch_size
            ),
        },
        progress,
        before_round=prepare,
    )
    eps = medians(result.contenders["cardflow worker warehouse"])["events_per_s"]
    ratio = eps / medians(result.contenders["plain chDB insert"])["events_per_s"]
    result.ratios["loader / plain insert"] = round(ratio, 3)
    off = medians(result.contenders["cardflow worker warehouse, warehouse_bitmaps off"])["events_per_s"]
    result.ratios["loader with bitmapist's bitmaps / without"] = round(eps / off, 3)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.warehouse",
            "queries",
            str(bench.tmp / "queries"),
            str(q_events),
            str(q_users),
            str(q_rounds),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    table = json.loads(out.stdout.strip().splitlines()[-1])
    result.tables[f"insights over {q_events:,} events, {q_users:,} users (cache off)"] = table
    progress.done()
    times = {row[0]: row for row in table[1:]}
    result.targets = [
        target("loader rows/s", eps, ">=", 100_000),
        target("loader vs a plain insert", ratio, ">=", 0.7),
        target("trend count by day, p50 ms", times["trend count by day"][1], "<=", 200),
        target("retention 30 days, p95 ms", times["retention 30 days"][2], "<=", 1000),
    ]
    return result


if __name__ == "__main__" and sys.argv[1:2] == ["baseline-insert"]:
    baseline_insert(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
elif __name__ == "__main__" and sys.argv[1:2] == ["queries"]:
    print(
        json.dumps(
            queries(
                Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), Progress("warehouse")
            )
        )
    )
