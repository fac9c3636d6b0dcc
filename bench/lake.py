"""Lake benchmark: archive and replay throughput, to a local directory and to S3 (moto's server),
each beside a baseline measured in the same round.

Run: .venv/bin/python bench/lake.py [--events N] [--rounds N]
Starts its own broker and moto server on loopback. Per round and backend:
- archive: the archive worker (``cardflow worker archive``) from the first record to the last
  archived, vs the baseline: a plain confluent-kafka consumer writing the same objects (same
  encoder, same lake backend, one object per partition per batch of the same size);
- replay: ``cardflow replay`` from that lake into a fresh topic, vs the baseline: a plain loop
  reading the same objects and producing their records with confluent-kafka.
Both sides share the encoder and the lake client, so the ratio measures what the worker and the
replay add around them (Faust's group, batching, the idempotency checks, the checkpoint).
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
from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(Path(__file__).parent))
from ingest import machine  # noqa: E402
from people import counter  # noqa: E402

from cardflow.config import Settings, load_settings  # noqa: E402
from cardflow.connectors.kafka_admin import ensure_topics  # noqa: E402
from cardflow.connectors.lake import DataLake, open_lake  # noqa: E402
from cardflow.connectors.lake_objects import Archived, decode, encode, object_key  # noqa: E402
from cardflow.kafka_clients import consumer_config, producer_config  # noqa: E402
from cardflow.local_kafka import LocalKafka, free_port  # noqa: E402

BATCH = 50_000


def produce(settings: Settings, n: int) -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 50, "batch.num.messages": 10_000,
                                                     "queue.buffering.max.messages": 2_000_000}))
    topic = settings.topic("events")
    now = int(time.time() * 1000)
    for i in range(n):
        value = (b'{"uid": "user-%d", "event": "page_view", "ts": %d, "properties": {"n": %d}}'
                 % (i % 50_000, now - i, i))
        while True:
            try:
                producer.produce(topic, value, b"user-%d" % (i % 50_000))
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0


def lake_of(settings: Settings) -> DataLake:
    return open_lake(settings.effective_lake_url, settings.lake_endpoint_url, settings.lake_region,
                     settings.lake_multipart_bytes)


def archive_worker(settings: Settings, n: int) -> float:
    proc = subprocess.Popen([sys.executable, "-m", "cardflow", "worker", "archive"],
                            env={**os.environ, **settings.to_env()}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    name = 'cardflow_archive_records_total{topic="' + settings.topic("events") + '"}'
    try:
        while counter(settings.worker_web_port, name) == 0:
            assert proc.poll() is None, "the archive worker died"
            time.sleep(0.02)
        started = time.perf_counter()
        first = counter(settings.worker_web_port, name)
        while counter(settings.worker_web_port, name) < n:
            assert proc.poll() is None, "the archive worker died"
            time.sleep(0.1)
        return (n - first) / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait(60)


def archive_baseline(settings: Settings, n: int) -> float:
    """A plain consumer: the same objects (encoder, backend, batch size), then commit."""
    lake = lake_of(settings)
    consumer = Consumer(consumer_config(settings, f"{settings.topic_prefix}baseline"))
    consumer.subscribe([settings.topic("events")])
    pending: dict[int, list[Archived]] = defaultdict(list)
    seen, started = 0, None
    while seen < n:
        for msg in consumer.consume(10_000, timeout=1.0):
            if msg.error():
                continue
            started = started or time.perf_counter()
            pending[msg.partition()].append(Archived(msg.topic(), msg.partition(), msg.offset(),
                                                     msg.timestamp()[1], 0, msg.key(), msg.value(),
                                                     list(msg.headers() or [])))
            seen += 1
        if sum(map(len, pending.values())) >= BATCH or seen >= n:
            for partition, records in pending.items():
                key = "baseline/" + object_key(records[0].topic, partition, records[0].offset,
                                               records[0].timestamp, "avro")
                lake.put(key, encode(key, records, "avro"))
            pending.clear()
            consumer.commit(asynchronous=False)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return n / elapsed


def replay_cli(settings: Settings, target: str, n: int) -> float:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cardflow", "replay", "--from",
                          settings.effective_lake_url, "--to-topic", target],
                         env={**os.environ, **settings.to_env()}, capture_output=True, text=True, check=True)
    assert f"replayed {n} record(s)" in out.stdout, out.stdout + out.stderr
    return n / (time.perf_counter() - started)


def replay_baseline(settings: Settings, target: str, n: int) -> float:
    lake = lake_of(settings)
    producer = Producer(producer_config(settings, **{"linger.ms": 50,
                                                     "queue.buffering.max.messages": 200_000}))
    started, sent = time.perf_counter(), 0
    for obj in lake.list(f"topic={settings.topic('events')}/"):
        for r in decode(obj.key, lake.get(obj.key)):
            while True:
                try:
                    producer.produce(target, r.value, r.key, partition=r.partition, timestamp=r.timestamp,
                                     headers=r.headers)
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
    assert producer.flush(120) == 0 and sent == n
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}").create_bucket(Bucket="bench")
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = load_settings(env={}, data_dir=Path(tmp), kafka_port=port,
                             kafka_controller_port=free_port(), broker=f"127.0.0.1:{port}", partitions=8,
                             worker_web_port=free_port(),
                             log_level="warning", kafka_heap="1g", archive_batch_events=BATCH,
                             archive_batch_seconds=5)
        broker = LocalKafka(base)
        broker.start()
        try:
            for n in range(args.rounds):
                for backend in ("local", "s3"):
                    here = base.replace(topic_prefix=f"r{n}{backend}-")
                    if backend == "local":
                        here = here.replace(lake_url=(Path(tmp) / f"lake-{n}").as_uri())
                    else:
                        here = here.replace(lake_url=f"s3://bench/r{n}",
                                            lake_endpoint_url=f"http://127.0.0.1:{moto_port}")
                    ensure_topics(here)
                    produce(here, args.events)
                    row: dict[str, Any] = {"round": n, "backend": backend}
                    row["archive_baseline_eps"] = round(archive_baseline(here, args.events))
                    row["archive_eps"] = round(archive_worker(here, args.events))
                    target = here.replace(topic_prefix=f"r{n}{backend}-replay-")
                    ensure_topics(target)
                    row["replay_eps"] = round(replay_cli(here, target.topic("events"), args.events))
                    other = here.replace(topic_prefix=f"r{n}{backend}-replay2-")
                    ensure_topics(other)
                    baseline = replay_baseline(here, other.topic("events"), args.events)
                    row["replay_baseline_eps"] = round(baseline)
                    row["archive_ratio"] = round(row["archive_eps"] / row["archive_baseline_eps"], 3)
                    row["replay_ratio"] = round(row["replay_eps"] / row["replay_baseline_eps"], 3)
                    rounds.append(row)
                    print(json.dumps(row), file=sys.stderr)
        finally:
            broker.stop()
            moto.stop()
    summary = {"machine": machine(), "events": args.events, "rounds": rounds}
    for backend in ("local", "s3"):
        rows = [r for r in rounds if r["backend"] == backend]
        for key in ("archive_eps", "archive_baseline_eps", "archive_ratio", "replay_eps",
                    "replay_baseline_eps", "replay_ratio"):
            summary[f"median_{backend}_{key}"] = statistics.median(r[key] for r in rows)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
