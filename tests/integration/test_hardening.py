"""Inputs nobody on the project wrote, on the real broker: MB bodies from slow clients, poison
records, the server's own limits. Every event is stored, folded or refused with a reason; the
worker and the API stay up."""

from __future__ import annotations

import gzip
import json
import socket
import time
import urllib.request
from http.client import HTTPConnection
from typing import Any

from confluent_kafka import Producer

from cardflow.codec import AvroCodec
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.events import decode_record

from ..helpers import consume_all, http, read_table, start_api, wait_until

TS = 1_795_000_000_000
NDJSON = {"Content-Type": "application/x-ndjson"}


def _events(n: int, size: int, tag: str) -> list[bytes]:
    """``n`` valid events of about ``size`` bytes each, one user per event."""
    return [json.dumps({"uid": f"{tag}-{i}", "event": "view", "ts": TS + i,
                        "properties": {"pad": "x" * max(0, size - 90)}}).encode() for i in range(n)]


def _slow_post(port: int, path: str, body: bytes, headers: dict[str, str], chunk: int = 16_384,
               pause: float = 0.01) -> tuple[int, dict[str, Any]]:
    """POST ``body`` over a raw TCP connection, ``chunk`` bytes at a time with pauses."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}"
                     "Connection: close\r\n\r\n".encode())
        for at in range(0, len(body), chunk):
            sock.sendall(body[at:at + chunk])
            time.sleep(pause)
        reply = b""
        while data := sock.recv(65536):
            reply += data
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.split(b"\r\n\r\n", 1)[1])


def _chunked_post(port: int, body: bytes) -> tuple[int, dict[str, Any], str]:
    conn = HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/events", body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                 headers=NDJSON, encode_chunked=True)
    response = conn.getresponse()
    out = response.status, json.loads(response.read()), response.getheader("Content-Type", "")
    conn.close()
    return out


def test_bodies_of_any_size_and_pace_are_read_whole(settings: Settings, service) -> None:
    ensure_topics(settings)
    limited = settings.replace(max_body_bytes=5_300_000)
    base = start_api(service, limited)
    port = limited.api_port
    two_mb = _events(1000, 2000, "nd")
    status, _, body = http("POST", base + "/v1/events", b"\n".join(two_mb), NDJSON)
    assert status == 202 and body["accepted"] == 1000 and body["rejected"] == [], body
    array = b"[" + b",".join(_events(1000, 2000, "arr")) + b"]"
    status, _, body = http("POST", base + "/v1/events", array, {"Content-Type": "application/json"})
    assert status == 202 and body["accepted"] == 1000, body
    zipped = gzip.compress(b"\n".join(_events(1000, 2000, "gz")))
    status, _, body = http("POST", base + "/v1/events", zipped, {**NDJSON, "Content-Encoding": "gzip"})
    assert status == 202 and body["accepted"] == 1000, body
    five_mb = b"\n".join(_events(1000, 5200, "slow"))
    assert 5_000_000 < len(five_mb) < 5_300_000
    status, body = _slow_post(port, "/v1/events", five_mb, NDJSON)
    assert status == 202 and body["accepted"] == 1000 and body["rejected"] == [], body
    # Over the limit, announced or not: 413, nothing stored.
    over = five_mb + b"\n" + five_mb[:400_000]
    status, body, kind = _chunked_post(port, over)
    assert (status, body["error"]) == (413, "body_too_large") and kind.startswith("application/json"), body
    status, _, body = http("POST", base + "/v1/events", over, NDJSON)
    assert status == 413 and body["error"] == "body_too_large"

    stored = consume_all(settings, "events", 4000, timeout=120)
    uids = {decode_record(m.value()).uid for m in stored}
    assert len(stored) == 4000 and len(uids) == 4000  # every accepted event, once
    assert {u.split("-")[0] for u in uids} == {"nd", "arr", "gz", "slow"}


def test_the_servers_own_refusals_are_json_and_not_errors(settings: Settings, service) -> None:
    ensure_topics(settings)
    base = start_api(service, settings)
    status, head, body = http("GET", base + "/v1/profiles/" + "u" * 10_000)
    assert status == 400 and head["Content-Type"].startswith("application/json"), (status, body)
    assert body["error"] == "bad_request" and "api_max_line_bytes" in body["message"]
    status, head, body = http("GET", base + "/healthz", headers={"X-Big": "h" * 20_000})
    assert status == 400 and head["Content-Type"].startswith("application/json") and body["error"]
    # The longest uid the decoder accepts (512 bytes, every byte percent-encoded) still fits a URL.
    longest = urllib.request.quote("é" * 256)
    status, _, body = http("GET", base + "/v1/profiles/" + longest)
    assert status in (404, 503) and isinstance(body, dict), (status, body)
    api_log = next(p for p in settings.data_dir.parent.iterdir() if p.name.startswith("api"))  # tmp_path
    text = api_log.read_text()
    assert "Traceback" not in text and "Error handling request" not in text, text[-2000:]


def _nest(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_poison_records_are_dead_lettered_and_the_worker_goes_on(settings: Settings, service) -> None:
    """The records that used to end the people worker, and the API's answers to the same bodies."""
    ensure_topics(settings)
    base = start_api(service, settings)
    worker = service(["worker", "people"], settings)
    poison: dict[str, tuple[bytes, str]] = {
        "deep-set": (f'{{"uid":"deep-set","event":"e","ts":{TS},"$set":{{"v":{_nest(300)}}}}}'.encode(),
                     "too_deep"),
        "deep-props": (f'{{"uid":"deep-props","event":"e","ts":{TS},"properties":{_nest(1000)}}}'.encode(),
                       "too_deep"),
        "big-int": (f'{{"uid":"big-int","event":"e","ts":{TS},"$set":{{"n":{2**70}}}}}'.encode(),
                    "bad_number"),
        "blank-uid": (json.dumps({"uid": "   ", "event": "e", "ts": TS}).encode(), "bad_uid"),
        "long-uid": (json.dumps({"uid": "u" * 10_000, "event": "e", "ts": TS}).encode(), "bad_uid"),
    }
    for name, (raw, reason) in poison.items():
        status, _, body = http("POST", base + "/v1/events", raw, {"Content-Type": "application/json"})
        assert status == 400 and body["rejected"][0]["reason"] == reason, (name, status, body)
    huge = json.dumps({"uid": "huge", "event": "e", "ts": TS, "properties": {"b": "x" * 999_000}}).encode()
    producer = Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random",
                         "message.max.bytes": 1_048_000})
    topic = settings.topic("events")
    for name, (raw, _) in poison.items():
        producer.produce(topic, key=name.encode(), value=raw)
        producer.produce(topic, key=f"ok-{name}".encode(),
                         value=json.dumps({"uid": f"ok-{name}", "event": "e", "ts": TS}).encode())
    producer.produce(topic, key=b"huge", value=huge)
    for i in range(20):  # 20 valid 60 KB $set events of one user: the profile would pass 1 MB
        producer.produce(topic, key=b"grower", value=json.dumps(
            {"uid": "grower", "event": "set", "ts": TS + i, "$set": {f"p{i}": "y" * 60_000}}).encode())
    last = {"uid": "ok-last", "event": "e", "ts": TS}
    producer.produce(topic, key=b"ok-last", value=json.dumps(last).encode())
    assert producer.flush(30) == 0

    def profiles() -> dict[str, Any]:
        assert worker.proc.poll() is None, worker.output()[-3000:]
        table = read_table(settings)
        return table if "ok-last" in table and "grower" in table else {}

    table = wait_until(profiles, timeout=120, what="the events after the poison ones to be folded")
    assert {f"ok-{name}" for name in poison} <= set(table)
    assert not set(poison) & set(table) and "huge" not in table
    kept = sorted(table["grower"]["profile"]["properties"])
    assert 0 < len(kept) < 20  # folded while the profile fits max_profile_bytes, then refused

    refused = len(poison) + 1 + (20 - len(kept))
    letters = [AvroCodec.named("DeadLetter").decode(m.value())
               for m in consume_all(settings, "events-dlq", refused, timeout=60)]
    by_key: dict[str, list[dict[str, Any]]] = {}
    for letter in letters:
        by_key.setdefault(letter["key"].decode(), []).append(letter)
    for name, (raw, reason) in poison.items():
        [letter] = by_key[name]
        assert letter["reason"] == reason and letter["value"] == raw and not letter["truncated"]
    [big] = by_key["huge"]
    assert big["reason"] == "too_large" and big["truncated"] and big["value_bytes"] == len(huge)
    assert huge.startswith(big["value"]) and 0 < len(big["value"]) < settings.max_record_bytes
    grown = by_key["grower"]
    assert len(grown) == 20 - len(kept) and {g["reason"] for g in grown} == {"profile_too_large"}

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{settings.worker_web_port}/metrics/").read().decode()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
              if line.startswith("cardflow_people_") and "_total" in line and "{" not in line}
    dead = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("cardflow_people_dead_lettered_total{"))
    consumed = values["cardflow_people_consumed_total"]
    assert consumed == 2 * len(poison) + 1 + 20 + 1
    assert consumed == values["cardflow_people_folded_total"] + values["cardflow_people_duplicates_total"] \
        + dead + values["cardflow_people_rerouted_total"]
    assert dead == refused
