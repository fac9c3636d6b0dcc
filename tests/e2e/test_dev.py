"""`cardflow dev` (what `make run` runs): broker, topics, worker, API, demo stream; Ctrl-C stops all."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer

from cardflow.config import load_settings
from cardflow.local_kafka import free_port

from ..helpers import Service, http, profile_change, wait_until
from ..integration.test_local_kafka import _java_processes_for


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


def test_dev_brings_up_everything_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings(
        env={}, data_dir=tmp_path / "data", kafka_port=port, kafka_controller_port=free_port(),
        broker=f"127.0.0.1:{port}", api_port=free_port(), worker_web_port=free_port(),
        partitions=2, archive_batch_seconds=2,
    )
    dev = Service(["dev", "--rate", "50"], settings, tmp_path / "dev.log")
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        wait_until(lambda: "Press Ctrl-C to stop" in dev.output() or dev.proc.poll() is not None,
                   timeout=180, what="cardflow dev to start")
        assert dev.proc.poll() is None, dev.output()
        assert f"Dashboard: {base}/" in dev.output()
        status, _, page = http("GET", f"{base}/")
        assert status == 200 and "/static/dashboard.js" in page
        status, _, index = http("GET", f"{base}/v1")
        assert status == 200 and "/v1/cards" in index["endpoints"]
        assert _get(f"{base}/healthz") == (200, json.dumps({"status": "ok"}))
        # Ready once the broker answers and the results topic is read (right after start it may not be).
        wait_until(lambda: _get(f"{base}/readyz")[0] == 200, timeout=60, interval=0.5, what="the API ready")
        assert "cardflow_api_broker_up 1.0" in _get(f"{base}/metrics")[1]

        # The demo stream reaches the people worker, which publishes profile changes.
        consumer = Consumer({"bootstrap.servers": settings.broker, "group.id": "observer",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe(["profile-changes"])
        change = wait_until(lambda: consumer.poll(0.5), timeout=90, what="a profile change")
        consumer.close()
        assert change.error() is None and profile_change(change)["version"] >= 1

        # … and every built-in card gets a result the dashboard can draw.
        builtin = {"active-users", "top-events", "retention", "funnel", "users-by-country", "recent-users"}

        def cards() -> bool:
            status, _, body = http("GET", f"{base}/v1/cards")
            return status == 200 and builtin <= {c["id"] for c in body["cards"] if c["widgets"]}

        wait_until(cards, timeout=90, interval=1, what="the built-in cards' results")

        # ... and the archive worker keeps the raw events in the local lake.
        from cardflow.connectors.lake import LocalLake

        lake = LocalLake(tmp_path / "data" / "lake")
        wait_until(lambda: list(lake.list("topic=events/")), timeout=90, what="events in the local lake")

        # ... and the warehouse worker loads them into chDB, which the API queries through it.
        def signups() -> int:
            status, _, body = http("POST", f"{base}/v1/query", json.dumps(
                {"kind": "trend", "aggregation": "count", "period": "month"}).encode(),
                headers={"Content-Type": "application/json"})
            return sum(body["series"][0]["values"]) if status == 200 else 0

        wait_until(signups, timeout=90, interval=1, what="events in the warehouse, through POST /v1/query")
        assert http("GET", f"{base}/insights")[0] == 200
    finally:
        code = dev.stop(signal.SIGINT, grace=90)
    assert code == 0, dev.output()[-3000:]
    assert "cardflow dev stopped." in dev.output()
    assert _java_processes_for(tmp_path / "data" / "kafka") == []
    assert _get(f"http://127.0.0.1:{settings.api_port}/healthz")[0] == 0
