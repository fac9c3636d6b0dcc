"""Warehouse benchmark: load throughput through the topology, and query latency over 10M events.

Run: .venv/bin/python bench/warehouse.py [--events N] [--rounds N] [--query-events N] [--users N]
Starts its own broker on loopback.
- load: ``cardflow worker warehouse`` from the first row inserted to the last (rows/s), vs the
  baseline measured in the same round: a plain chDB bulk insert (JSONEachRow, the same rows, the
  same batch size) in a process of its own, with the rows already built;
- queries: a synthetic warehouse of ``--query-events`` events over ``--users`` users (each user's
  first day uniform over 90 days, later events after it; five event names; browser and amount
  properties; a country per user), then each insights query kind ``--query-rounds`` times
  through ``Answers`` with the cache off: p50 and p95 in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).parent))
from ingest import machine  # noqa: E402
from people import counter  # noqa: E402

from cardflow.config import Settings, load_settings  # noqa: E402
from cardflow.connectors.kafka_admin import ensure_topics  # noqa: E402
from cardflow.kafka_clients import producer_config  # noqa: E402
from cardflow.local_kafka import LocalKafka, free_port  # noqa: E402

NAMES = ("page_view", "search", "signup", "purchase", "share")


def value(i: int, now: int) -> bytes:
    return (b'{"uid": "user-%d", "event": "%s", "ts": %d, "event_id": "b%d", '
            b'"properties": {"browser": "%s", "amount": %d, "path": "/p/%d"}}'
            % (i % 100_000, NAMES[i % 5].encode(), now - i, i, (b"firefox", b"chrome", b"safari")[i % 3],
               i % 500, i % 97))


def produce(settings: Settings, n: int) -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 50, "batch.num.messages": 10_000,
                                                     "queue.buffering.max.messages": 2_000_000}))
    topic, now = settings.topic("events"), int(time.time() * 1000)
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value(i, now), b"user-%d" % (i % 100_000))
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0


def load_worker(settings: Settings, n: int) -> float:
    proc = subprocess.Popen([sys.executable, "-m", "cardflow", "worker", "warehouse"],
                            env={**os.environ, **settings.to_env()}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    name = 'cardflow_warehouse_rows_total{table="events"}'
    try:
        while counter(settings.worker_web_port, name) == 0:
            assert proc.poll() is None, "the warehouse worker died"
            time.sleep(0.02)
        started, first = time.perf_counter(), counter(settings.worker_web_port, name)
        while counter(settings.worker_web_port, name) < n:
            assert proc.poll() is None, "the warehouse worker died"
            time.sleep(0.05)
        return (n - first) / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait(60)


def load_baseline(path: Path, n: int, batch: int) -> float:
    """In a child process (chDB: one engine per process): the same rows, inserted in bulk."""
    out = subprocess.run([sys.executable, __file__, "--baseline-insert", str(path), str(n), str(batch)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def baseline_insert(path: Path, n: int, batch: int) -> None:
    from cardflow.agents.warehouse import _dt  # the loader's own time format
    from cardflow.connectors.warehouse import ChdbWarehouse, migrate

    wh = ChdbWarehouse(path, "baseline")
    migrate(wh)
    decoder, now = load_settings(env={}).decoder(), int(time.time() * 1000)
    rows = []
    for i in range(n):
        e = decoder.record(value(i, now), now)
        rows.append({"event_id": e.event_id, "uid": e.uid, "event": e.event, "ts": _dt(e.ts),
                     "properties": json.dumps(e.properties), "set_properties": "{}", "source": e.source,
                     "kafka_topic": "events", "kafka_partition": i % 8, "kafka_offset": i,
                     "ingested_at": _dt(now)})
    wh.insert("events", rows[:1000], "warm-up")  # the engine's first insert pays its start-up
    wh.command("TRUNCATE TABLE baseline.events")
    started = time.perf_counter()
    for at in range(0, n, batch):
        wh.insert("events", rows[at:at + batch], f"baseline/{at}")
    print(n / (time.perf_counter() - started))


QUERIES: dict[str, dict[str, Any]] = {
    "trend count by day": {"kind": "trend", "event": "purchase", "period": "day", "from": "2026-09-01",
                           "to": "2026-11-29"},
    "trend unique users by week": {"kind": "trend", "aggregation": "unique_users", "period": "week",
                                   "from": "2026-09-01", "to": "2026-11-29"},
    "trend p90 by browser": {"kind": "trend", "aggregation": "p90", "property": "amount", "period": "day",
                             "from": "2026-09-01", "to": "2026-11-29", "breakdown": "browser"},
    "trend with a user filter": {"kind": "trend", "event": "purchase", "period": "day", "from": "2026-09-01",
                                 "to": "2026-11-29",
                                 "filters": [{"property": "country", "op": "eq", "value": "DE", "on": "user"},
                                             {"property": "amount", "op": "gte", "value": 100}]},
    "retention 30 days": {"kind": "retention", "period": "day", "periods": 30, "after": 29,
                          "as_of": "2026-11-29"},
    "funnel 3 steps": {"kind": "funnel", "steps": ["signup", "search", "purchase"], "from": "2026-09-01",
                       "to": "2026-11-29"},
}


def queries(path: Path, events: int, users: int, rounds: int) -> dict[str, Any]:
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
    out: dict[str, Any] = {"events": events, "users": users, "generate_s": round(loaded, 1)}
    for name, q in QUERIES.items():
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            answers.query(q)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out[name] = {"p50_ms": round(statistics.median(times), 1),
                     "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1)}
        print(json.dumps({name: out[name]}), file=sys.stderr)
    return out


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--baseline-insert":
        baseline_insert(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--query-events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--query-rounds", type=int, default=7)
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_load:
            port = free_port()
            base = load_settings(env={}, data_dir=Path(tmp), kafka_port=port,
                                 kafka_controller_port=free_port(), broker=f"127.0.0.1:{port}", partitions=8,
                                 worker_web_port=free_port(), log_level="warning", kafka_heap="1g")
            broker = LocalKafka(base)
            broker.start()
            try:
                for n in range(args.rounds):
                    here = base.replace(topic_prefix=f"r{n}-", warehouse_url=f"chdb://{tmp}/wh-{n}")
                    ensure_topics(here)
                    produce(here, args.events)
                    row: dict[str, Any] = {"round": n}
                    row["baseline_rows_s"] = round(load_baseline(Path(tmp) / f"base-{n}", args.events,
                                                                 here.batch_size))
                    row["topology_rows_s"] = round(load_worker(here, args.events))
                    row["ratio"] = round(row["topology_rows_s"] / row["baseline_rows_s"], 3)
                    rounds.append(row)
                    print(json.dumps(row), file=sys.stderr)
            finally:
                broker.stop()
        timing = queries(Path(tmp) / "queries", args.query_events, args.users, args.query_rounds)
    summary: dict[str, Any] = {"machine": machine(), "load_events": args.events, "rounds": rounds,
                               "queries": timing}
    if rounds:
        for key in ("topology_rows_s", "baseline_rows_s", "ratio"):
            summary[f"median_{key}"] = statistics.median(r[key] for r in rounds)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
