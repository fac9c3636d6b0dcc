"""archive and replay: the lake's throughput, to a local directory and to S3 (moto's server),
each beside a baseline measured in the same round.

- archive: ``cardflow worker archive`` from its readiness to the last record archived, vs a plain
  confluent-kafka consumer writing the same objects (same encoder, same lake client, one object
  per partition per batch of the same size), then committing;
- replay: ``cardflow replay`` from a lake into a fresh topic, vs a plain loop reading the same
  objects and producing their records with confluent-kafka.
Both sides share the encoder and the lake client, so the ratio measures what the worker and the
replay add around them (Faust's group, batching, the idempotency checks, the checkpoint).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict

from confluent_kafka import Consumer, Producer

from bench.harness import (
    Bench,
    Data,
    Progress,
    Result,
    Worker,
    alternate,
    medians,
    produce,
    produce_held,
    target,
    timed_counter,
)
from cardflow.config import Settings
from cardflow.connectors.lake import DataLake, open_lake
from cardflow.connectors.lake_objects import Archived, decode, encode, object_key
from cardflow.kafka_clients import consumer_config, producer_config

BATCH = 50_000
BACKENDS = ("local", "s3")


def lake_of(settings: Settings) -> DataLake:
    return open_lake(
        settings.effective_lake_url,
        settings.lake_endpoint_url,
        settings.lake_region,
        settings.lake_multipart_bytes,
    )


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
            pending[msg.partition() or 0].append(
                Archived(
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.timestamp()[1],
                    0,
                    msg.key(),
                    msg.value(),
                    list(msg.headers() or []),
                )
            )
            seen += 1
        if sum(map(len, pending.values())) >= BATCH or seen >= n:
            for partition, records in pending.items():
                key = "baseline/" + object_key(
                    records[0].topic, partition, records[0].offset, records[0].timestamp, "avro"
                )
                lake.put(key, encode(key, records, "avro"))
            pending.clear()
            consumer.commit(asynchronous=False)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return n / elapsed


def replay_cli(settings: Settings, to: str, n: int) -> float:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "cardflow", "replay", "--from", settings.effective_lake_url, "--to-topic", to],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"replayed {n} record(s)" in out.stdout, out.stdout + out.stderr
    return n / (time.perf_counter() - started)


def replay_baseline(settings: Settings, to: str, n: int) -> float:
    lake = lake_of(settings)
    producer = Producer(
        producer_config(settings, **{"linger.ms": 50, "queue.buffering.max.messages": 200_000})
    )
    started, sent = time.perf_counter(), 0
    for obj in lake.list(f"topic={settings.topic('events')}/"):
        for r in decode(obj.key, lake.get(obj.key)):
            while True:
                try:
                    producer.produce(
                        to, r.value, r.key, partition=r.partition, timestamp=r.timestamp, headers=r.headers
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
    assert producer.flush(120) == 0 and sent == n
    return n / (time.perf_counter() - started)


def archive_worker(settings: Settings, records: list[tuple[bytes, bytes]]) -> dict[str, float]:
    """The archive worker over ``records``, held in a transaction until it is up (produce_held)."""
    commit = produce_held(settings, records)
    worker = Worker(settings, "worker", "archive", log=settings.data_dir / f"archive-{time.time_ns()}.log")
    try:
        return timed_counter(
            worker,
            'cardflow_archive_records_total{topic="' + settings.topic("events") + '"}',
            len(records),
            release=commit,
        )
    finally:
        worker.stop()


def _lake_settings(bench: Bench, name: str, backend: str) -> Settings:
    # A one-second batch window: the last, partial batch waits for it (a stream that stops is
    # not what the rate is about), and in a backlog the batches fill long before it.
    here = bench.settings(name, archive_batch_events=BATCH, archive_batch_seconds=1)
    if backend == "local":
        return here.replace(lake_url=(here.data_dir / "lake").as_uri())
    return here.replace(lake_url=f"s3://bench/{here.topic_prefix.rstrip('-')}", lake_endpoint_url=bench.s3())


def _records(bench: Bench) -> tuple[int, list[tuple[bytes, bytes]]]:
    n = bench.size(100_000, 500_000)
    return n, Data(users=50_000, events=n, seed=4).records()


def run_archive(bench: Bench) -> Result:
    progress = Progress("archive")
    n, records = _records(bench)
    result = Result("archive", {"events": n, "archive_batch_events": BATCH, "backends": BACKENDS})
    for backend in BACKENDS:
        rounds: dict[int, Settings] = {}

        def prepare(r: int, backend: str = backend, rounds: dict[int, Settings] = rounds) -> None:
            rounds[r] = _lake_settings(bench, f"archive-{backend}{r}", backend)
            produce(rounds[r], records)

        def worker(r: int, backend: str = backend) -> dict[str, float]:
            return archive_worker(_lake_settings(bench, f"archive-{backend}{r}-cardflow", backend), records)

        def baseline(r: int, rounds: dict[int, Settings] = rounds) -> dict[str, float]:
            return {"events_per_s": archive_baseline(rounds[r], n)}

        rows = alternate(
            bench.rounds,
            {f"cardflow ({backend})": worker, f"plain consumer ({backend})": baseline},
            progress,
            before_round=prepare,
        )
        result.contenders.update(rows)
        ratio = (
            medians(rows[f"cardflow ({backend})"])["events_per_s"]
            / medians(rows[f"plain consumer ({backend})"])["events_per_s"]
        )
        result.ratios[f"cardflow / plain consumer ({backend})"] = round(ratio, 3)
        result.targets.append(
            target(
                f"archive events/s ({backend})",
                medians(rows[f"cardflow ({backend})"])["events_per_s"],
                ">=",
                100_000,
            )
        )
        result.targets.append(target(f"archive vs its baseline ({backend})", ratio, ">=", 0.8))
    progress.done()
    return result


def run_replay(bench: Bench) -> Result:
    progress = Progress("replay")
    n, records = _records(bench)
    result = Result("replay", {"events": n, "backends": BACKENDS})
    for backend in BACKENDS:
        here = _lake_settings(bench, f"replay-{backend}", backend)
        progress(f"{backend}: producing and archiving {n} events (the lake to replay)")
        archive_worker(here, records)

        def cli(r: int, here: Settings = here) -> dict[str, float]:
            return {"events_per_s": replay_cli(here, bench.settings("replayed").topic("events"), n)}

        def baseline(r: int, here: Settings = here) -> dict[str, float]:
            return {"events_per_s": replay_baseline(here, bench.settings("replayed").topic("events"), n)}

        rows = alternate(
            bench.rounds, {f"cardflow replay ({backend})": cli, f"plain loop ({backend})": baseline}, progress
        )
        result.contenders.update(rows)
        eps = medians(rows[f"cardflow replay ({backend})"])["events_per_s"]
        ratio = eps / medians(rows[f"plain loop ({backend})"])["events_per_s"]
        result.ratios[f"cardflow replay / plain loop ({backend})"] = round(ratio, 3)
        result.targets.append(target(f"replay events/s ({backend})", eps, ">=", 100_000))
        result.targets.append(target(f"replay vs its baseline ({backend})", ratio, ">=", 0.8))
    progress.done()
    return result
