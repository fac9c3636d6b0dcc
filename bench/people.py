"""People benchmark: events/s through one people worker vs a plain confluent-kafka fold (the ceiling).

Run: .venv/bin/python bench/people.py [--events N] [--users N] [--rounds N]
Starts its own broker on loopback. Both sides decode every event with
cardflow's decoder and fold it with the standard profile script; the
baseline keeps profiles in a dict (no RocksDB, no changelog, no dedup, no
profile-changes), which is the ceiling a Python consumer reaches here.

This machine's speed drifts by up to 2x over minutes (a shared VM), so one
baseline and one worker run minutes apart can disagree by ±15 %. Each round
therefore produces the same events to fresh topics and runs the baseline
right before and right after the worker (the ceiling is their mean: one
baseline alone ran anywhere from 51k to 76k events/s between rounds); the
report gives every round and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(Path(__file__).parent))
from ingest import machine  # noqa: E402

from cardflow.config import Settings, load_settings  # noqa: E402
from cardflow.connectors.kafka_admin import ensure_topics  # noqa: E402
from cardflow.local_kafka import LocalKafka, free_port  # noqa: E402
from cardflow.standard import standard  # noqa: E402

NAMES = ["page_view"] * 60 + ["feature_used"] * 25 + ["search"] * 10 + ["purchase"] * 3 + ["signup"] * 2


def produce(settings: Settings, n: int, users: int) -> int:
    """Produce ``n`` events; returns how many distinct users they came from."""
    rng = random.Random(1)
    uids: set[str] = set()
    # Zipf (s = 1) over the users: user k is picked with weight 1 / (k + 1).
    cum, total = [], 0.0
    for k in range(users):
        total += 1.0 / (k + 1)
        cum.append(total)
    picks = rng.choices(range(users), cum_weights=cum, k=n)
    producer = Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random",
                         "linger.ms": 50, "queue.buffering.max.messages": 2_000_000,
                         "compression.type": "lz4", "batch.num.messages": 10_000})
    topic = settings.topic("events")
    now = int(time.time() * 1000)
    for i in range(n):
        uid = f"user-{picks[i]}"
        uids.add(uid)
        event = {"uid": uid, "event": rng.choice(NAMES), "ts": now - rng.randrange(30 * 86_400_000),
                 "properties": {"path": "/p", "n": i}}
        if rng.random() < 0.05:
            event["$set"] = {"plan": rng.choice(["free", "team", "pro"]), "country": rng.choice("ABCDEFG")}
        while True:
            try:
                producer.produce(topic, orjson.dumps(event), uid.encode())
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0
    return len(uids)


def baseline(settings: Settings, n: int, group: str = "bench-baseline") -> float:
    decoder = settings.decoder()
    consumer = Consumer({**settings.kafka_client_config(), "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([settings.topic("events")])
    profiles: dict[str, dict] = {}
    seen = 0
    started = None
    while seen < n:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error():
                continue
            if started is None:
                started = time.perf_counter()
            event = decoder.record(msg.value())
            profiles[event.uid] = standard(profiles.get(event.uid, {}), event)
            seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return n / elapsed


def counter(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def worker(settings: Settings, n: int, workers: int = 1) -> dict:
    """Run ``workers`` people worker processes (one group) until they folded ``n`` events."""
    each = [settings] + [settings.replace(worker_web_port=free_port(), data_dir=settings.data_dir / f"w{i}")
                         for i in range(1, workers)]  # their own RocksDB directories and web ports
    procs = [subprocess.Popen([sys.executable, "-m", "cardflow", "worker", "people"],
                              env={**os.environ, **here.to_env()},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for here in each]

    def total(name: str) -> float:
        return sum(counter(here.worker_web_port, name) for here in each)

    try:
        # Timed from when every worker folds (a group's start-up rebalance left out) until every
        # event is folded (records read again after a rebalance count as consumed, not folded).
        while not all(counter(here.worker_web_port, "cardflow_people_folded_total") for here in each):
            time.sleep(0.05)
        started = time.perf_counter()
        first = total("cardflow_people_folded_total")
        while (folded := total("cardflow_people_folded_total")) < n:
            time.sleep(0.2)
            assert all(proc.poll() is None for proc in procs), "a worker died"
        elapsed = time.perf_counter() - started
        rss_kib = [peak_rss_kib(proc.pid) for proc in procs]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
    # This round's app only (the worker's app id has the round's prefix).
    disk = sum(f.stat().st_size for here in each
               for f in (here.data_dir / "workers" / settings.topic("people")).rglob("*") if f.is_file())
    return {"eps": (n - first) / elapsed, "rss_mib": max(rss_kib) / 1024, "disk_bytes": disk,
            "folded": folded}


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="baseline + worker pairs, back to back")
    parser.add_argument("--batch-size", type=int, default=None, help="CARDFLOW_BATCH_SIZE")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes in the group (the issue's measure is one)")
    parser.add_argument("--standby-replicas", type=int, default=None, help="CARDFLOW_STANDBY_REPLICAS")
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        settings = load_settings(
            env={}, data_dir=Path(tmp), kafka_port=port, kafka_controller_port=free_port(),
            broker=f"127.0.0.1:{port}", partitions=8, worker_web_port=free_port(),
            log_level="warning", kafka_heap="1g", cards=())  # the fold alone; bench/cards.py has cards
        if args.batch_size:
            settings = settings.replace(batch_size=args.batch_size)
        if args.standby_replicas is not None:
            settings = settings.replace(standby_replicas=args.standby_replicas)
        broker = LocalKafka(settings)
        broker.start()
        try:
            for n in range(args.rounds):
                # Fresh topics and consumer groups each round (the worker's app id has the prefix).
                here = settings.replace(topic_prefix=f"round{n}-")
                ensure_topics(here)
                t = time.perf_counter()
                users = produce(here, args.events, args.users)
                produce_s = time.perf_counter() - t
                before = baseline(here, args.events)
                result = worker(here, args.events, args.workers)
                after = baseline(here, args.events, group="bench-baseline-after")
                ceiling = (before + after) / 2
                rounds.append({
                    "baseline_eps": round(ceiling), "baseline_before_eps": round(before),
                    "baseline_after_eps": round(after), "worker_eps": round(result["eps"]),
                    "ratio": round(result["eps"] / ceiling, 3),
                    "worker_peak_rss_mib": round(result["rss_mib"]),
                    "disk_bytes_per_profile": round(result["disk_bytes"] / users),
                    "folded": result["folded"], "produce_seconds": round(produce_s, 1), "users": users,
                })
                print(json.dumps(rounds[-1]), file=sys.stderr)
        finally:
            broker.stop()
    print(json.dumps({
        "machine": machine(), "events": args.events, "users": rounds[0]["users"], "workers": args.workers,
        "standby_replicas": settings.standby_replicas,
        "batch_size": settings.batch_size, "rounds": rounds,
        **{f"median_{key}": statistics.median(r[key] for r in rounds) for key in (
            "baseline_eps", "worker_eps", "ratio", "worker_peak_rss_mib", "disk_bytes_per_profile")},
    }, indent=2))


if __name__ == "__main__":
    main()
