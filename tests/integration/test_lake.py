"""The archive: every record of events and events-dlq in the lake exactly once, byte for byte,
on both backends (a local directory and moto's S3 server), through crashes and an S3 outage."""

from __future__ import annotations

import random
import signal
import threading
import time
from typing import Any

import pytest
from confluent_kafka import Producer

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.connectors.kafka_read import read_topic
from cardflow.kafka_clients import producer_config
from tests.helpers import wait_until
from tests.integration.lake_support import Backend, backend, walk  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


def archive_settings(b: Backend, **extra: Any) -> Settings:
    return b.settings.replace(archive_batch_events=extra.pop("events", 5_000), archive_batch_seconds=0.5,
                              **extra)


def odd_records(n: int, seed: int, large: bool = True
                ) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """Keys, values and headers a Kafka client may send: JSON, binary, empty, null, large."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 7
        key = f"u{rnd.randrange(500)}".encode() if kind != 3 else None
        value: bytes | None = {0: b'{"uid": "u1", "event": "e", "ts": 1}', 1: bytes(rnd.randbytes(40)),
                               2: b"", 3: b'{"keyless": true}', 4: None, 5: "é✓".encode() * 50,
                               6: rnd.randbytes(20_000 if large else 200)}[kind]
        headers = [("h", rnd.randbytes(4))] if i % 3 == 0 else []
        out.append((key, value, headers))
    return out


def produce_raw(settings: Settings, topic: str, records: list[Any], rate: float | None = None) -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    started = time.monotonic()
    for n, (key, value, headers) in enumerate(records):
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        if rate and n % 500 == 0:
            ahead = n / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.poll(0)
    assert producer.flush(60) == 0


def truth(settings: Settings, topic: str) -> dict[int, dict[int, Any]]:
    found: dict[int, dict[int, Any]] = {}
    for msg in read_topic(settings, topic, f"truth-{time.monotonic_ns()}"):
        found.setdefault(msg.partition(), {})[msg.offset()] = msg
    return found


def check_lake(b: Backend, topic: str, expected: dict[int, dict[int, Any]]) -> None:
    found, problems = walk(b.lake(), topic)
    assert problems == []
    for partition, messages in expected.items():
        assert sorted(found[partition]) == sorted(messages), f"{topic}[{partition}]: offsets differ"
        for offset, msg in messages.items():
            got = found[partition][offset]
            assert (got.key, got.value, got.timestamp) == (msg.key(), msg.value(), msg.timestamp()[1])
            assert got.headers == [(k, v) for k, v in (msg.headers() or [])]


def archived_all(b: Backend, topic: str, expected: dict[int, dict[int, Any]]) -> bool:
    found, _ = walk(b.lake(), topic)
    return all(len(found.get(p, {})) >= len(m) for p, m in expected.items())


def test_every_record_of_events_and_dlq_lands_once_byte_for_byte(backend: Backend, service) -> None:  # noqa: F811
    s = archive_settings(backend)
    ensure_topics(s)
    produce_raw(s, s.topic("events"), odd_records(3_000, 1))
    produce_raw(s, s.topic("events-dlq"), odd_records(300, 2))
    worker = service(["worker", "archive"], s)
    for topic in (s.topic("events"), s.topic("events-dlq")):
        expected = truth(s, topic)
        wait_until(lambda t=topic, e=expected: archived_all(backend, t, e), timeout=90,
                   what=f"{topic} archived")
        check_lake(backend, topic, expected)
    assert worker.proc.poll() is None


def test_kill_9_during_a_stream_leaves_no_gap_and_no_overlap(settings: Settings, tmp_path, monkeypatch,
                                                              service) -> None:
    from tests.integration.lake_support import make_backend

    b = make_backend("local", settings.replace(partitions=8), tmp_path, monkeypatch)
    s = archive_settings(b, events=20_000)
    ensure_topics(s)
    records = odd_records(300_000, 3, large=False)
    feeder = threading.Thread(target=produce_raw, args=(s, s.topic("events"), records, 12_000))
    feeder.start()
    worker = service(["worker", "archive"], s)
    kills = 0
    while feeder.is_alive() or kills < 3:
        time.sleep(random.Random(kills).uniform(3, 6))
        worker.stop(signal.SIGKILL)
        kills += 1
        worker = service(["worker", "archive"], s)
    feeder.join()
    expected = truth(s, s.topic("events"))
    assert sum(map(len, expected.values())) == len(records)
    wait_until(lambda: archived_all(b, s.topic("events"), expected), timeout=120, what="events archived")
    check_lake(b, s.topic("events"), expected)
    found = b.lake().list("topic=")
    assert kills >= 3 and not [o for o in found if "/.tmp-" in o.key]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_s3_unreachable_for_30_s_mid_stream(settings: Settings, tmp_path, monkeypatch, service) -> None:
    from tests.integration.lake_support import make_backend

    b = make_backend("s3", settings, tmp_path, monkeypatch)
    assert b.moto is not None
    s = archive_settings(b, events=10_000)
    ensure_topics(s)
    records = odd_records(150_000, 4, large=False)
    feeder = threading.Thread(target=produce_raw, args=(s, s.topic("events"), records, 4_000))
    feeder.start()
    worker = service(["worker", "archive"], s)
    time.sleep(6)
    before = _rss_mb(worker.proc.pid)
    b.moto.stop()
    rss = [before]
    for _ in range(30):
        time.sleep(1)
        rss.append(_rss_mb(worker.proc.pid))
    b.moto.start()
    feeder.join()
    expected = truth(s, s.topic("events"))
    wait_until(lambda: archived_all(b, s.topic("events"), expected), timeout=120, what="events archived")
    check_lake(b, s.topic("events"), expected)
    assert worker.proc.poll() is None, "the archive worker crashed"
    assert "retrying" in worker.output()
    # Bounded: one batch in flight and one fetched ahead, not the 30 s of events behind them.
    assert max(rss) < before + 150, f"RSS grew from {before:.0f} MB to {max(rss):.0f} MB"
    b.moto.stop()


def test_the_lake_is_readable_with_sql_from_chdb(backend: Backend) -> None:  # noqa: F811
    """The archive as standard tools read it: ClickHouse's Avro input over file() or s3()."""
    import chdb
    from prometheus_client import CollectorRegistry

    from cardflow.agents.archive import ArchiveMetrics, Archiver
    from cardflow.connectors.lake_objects import Archived

    archiver = Archiver(backend.lake(), "avro", "deflate", 1 << 20, ArchiveMetrics(CollectorRegistry()))
    batch = {("events", p): [Archived("events", p, o, 1_790_000_000_000 + o, 0, f"u{o % 7}".encode(),
                                      f'{{"uid": "u{o % 7}", "event": "e{o % 3}"}}'.encode())
                             for o in range(100 * p, 100 * p + 100)] for p in range(3)}
    archiver.write(batch)
    sql = ("SELECT JSONExtractString(value, 'event') AS event, count() AS n, uniqExact(key) AS users, "
           "min(offset), max(offset) FROM {source} GROUP BY event ORDER BY event")
    if backend.moto is None:
        source = f"file('{backend.lake().root}/topic=events/*/*/*.avro', 'Avro')"  # type: ignore[attr-defined]
    else:
        url = f"{backend.moto.url}/cardflow-lake/archive/topic=events/*/*/*.avro"
        source = f"s3('{url}', 'testing', 'testing', 'Avro')"
    rows = [line.split(",") for line in str(chdb.query(sql.format(source=source), "CSV")).split()]
    assert rows == [['"e0"', "100", "7", "0", "297"], ['"e1"', "100", "7", "1", "298"],
                    ['"e2"', "100", "7", "2", "299"]]


