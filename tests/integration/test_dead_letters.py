"""Malformed records produced straight to `events` end in `events-dlq`, once each, with their reason."""

from __future__ import annotations

import json
import subprocess
import sys

from confluent_kafka import Producer

from cardflow.codec import AvroCodec
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.events import decode_event, encode_avro

from ..helpers import consume_all, profile_change, wait_until

TS = 1_795_000_000  # 2026-11-18, seconds


def _j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _corpus() -> list[tuple[bytes | None, str]]:
    good = decode_event(_j({"uid": "u", "event": "e", "ts": TS}))
    avro = encode_avro(good)
    return [
        (b"\xff\xfe\xfd", "not_json"),
        (b"{\"uid\": \"caf\xe9\"}", "not_json"),
        (b"{", "not_json"),
        (b"", "not_json"),
        (None, "not_json"),
        (b'{"uid":"u","event":"e","ts":1795000000,"properties":{"x":NaN}}', "not_json"),
        (b"[1,2,3]", "not_object"),
        (b"[]", "not_object"),
        (b'"hello"', "not_object"),
        (b"42", "not_object"),
        (b"null", "not_object"),
        (b"true", "not_object"),
        (_j({"uid": "u", "event": "e", "ts": TS, "properties": {"blob": "x" * 70_000}}), "too_large"),
        (b"\x00" * 100_000, "too_large"),
        (_j({"event": "e", "ts": TS}), "missing_uid"),
        (_j({"uid": None, "event": "e", "ts": TS}), "missing_uid"),
        (_j({"uid": "", "event": "e", "ts": TS}), "missing_uid"),
        (_j({"uid": "u", "ts": TS}), "missing_event"),
        (_j({"uid": "u", "event": "", "ts": TS}), "missing_event"),
        (_j({"uid": "u", "event": "e"}), "missing_ts"),
        (_j({"uid": "u", "event": "e", "ts": "yesterday"}), "bad_timestamp"),
        (_j({"uid": "u", "event": "e", "ts": 0}), "bad_timestamp"),
        (_j({"uid": "u", "event": "e", "ts": -1}), "bad_timestamp"),
        (_j({"uid": "u", "event": "e", "ts": "1970-01-01"}), "bad_timestamp"),
        (_j({"uid": "u", "event": "e", "ts": True}), "bad_timestamp"),
        (_j({"uid": "u", "event": "e", "ts": {"a": 1}}), "bad_timestamp"),
        (_j({"uid": "u", "event": "e", "ts": 1e300}), "future_timestamp"),
        (_j({"uid": "u", "event": "e", "ts": "2999-01-01T00:00:00Z"}), "future_timestamp"),
        (_j({"uid": [1], "event": "e", "ts": TS}), "bad_field"),
        (_j({"uid": {"id": 1}, "event": "e", "ts": TS}), "bad_field"),
        (_j({"uid": "u", "event": 123, "ts": TS}), "bad_field"),
        (_j({"uid": "u", "event": "e", "ts": TS, "properties": "x"}), "bad_field"),
        (_j({"uid": "u", "event": "e", "ts": TS, "$set": [1]}), "bad_field"),
        (avro[:-5], "bad_avro"),
        (avro[:2], "bad_avro"),
        (b"\xc3\x01" + b"\x00" * 8 + avro[10:], "bad_avro"),
        (AvroCodec.named("ProfileChange").encode(
            {"uid": "u", "version": 1, "changed": [], "max_ts": 0, "partition": 0}), "bad_avro"),
    ]


def test_malformed_corpus_is_dead_lettered_once_each(settings: Settings, service) -> None:
    ensure_topics(settings)
    corpus = _corpus()
    assert len(corpus) >= 30
    worker = service(["worker", "people"], settings)
    producer = Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random",
                         "message.max.bytes": 2_000_000})
    topic = settings.topic("events")
    producer.produce(topic, key=b"good-1", value=_j({"uid": "good-1", "event": "view", "ts": TS}))
    for i, (value, _) in enumerate(corpus):
        producer.produce(topic, key=f"bad-{i}".encode(), value=value)
    # Valid records after the poison ones, one of them without a key (re-routed to its uid).
    producer.produce(topic, key=b"good-2", value=_j({"uid": "good-2", "event": "view", "ts": TS}))
    producer.produce(topic, value=_j({"uid": "good-3", "event": "view", "ts": TS}))
    assert producer.flush(30) == 0

    letters = consume_all(settings, "events-dlq", len(corpus), timeout=90)
    codec = AvroCodec.named("DeadLetter")
    decoded = [codec.decode(m.value()) for m in letters]
    by_key: dict[str, list[dict]] = {}
    for letter in decoded:
        by_key.setdefault(letter["key"].decode(), []).append(letter)
    assert sorted(by_key) == sorted(f"bad-{i}" for i in range(len(corpus)))
    for i, (value, reason) in enumerate(corpus):
        [letter] = by_key[f"bad-{i}"]  # exactly once
        assert letter["reason"] == reason, (i, letter["message"])
        assert letter["value"] == value and letter["topic"] == topic and letter["message"]

    changes = consume_all(settings, "profile-changes", 3)
    assert sorted(profile_change(m)["uid"] for m in changes) == ["good-1", "good-2", "good-3"]
    assert worker.proc.poll() is None, worker.output()[-3000:]

    def cli(*args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run([sys.executable, "-m", "cardflow", "dlq", *args], capture_output=True,
                              text=True, env=env or settings.to_env(), timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    counts = dict(line.split("\t") for line in cli("count").splitlines())
    assert counts["total"] == str(len(corpus)) and counts["bad_avro"] == "4"
    shown = [json.loads(line) for line in cli("show", "--reason", "missing_ts").splitlines()]
    assert len(shown) == 1 and shown[0]["key"] == "bad-19" and '"uid": "u"' in shown[0]["value"]


def test_replay_after_fixing_the_field_mapping(settings: Settings, service) -> None:
    ensure_topics(settings)
    worker = service(["worker", "people"], settings)
    producer = Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random"})
    tweets = [{"tweet": {"user": {"id": f"t{i}"}, "created_at": "Wed Nov 18 10:00:00 +0000 2026",
                         "text": f"hello {i}"}} for i in range(5)]
    for tweet in tweets:
        producer.produce(settings.topic("events"), value=_j(tweet))
    assert producer.flush(30) == 0
    letters = consume_all(settings, "events-dlq", 5)
    assert len(letters) == 5
    worker.stop()

    fixed = settings.replace(sources=[{"name": "twitter", "when": "tweet", "uid": "tweet.user.id",
                                       "event": "=tweet", "ts": "tweet.created_at",
                                       "properties": "tweet"}])
    worker = service(["worker", "people"], fixed)
    env = fixed.to_env()
    out = subprocess.run([sys.executable, "-m", "cardflow", "dlq", "replay", "--reason", "missing_uid"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "re-submitted 5 dead letter(s)" in out.stdout, out.stderr
    again = subprocess.run([sys.executable, "-m", "cardflow", "dlq", "replay", "--reason", "missing_uid"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert "re-submitted 0 dead letter(s)" in again.stdout, "replay must not re-send what it sent"

    seen: dict[str, int] = {}

    def all_folded() -> bool:
        for m in consume_all(fixed, "profile-changes", 5, timeout=5):
            change = profile_change(m)
            seen[change["uid"]] = change["version"]
        assert worker.proc.poll() is None, worker.output()[-3000:]
        return sorted(seen) == [f"t{i}" for i in range(5)]

    wait_until(all_folded, timeout=90, what="replayed tweets to be folded")
    assert set(seen.values()) == {1}
