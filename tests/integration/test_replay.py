"""Replay: from the lake (both backends) or a topic into a fresh topic, folded by a fresh people
app beside the live one; interrupted and resumed; a foreign lake; bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.connectors.kafka_read import read_topic
from cardflow.connectors.lake_objects import Archived, encode, object_key
from cardflow.events import FieldMapping
from cardflow.local_kafka import free_port
from tests.helpers import wait_until
from tests.integration.lake_support import Backend, backend, make_backend, walk  # noqa: F401 - a fixture
from tests.integration.test_lake import archived_all, truth
from tests.integration.test_people import make_events, produce, wait_profiles
from tests.integration.test_people import truth as profile_truth

pytestmark = pytest.mark.integration


def cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run([sys.executable, "-m", "cardflow", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def changelog_bytes(settings: Settings) -> dict[bytes, bytes]:
    """The latest stored value of every profile, as bytes, from the profiles changelog."""
    latest: dict[bytes, bytes] = {}
    changelog = f"{settings.topic_prefix}people-profiles-changelog"
    for msg in read_topic(settings, changelog, f"raw-{time.time_ns()}"):
        latest[msg.key()] = msg.value()
    return latest


def rebuild_settings(live: Settings, name: str) -> Settings:
    return live.replace(topic_prefix=f"{live.topic_prefix}{name}-", worker_web_port=free_port(),
                        data_dir=live.data_dir.parent / f"data-{name}")


def live_pipeline(b: Backend, service, events: list[dict[str, Any]]) -> Settings:
    s = b.settings.replace(archive_batch_events=2_000, archive_batch_seconds=0.5)
    ensure_topics(s)
    service(["worker", "people"], s)
    service(["worker", "archive"], s.replace(worker_web_port=free_port()))
    produce(s, events)
    wait_profiles(s, profile_truth(events), timeout=180)
    expected = truth(s, s.topic("events"))
    wait_until(lambda: archived_all(b, s.topic("events"), expected), timeout=120, what="events archived")
    return s


def fold_rebuild(live: Settings, rebuild: Settings, service, events: list[dict[str, Any]]) -> None:
    service(["worker", "people"], rebuild)
    wait_profiles(rebuild, profile_truth(events), timeout=180)
    assert changelog_bytes(rebuild) == changelog_bytes(live)  # byte for byte, offsets and dedup ids too


def test_a_lake_replay_rebuilds_the_live_profiles_byte_for_byte(backend: Backend, service) -> None:  # noqa: F811
    events = make_events(4_000, 300, seed=21)
    live = live_pipeline(backend, service, events)
    rebuild = rebuild_settings(live, "rebuild")
    ensure_topics(rebuild)
    dry = cli(live, "replay", "--from", live.effective_lake_url, "--to-topic", rebuild.topic("events"),
              "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{len(events)} records" in dry.stdout
    done = cli(live, "replay", "--from", live.effective_lake_url, "--to-topic", rebuild.topic("events"))
    assert done.returncode == 0, done.stderr
    assert f"replayed {len(events)} record(s)" in done.stdout
    # The replayed topic equals the live one record for record (same partition and offset).
    original, replayed = truth(live, live.topic("events")), truth(rebuild, rebuild.topic("events"))
    def records(found: dict[int, dict[int, Any]]) -> dict[int, dict[int, tuple[Any, ...]]]:
        return {p: {o: (m.key(), m.value(), m.timestamp()) for o, m in ms.items()} for p, ms in found.items()}

    assert records(original) == records(replayed)
    assert all(dict(m.headers())["cardflow-replay"].startswith(live.effective_lake_url.encode())
               for ms in replayed.values() for m in ms.values())
    fold_rebuild(live, rebuild, service, events)
    again = cli(live, "replay", "--from", live.effective_lake_url, "--to-topic", rebuild.topic("events"))
    assert "replayed 0 record(s)" in again.stdout and f"{len(events)} sent before" in again.stdout


def test_a_topic_replay_rebuilds_the_live_profiles(settings: Settings, tmp_path: Path, monkeypatch,
                                                   service) -> None:
    b = make_backend("local", settings, tmp_path, monkeypatch)
    events = make_events(3_000, 200, seed=22)
    live = live_pipeline(b, service, events)
    rebuild = rebuild_settings(live, "fromtopic")
    ensure_topics(rebuild)
    source = f"kafka:{live.topic('events')}"
    done = cli(live, "replay", "--from", source, "--to-topic", rebuild.topic("events"))
    assert done.returncode == 0, done.stderr
    assert f"replayed {len(events)} record(s)" in done.stdout
    fold_rebuild(live, rebuild, service, events)
    later = str(int(time.time() * 1000) + 60_000)
    missing = rebuild_settings(live, "none").topic("events")
    since = cli(live, "replay", "--from", source, "--to-topic", missing, "--since", later)
    assert since.returncode != 0 and "does not exist" in since.stderr  # the target must exist first


def test_an_interrupted_replay_resumes_without_duplicates(settings: Settings, tmp_path: Path, monkeypatch,
                                                          service) -> None:
    b = make_backend("local", settings, tmp_path, monkeypatch)
    s = b.settings.replace(archive_batch_events=1_000, archive_batch_seconds=0.5)
    ensure_topics(s)
    events = make_events(6_000, 300, seed=23)
    produce(s, events)
    service(["worker", "archive"], s.replace(worker_web_port=free_port()))
    expected = truth(s, s.topic("events"))
    wait_until(lambda: archived_all(b, s.topic("events"), expected), timeout=120, what="events archived")
    target = rebuild_settings(s, "resume")
    ensure_topics(target)
    args = ["replay", "--from", s.effective_lake_url, "--to-topic", target.topic("events"), "--rate", "1500"]
    env = {**os.environ, **s.to_env()}
    proc = subprocess.Popen([sys.executable, "-m", "cardflow", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(60)
    assert proc.returncode == 130, err
    assert "interrupted" in out
    first = sum(map(len, truth(target, target.topic("events")).values()))
    assert 0 < first < len(events)
    resumed = cli(s, *args[:-2])
    assert resumed.returncode == 0, resumed.stderr
    assert f"{first} sent before" in resumed.stdout
    replayed = truth(target, target.topic("events"))
    values = [(p, m.value()) for p, ms in replayed.items() for m in ms.values()]
    assert len(values) == len(events) and len(set(values)) == len(events)  # every record once


def test_a_foreign_batches_lake_replays_the_folders_the_glob_matches(settings: Settings,
                                                                     tmp_path: Path) -> None:
    root = tmp_path / "old"
    tweets = {}
    for day in ("2015-12-18", "2015-12-19"):
        folder = root / f"{day}T00:00:00-{uuid.uuid4()}"
        folder.mkdir(parents=True)
        for n in range(1, 4):
            batch = [{"tweet": {"id_str": f"{day}-{n}-{i}", "created_at": f"{day}T0{n}:00:0{i}Z",
                                "user": {"id_str": f"user{i % 5}"}, "text": "hello"}} for i in range(7)]
            (folder / f"{n}.json").write_text(json.dumps(batch))
            tweets.setdefault(day, []).extend(batch)
    mapping = FieldMapping(name="twitter", when="tweet", uid="tweet.user.id_str", event="=tweet",
                           ts="tweet.created_at", properties="tweet", event_id="tweet.id_str")
    s = settings.replace(sources=(mapping,))
    target = rebuild_settings(s, "foreign")
    ensure_topics(target)
    done = cli(s, "replay", "--from", root.as_uri(), "--layout", "batches",
               "--glob", "2015-12-18T00:00:00-*", "--to-topic", target.topic("events"))
    assert done.returncode == 0, done.stderr
    got = [m for ms in truth(target, target.topic("events")).values() for m in ms.values()]
    assert sorted(json.loads(m.value())["tweet"]["id_str"] for m in got) == \
        sorted(t["tweet"]["id_str"] for t in tweets["2015-12-18"])
    assert {m.key() for m in got} == {f"user{i}".encode() for i in range(5)}


def test_bad_inputs_are_clear_errors(settings: Settings, tmp_path: Path, monkeypatch, service) -> None:
    target = rebuild_settings(settings, "bad")
    ensure_topics(target)
    to = ["--to-topic", target.topic("events")]
    unknown = cli(settings, "replay", "--from", "ftp://host/x", *to)
    assert unknown.returncode == 1 and "unknown scheme 'ftp'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    live = cli(settings, "replay", "--from", (tmp_path / "l").as_uri(), "--to-topic",
               settings.topic("events"))
    assert live.returncode == 1 and "refusing to replay into the live events topic" in live.stderr

    s3 = make_backend("s3", settings, tmp_path, monkeypatch)
    assert s3.moto is not None
    try:
        missing = cli(s3.settings, "replay", "--from", "s3://no-such-bucket/x", *to)
        assert missing.returncode == 1 and "bucket 'no-such-bucket' does not exist" in missing.stderr
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        nocreds = cli(s3.settings, "replay", "--from", s3.settings.lake_url, *to)
        assert nocreds.returncode == 1 and "no AWS credentials" in nocreds.stderr, nocreds.stderr
    finally:
        s3.moto.stop()

    local = make_backend("local", settings, tmp_path, monkeypatch)
    lake = local.lake()
    good = [Archived(settings.topic("events"), 0, o, 1_790_000_000_000 + o, 0, b"u", b'{"x": 1}')
            for o in range(10)]
    for first in (0, 10):
        records = [Archived(r.topic, 0, r.offset + first, r.timestamp, 0, r.key, r.value) for r in good]
        key = object_key(settings.topic("events"), 0, first, records[0].timestamp, "avro")
        data = encode(key, records, "avro")
        lake.put(key, data if first == 0 else data[: len(data) - 40])  # the second one truncated
    bad_key = object_key(settings.topic("events"), 0, 10, good[0].timestamp + 10, "avro")
    corrupt = cli(local.settings, "replay", "--from", local.settings.lake_url, *to)
    assert corrupt.returncode == 1 and bad_key in corrupt.stderr and "--skip-corrupt" in corrupt.stderr
    skipped = cli(local.settings, "replay", "--from", local.settings.lake_url, *to, "--skip-corrupt")
    assert skipped.returncode == 0, skipped.stderr
    assert f"skipped corrupt: {bad_key}" in skipped.stderr and "1 corrupt object(s)" in skipped.stdout
    # The good object went through on the first run, before the corrupt one stopped it; once.
    assert "10 sent before" in skipped.stdout
    assert sum(map(len, truth(target, target.topic("events")).values())) == 10
