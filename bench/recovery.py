"""recovery: rebuilding profiles from the changelog after the RocksDB directory is lost, and a
second worker taking over from one killed with SIGKILL.

- rebuild: one people worker folds one event for each of ``profiles`` users and stops; its
  RocksDB directory is deleted; it starts again. Timed from the start to ``/readyz`` (joined, not
  recovering), and to the first new events folded (streams wait for recovery). Baseline in the
  same round: a plain confluent-kafka consumer reading the same changelog end to end.
- takeover: two workers (standby replicas 1, static membership) share the partitions; one is
  killed with SIGKILL; then one event per user of a sample is produced. Timed from the kill to the
  last of them visible in ``profile-changes`` (every partition folding again), beside the
  session timeout that bounds how soon the broker can notice a silent member.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.harness import Bench, Progress, Result, Worker, alternate, produce, wait_ready
from cardflow.config import Settings
from cardflow.local_kafka import free_port


def one_event_each(users: range, ts: int, name: str = "signup") -> list[tuple[bytes, bytes]]:
    return [
        (
            f"user-{u}".encode(),
            orjson.dumps({"uid": f"user-{u}", "event": name, "ts": ts + u % 1000, "$set": {"plan": "free"}}),
        )
        for u in users
    ]


def changelog_topics(settings: Settings) -> list[str]:
    topics = AdminClient(settings.kafka_client_config()).list_topics(timeout=30).topics
    return [t for t in topics if t.startswith(settings.topic_prefix) and t.endswith("-changelog")]


def read_all(settings: Settings, topics: list[str]) -> dict[str, float]:
    """A plain consumer reading every record of ``topics`` (the changelog), from the start."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"read-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    ends: dict[tuple[str, int], int] = {}
    for topic in topics:
        for p in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[(topic, p)] = high
    started, records = time.perf_counter(), 0
    consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
    left = dict(ends)
    while left:
        for msg in consumer.consume(10_000, timeout=1.0):
            if msg.error():
                continue
            records += 1
            key = (msg.topic(), msg.partition())
            if key in left and (msg.offset() or 0) + 1 >= left[key]:
                del left[key]
    consumer.close()
    return {"seconds": time.perf_counter() - started, "records": records}


def rebuild(bench: Bench, profiles: int, r: int) -> tuple[Settings, dict[str, float]]:
    here = bench.settings(f"rebuild{r}")
    produce(here, one_event_each(range(profiles), int(time.time() * 1000) - 86_400_000))
    worker = Worker(here, "worker", "people", log=here.data_dir / "people-1.log")
    try:
        worker.wait_counter("cardflow_people_folded_total", profiles)
        time.sleep(2)  # the last batch's changelog writes and commit
    finally:
        worker.stop()
    shutil.rmtree(here.data_dir / "workers")
    started = time.perf_counter()
    worker = Worker(here, "worker", "people", log=here.data_dir / "people-2.log")
    try:
        wait_ready(worker, timeout=900)
        ready = time.perf_counter() - started
        probes = one_event_each(range(64), int(time.time() * 1000), "page_view")
        produce(here, probes)
        worker.wait_counter("cardflow_people_folded_total", len(probes), timeout=900)
        folding = time.perf_counter() - started
    finally:
        worker.stop()
    return here, {"ready_s": ready, "folding_s": folding, "profiles_per_s": profiles / folding}


def takeover(bench: Bench, profiles: int, r: int) -> dict[str, float]:
    here = bench.settings(f"takeover{r}")
    produce(here, one_event_each(range(profiles), int(time.time() * 1000) - 86_400_000))
    workers = []
    for i in (0, 1):
        mine = here.replace(
            worker_name=f"w{i}",
            data_dir=here.data_dir / f"w{i}",
            worker_web_port=free_port(),
            worker_health_port=free_port(),
        )
        workers.append(Worker(mine, "worker", "people", log=here.data_dir / f"w{i}.log"))
    from bench.latency import Follower

    follower = Follower(here)
    try:
        deadline = time.monotonic() + 600
        while sum(w.counter("cardflow_people_folded_total") for w in workers) < profiles:
            for w in workers:
                w.alive()
            if time.monotonic() > deadline:
                raise TimeoutError("two workers did not fold the profiles in 600 s")
            time.sleep(0.2)
        for w in workers:
            wait_ready(w)
        time.sleep(3)  # standbys caught up
        follower.start()
        follower.ready.wait(30)
        time.sleep(1)
        workers[0].stop(kill=True)
        killed = time.monotonic()
        ts = int(time.time() * 1000)
        sample = range(0, profiles, max(1, profiles // 200))
        produce(here, one_event_each(sample, ts, "page_view"))
        want = {f"user-{u}": ts + u % 1000 for u in sample}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            seen = {
                uid: max((at for max_ts, at in follower.changes.get(uid, ()) if max_ts >= t), default=None)
                for uid, t in want.items()
            }
            if all(v is not None for v in seen.values()):
                break
            time.sleep(0.2)
        else:
            raise TimeoutError("the surviving worker did not fold every partition's events in 300 s")
    finally:
        follower.stop.set()
        for w in workers:
            w.stop()
    arrivals: list[Any] = [
        min(at for max_ts, at in follower.changes[uid] if max_ts >= t) for uid, t in want.items()
    ]
    return {"takeover_s": max(arrivals) - killed, "session_timeout_s": here.session_timeout_ms / 1000}


def run(bench: Bench) -> Result:
    progress = Progress("recovery")
    profiles = bench.size(50_000, 1_000_000)
    result = Result("recovery", {"profiles": profiles, "takeover_profiles": bench.size(20_000, 100_000)})
    # The baseline needs the round's changelog, so it always runs after the worker here.
    rows: dict[str, list[dict[str, float]]] = {
        "rebuild after a lost RocksDB directory": [],
        "plain consumer reading the changelog": [],
    }
    for r in range(bench.rounds):
        progress(f"round {r + 1}/{bench.rounds}: rebuild")
        here, row = rebuild(bench, profiles, r)
        rows["rebuild after a lost RocksDB directory"].append(row)
        progress(f"round {r + 1}/{bench.rounds}: reading the changelog")
        rows["plain consumer reading the changelog"].append(read_all(here, changelog_topics(here)))
    takeovers = alternate(
        bench.rounds,
        {"takeover after kill -9": lambda r: takeover(bench, result.params["takeover_profiles"], r)},
        progress,
    )
    progress.done()
    result.contenders = {**rows, **takeovers}
    worker_s = sorted(row["folding_s"] for row in rows["rebuild after a lost RocksDB directory"])
    read_s = sorted(row["seconds"] for row in rows["plain consumer reading the changelog"])
    result.ratios["changelog read / rebuild time"] = round(
        read_s[len(read_s) // 2] / worker_s[len(worker_s) // 2], 3
    )
    return result