def test_large_objects_go_to_s3_in_parts_and_come_back_whole(settings: Settings, tmp_path,
                                                              monkeypatch) -> None:
    import boto3

    from cardflow.connectors.lake import open_lake
    from tests.integration.lake_support import BUCKET, make_backend

    b = make_backend("s3", settings.replace(lake_multipart_bytes=5 * 1024 * 1024), tmp_path, monkeypatch)
    assert b.moto is not None
    try:
        lake = open_lake(b.settings.lake_url, b.settings.lake_endpoint_url, "us-east-1", 5 * 1024 * 1024)
        data = random.Random(5).randbytes(12 * 1024 * 1024 + 7)
        lake.put("big/object.bin", data)
        assert lake.get("big/object.bin") == data
        etag = boto3.client("s3", endpoint_url=b.moto.url).head_object(
            Bucket=BUCKET, Key="archive/big/object.bin")["ETag"]
        assert etag.strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
        small = b"x" * 1000
        lake.put("small.bin", small)
        assert lake.head("small.bin", 10) == small[:10] and lake.head("missing.bin", 10) is None
    finally:
        b.moto.stop()


def test_lake_ls_lists_objects_with_their_offsets_and_counts(settings: Settings, tmp_path,
                                                             monkeypatch) -> None:
    import os
    import subprocess
    import sys

    from prometheus_client import CollectorRegistry

    from cardflow.agents.archive import ArchiveMetrics, Archiver
    from cardflow.connectors.lake_objects import Archived
    from tests.integration.lake_support import make_backend

    b = make_backend("local", settings, tmp_path, monkeypatch)
    topic = b.settings.topic("events")
    archiver = Archiver(b.lake(), "avro", "deflate", 1 << 20, ArchiveMetrics(CollectorRegistry()))
    t0 = 1_790_000_000_000
    archiver.write({(topic, 1): [Archived(topic, 1, o, t0 + o, 0, b"k", b"v") for o in range(7)],
                    (topic, 2): [Archived(topic, 2, o, t0, 0, b"k", b"v") for o in range(3, 5)]})
    env = {**os.environ, **b.settings.to_env()}
    out = subprocess.run([sys.executable, "-m", "cardflow", "lake", "ls"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split("\t")[1:4] for line in lines[:-1]] == [
        ["partition 1", "offsets 0..6", "7 records"], ["partition 2", "offsets 3..4", "2 records"]]
    assert lines[-1] == "total\t9 records"
