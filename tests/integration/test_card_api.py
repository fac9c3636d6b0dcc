"""The results API on the real broker: auth, lookups, server-sent events, and replicas that rebuild
their state from the compacted results topic."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.local_kafka import free_port

from .. import cards_truth as truth
from ..helpers import http, start_api, wait_until
from .test_people import produce

BUILTIN = {"active-users", "top-events", "retention", "funnel", "users-by-country", "recent-users"}
READ = {"Authorization": "Bearer reader"}


def cards(base: str) -> dict[str, Any]:
    status, _, body = http("GET", f"{base}/v1/cards", headers=READ)
    assert status == 200, body
    return body


def timeless(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The cards without ``lag_s``, which is measured when the request is answered."""
    return [{k: v for k, v in card.items() if k != "lag_s"} for card in body["cards"]]


def sse_events(response: Any) -> Any:
    """Parse a text/event-stream into (event, data) pairs."""
    event, data = None, []
    for raw in response:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def purchases(card: dict[str, Any]) -> int:
    return {row[0]: row[1] for row in card["widgets"][1]["rows"]}.get("purchase", 0)


def test_results_api(settings: Settings, service) -> None:
    settings = settings.replace(api_tokens="reader:read;writer:ingest")
    ensure_topics(settings)
    service(["worker", "people"], settings)
    events = truth.make_events(60)
    produce(settings, events)
    base = start_api(service, settings)
    wait_until(lambda: BUILTIN <= {c["id"] for c in cards(base)["cards"] if c["widgets"]}, timeout=120,
               interval=1, what="the built-in cards' results")

    assert http("GET", f"{base}/v1/cards")[0] == 401
    status, _, body = http("GET", f"{base}/v1/cards", headers={"Authorization": "Bearer writer"})
    assert (status, body["error"]) == (403, "forbidden")
    assert http("GET", f"{base}/v1/cards?token=reader")[0] == 200  # what EventSource uses
    status, _, body = http("GET", f"{base}/v1/cards/nope", headers=READ)
    assert status == 404 and "top-events" in body["message"]

    # The card document is the latest record of the results topic, decoded, once the API has read
    # it: results of the first batches may still be arriving when every card has one.
    bought, newest = sum(e["event"] == "purchase" for e in events), max(e["ts"] for e in events)

    def served_latest() -> dict[str, Any] | None:
        status, _, card = http("GET", f"{base}/v1/cards/top-events", headers=READ)
        latest = truth.read_results(settings)["top-events"]
        settled = status == 200 and purchases(card) == bought and card["max_ts"] == newest
        return card if settled and card["widgets"] == json.loads(latest["widgets"]) else None

    card = wait_until(served_latest, timeout=60, interval=1, what="the API to serve the latest top-events")
    assert card["max_ts"] == max(e["ts"] for e in events) and card["error"] is None
    # Freshness: every partition is in, and the lag is the age of the newest event it includes.
    assert card["complete"] is True and card["partitions"] == settings.partitions
    assert abs(card["lag_s"] - (time.time() - newest / 1000)) < 30
    assert purchases(card) == sum(e["event"] == "purchase" for e in events)

    # A replica that starts now is ready only once it has read the results topic: when /readyz first
    # answers 200, it serves every card already (the Kubernetes readiness probe relies on it).
    replica = settings.replace(api_port=free_port())
    other = start_api(service, replica)
    wait_until(lambda: http("GET", f"{other}/readyz")[0] == 200, timeout=60, interval=0.05,
               what="the second replica to be ready")
    status, _, served = http("GET", f"{other}/v1/cards", headers=READ)
    assert {c["id"] for c in served["cards"]} == set(truth.read_results(settings)) and served["complete"]

    # SSE: the current result at once, then a new one after a new event.
    request = urllib.request.Request(f"{base}/v1/cards/top-events/stream", headers=READ)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        stream = sse_events(response)
        kind, first = next(stream)
        assert kind == "result" and first["id"] == "top-events"
        before = purchases(first)
        produce(settings, [{"uid": "sse-user", "event": "purchase", "ts": int(time.time() * 1000)}])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kind, update = next(stream)
            assert update["id"] == "top-events"
            if purchases(update) == before + 1:
                break
        else:
            raise AssertionError("no result with the new purchase arrived on the stream")

    # A new replica rebuilds every result from the compacted topic at start.
    replica = settings.replace(api_port=free_port())
    other = start_api(service, replica)
    assert cards(other)["complete"] is True
    wait_until(lambda: timeless(cards(other)) == timeless(cards(base)), timeout=20,
               what="the new replica to serve the same results")
