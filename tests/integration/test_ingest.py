"""Ingest on the real broker: SDK, push API and raw producers agree; limits, auth, outages."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cardflow.config import Settings, load_settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.events import decode_record
from cardflow.local_kafka import LocalKafka, free_port
from cardflow.sdk import Client, DeliveryError

from ..helpers import consume_all, http, start_api

INGEST, READ = "ingest-token", "read-token"
AUTH = {"Authorization": f"Bearer {INGEST}", "Content-Type": "application/json"}


@pytest.fixture
def secured(settings: Settings) -> Settings:
    ensure_topics(settings)
    return settings.replace(api_tokens=f"{INGEST}:ingest;{READ}:read")


def _post(base: str, body: object, headers: dict[str, str] = AUTH, path: str = "/v1/events"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http("POST", base + path, data, headers)


def test_three_paths_same_event(secured: Settings, service) -> None:
    base = start_api(service, secured)
    event = {"uid": "u-1", "event": "signup", "ts": 1_795_000_000, "properties": {"ref": "ad"}}
    with Client(settings=secured) as client:
        client.track("u-1", "signup", {"ref": "ad"}, ts=1_795_000_000)
    assert _post(base, event)[0] == 202
    raw = Producer({**secured.kafka_client_config(), "partitioner": "murmur2_random"})
    raw.produce(secured.topic("events"), key=b"u-1", value=json.dumps(event).encode())
    assert raw.flush(30) == 0
    messages = consume_all(secured, "events", 3)
    envelopes = [decode_record(m.value()) for m in messages]
    assert len(messages) == 3 and envelopes[0] == envelopes[1] == envelopes[2], envelopes
    vias = sorted(dict(m.headers() or []).get("cardflow-via", b"") for m in messages)
    assert vias == [b"", b"http", b"python-sdk"]
    assert len({m.partition() for m in messages}) == 1


def test_mixed_batch_reports_invalid_by_index(secured: Settings, service) -> None:
    base = start_api(service, secured)
    batch = [
        {"uid": "a", "event": "view", "ts": "2026-11-20T10:00:00Z"},
        {"event": "view", "ts": "2026-11-20T10:00:00Z"},
        {"uid": "b", "event": "view", "ts": "3000-01-01T00:00:00Z"},
        [1, 2],
        {"uid": "c", "event": "view"},
        {"uid": "d", "ts": 1_795_000_000},
        {"uid": "e", "event": "view", "ts": "soon"},
    ]
    status, _, body = _post(base, batch)
    assert status == 202
    assert body["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "missing_uid"), (2, "future_timestamp"), (3, "not_object"), (5, "missing_event"),
        (6, "bad_timestamp")]
    messages = consume_all(secured, "events", 2)
    assert sorted(decode_record(m.value()).uid for m in messages) == ["a", "c"]
    assert sorted(body["event_ids"]) == sorted(decode_record(m.value()).event_id for m in messages)

    status, _, body = _post(base, [{"nope": 1}])
    assert status == 400 and body["error"] == "invalid_events" and body["rejected"][0]["index"] == 0


def test_ndjson_gzip_users_and_limits(secured: Settings, service) -> None:
    limited = secured.replace(max_batch_events=5, max_body_bytes=4096,
                                         max_event_bytes=512)
    base = start_api(service, limited)
    lines = "\n".join(json.dumps({"uid": f"n{i}", "event": "view", "ts": 1_795_000_000 + i})
                      for i in range(3)) + "\nnot json\n"
    headers = {**AUTH, "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    status, _, body = _post(base, gzip.compress(lines.encode()), headers)
    assert status == 202 and body["accepted"] == 3
    assert body["rejected"] == [{"index": 3, "reason": "not_json", "message": body["rejected"][0]["message"]}]

    status, _, body = _post(base, {"uid": "n1", "$set": {"plan": "pro"}}, path="/v1/users")
    assert status == 202
    users = [decode_record(m.value()) for m in consume_all(limited, "events", 4)]
    assert [u.set for u in users if u.event == "$set"] == [{"plan": "pro"}]

    too_many = [{"uid": "x", "event": "v", "ts": 1_795_000_000}] * 6
    assert _post(base, too_many)[0:3:2][0] == 413
    assert _post(base, b"{" + b" " * 5000 + b"}")[2]["error"] == "body_too_large"
    bomb = gzip.compress(b"[" + b" " * 100_000 + b"]")
    assert _post(base, bomb, {**AUTH, "Content-Encoding": "gzip"})[0] == 413
    big = {"uid": "x", "event": "v", "ts": 1_795_000_000, "properties": {"s": "y" * 600}}
    status, _, body = _post(base, [big, {"uid": "x", "event": "v", "ts": 1_795_000_000}])
    assert status == 202 and body["rejected"][0]["reason"] == "too_large"
    status, _, body = _post(base, b"<xml/>", {**AUTH, "Content-Type": "text/xml"})
    assert status == 415 and body["error"] == "unsupported_media_type"
    status, _, body = _post(base, b"{not json")
    assert status == 400 and body["error"] == "not_json"
    assert _post(base, b"x", {**AUTH, "Content-Encoding": "br"})[0] == 415
    assert _post(base, b"x", {**AUTH, "Content-Encoding": "gzip"})[2]["error"] == "bad_gzip"


def test_auth(secured: Settings, service) -> None:
    base = start_api(service, secured)
    event = {"uid": "a", "event": "view", "ts": 1_795_000_000}
    status, headers, body = _post(base, event, {"Content-Type": "application/json"})
    assert status == 401 and body["error"] == "unauthorized" and "Bearer" in headers["WWW-Authenticate"]
    assert _post(base, event, {"Authorization": "Bearer wrong"})[0] == 401
    assert _post(base, event, {"Authorization": f"Basic {INGEST}"})[0] == 401
    status, _, body = _post(base, event, {"Authorization": f"Bearer {READ}"})
    assert status == 403 and "ingest" in body["message"]
    assert _post(base, event)[0] == 202
    assert _post(base, event, {"Authorization": f"Bearer {READ}"}, path="/v1/users")[0] == 403


def test_openapi_document(secured: Settings, service) -> None:
    base = start_api(service, secured)
    status, _, doc = http("GET", f"{base}/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"202", "401", "413", "429", "503"} <= set(doc["paths"]["/v1/events"]["post"]["responses"])
    assert http("GET", f"{base}/no-such-page")[2]["error"] == "not_found"


def _metric(base: str, name: str) -> float:
    text = http("GET", f"{base}/metrics")[2]
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_broker_down_is_503_and_nothing_accepted_is_lost(tmp_path: Path, service) -> None:
    port = free_port()
    settings = load_settings(
        env={}, data_dir=tmp_path / "data", kafka_port=port, kafka_controller_port=free_port(),
        broker=f"127.0.0.1:{port}", api_port=free_port(), partitions=2, ingest_timeout_ms=3000,
    )
    broker = LocalKafka(settings)
    broker.start()
    try:
        ensure_topics(settings)
        base = start_api(service, settings)
        headers = {"Content-Type": "application/json"}
        accepted_ids: list[str] = []

        def send(i: int) -> tuple[int, dict]:
            batch = [{"uid": f"u{i}-{j}", "event": "view", "ts": 1_795_000_000 + j} for j in range(10)]
            status, _, body = _post(base, batch, headers)
            if status == 202:
                accepted_ids.extend(body["event_ids"])
            return status, body

        assert send(0)[0] == 202
        broker.stop()
        status, body = send(1)
        assert status == 503 and body["error"] == "broker_unavailable" and body["accepted"] == 0
        assert _metric(base, "cardflow_ingest_accepted_total") == 10
        assert _metric(base, "cardflow_ingest_unavailable_total") == 10
        broker.start()
        assert send(2)[0] == 202
        assert _metric(base, "cardflow_ingest_accepted_total") == 20
        stored = {decode_record(m.value()).event_id for m in consume_all(settings, "events", 20)}
        assert set(accepted_ids) <= stored and len(accepted_ids) == 20
    finally:
        broker.stop()


def test_sdk_surfaces_delivery_failures(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    settings = load_settings(env={}, broker=f"127.0.0.1:{port}")
    failures = []
    client = Client(settings=settings, on_error=lambda e, err: failures.append((e["uid"], err.str())),
                    producer_overrides={"message.timeout.ms": 1500})
    client.track("u", "view", ts=1_795_000_000)
    client.flush(10)
    assert failures and failures[0][0] == "u"
    silent = Client(settings=settings, producer_overrides={"message.timeout.ms": 1500})
    silent.track("u", "view", ts=1_795_000_000)
    with pytest.raises(DeliveryError, match="1 event\\(s\\) were not delivered"):
        silent.flush(10)
    with pytest.raises(ValueError, match="uid must be a non-empty string"):
        silent.track("", "view")


def test_full_producer_queue_is_429_with_retry_after(secured: Settings, service) -> None:
    base = start_api(service, secured.replace(ingest_queue_max=5))
    batch = [{"uid": f"q{i}", "event": "view", "ts": 1_795_000_000 + i} for i in range(50)]
    status, headers, body = _post(base, batch)
    assert status == 429 and headers["Retry-After"] == "1" and body["error"] == "backpressure"
    assert 0 < body["accepted"] <= 5
    stored = consume_all(secured, "events", body["accepted"])
    assert len(stored) == body["accepted"], "what was reported accepted is in Kafka, and only that"
