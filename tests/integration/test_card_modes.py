"""Card modes on the real broker: ``GET /v1/cards/{id}?after=`` waits for the result that includes
an event (or answers 504), and a scheduled card publishes on its schedule only."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from cardflow.card_results import CARD_RESULT
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.connectors.kafka_read import read_topic

from ..helpers import http, start_api, wait_until

pytestmark = pytest.mark.integration
JSON = {"Content-Type": "application/json"}


def post(base: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    status, _, body = http("POST", f"{base}/v1/events", json.dumps(events).encode(), JSON)
    assert status == 202, body
    return body


def test_after_waits_for_the_result_including_an_event_and_a_schedule_is_kept(settings: Settings,
                                                                                service) -> None:
    settings = settings.replace(cards=("tests.integration.composed_cards",), wait_timeout_ms=3000)
    ensure_topics(settings)
    worker = service(["worker", "people"], settings)
    base = start_api(service, settings)
    now = int(time.time() * 1000)
    sent = 0
    started = time.monotonic()
    # Events keep coming for ~14 s: the visitors card follows them, the tally card keeps its schedule.
    while time.monotonic() - started < 14:
        answer = post(base, [{"uid": f"v{sent + i}", "event": "page_view", "ts": now + sent + i}
                             for i in range(3)])
        sent += 3
        assert answer["offsets"] and worker.proc.poll() is None
        if sent in (3, 30):
            # No polling: the answer is the first result holding these events.
            status, _, card = http("GET", f"{base}/v1/cards/visitors?after={answer['offsets']}",
                                   timeout=10)
            assert status == 200, card
            assert card["widgets"][0]["value"] >= sent
            for pair in answer["offsets"].split(","):
                partition, offset = pair.split(":")
                assert card["offsets"][partition] >= int(offset)
            status, _, card = http("GET", f"{base}/v1/cards/conversion?after={answer['event_ids'][-1]}",
                                   timeout=10)
            assert status == 200 and int(card["summary"].split(" of ")[1]) >= sent, card
        time.sleep(0.25)
    status, _, body = http("GET", f"{base}/v1/cards/visitors?after=0:999999999", timeout=10)
    assert status == 504 and body["error"] == "not_yet_included" and "offsets" in body
    status, _, body = http("GET", f"{base}/v1/cards/visitors?after=never-sent-here")
    assert status == 400 and body["error"] == "unknown_after"

    def published(card_id: str) -> list[dict[str, Any]]:
        return [r for r in (CARD_RESULT.decode(m.value()) for m in read_topic(
            settings, settings.topic("results"), f"modes-{time.monotonic_ns()}")) if r["card_id"] == card_id]

    def four_runs() -> list[dict[str, Any]] | None:
        found = published("tally")
        return found if len({r["generated_at"] // 4000 for r in found}) >= 4 else None

    tallies = wait_until(four_runs, timeout=30, what="four tally runs")
    visitors = published("visitors")
    assert len(visitors) > 2 * len(tallies)  # on every change vs on schedule
    # A run publishes a result per partition's partial: results within 2 s of each other are one run.
    runs: list[int] = []
    for at in sorted(r["generated_at"] for r in tallies):
        if not runs or at - runs[-1] > 2000:
            runs.append(at)
    runs = runs[1:]  # the first: when the worker started
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    assert runs and all(gap > 3000 for gap in gaps), gaps
    assert all(at % 4000 < 2000 for at in runs), [at % 4000 for at in runs]  # soon after each 4 s mark
