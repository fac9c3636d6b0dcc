"""Worker health on a real broker: liveness fails while the event loop is blocked and when a
partition with lag stops progressing; readiness stays false until the tables are recovered."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.local_kafka import free_port
from tests.helpers import http, wait_until
from tests.integration.test_people import make_events, produce, truth

pytestmark = pytest.mark.integration


def probe(settings: Settings, path: str) -> tuple[int, Any]:
    try:
        status, _, body = http("GET", f"http://127.0.0.1:{settings.worker_health_port}{path}", timeout=3)
    except OSError:
        return 0, None
    return status, body


def test_liveness_fails_while_the_loop_is_blocked(settings: Settings, service) -> None:
    s = settings.replace(
        worker_health_port=free_port(),
        liveness_loop_blocked_s=2,
        cards=(),
        profile_scripts="cardflow.standard,tests.integration.fragile_scripts",
        profile_script_timeout_ms=0,  # no budget: the script may block the loop
    )
    ensure_topics(s)
    worker = service(["worker", "people"], s)
    wait_until(lambda: probe(s, "/readyz")[0] == 200, timeout=90, what="the worker to be ready")
    assert probe(s, "/healthz")[0] == 200
    produce(
        s, [{"uid": "u1", "event": "slow", "ts": int(time.time() * 1000), "properties": {"block_loop_s": 8}}]
    )
    status, body = wait_until(
        lambda: (r := probe(s, "/healthz"))[0] == 503 and r,
        timeout=30,
        what="liveness to fail while the loop is blocked",
    )
    assert "event loop has not run" in body["problems"][0]
    assert probe(s, "/readyz")[0] == 503  # not ready either, meanwhile
    wait_until(lambda: probe(s, "/healthz")[0] == 200, timeout=30, what="liveness back once the loop runs")
    status, _, metrics = http("GET", f"http://127.0.0.1:{s.worker_health_port}/metrics")
    assert status == 200 and "cardflow_worker_ready 1.0" in metrics
    assert worker.proc.poll() is None


def test_liveness_fails_when_a_partition_with_lag_stops_progressing(
    settings: Settings, service, tmp_path: Path
) -> None:
    port = free_port()
    adapter = subprocess.Popen(
        [sys.executable, "-m", "tests.clickhouse_http", "--port", str(port), "--path", str(tmp_path / "ch")],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _up(port), timeout=60, what="the ClickHouse HTTP adapter")
        s = settings.replace(
            worker_health_port=free_port(), liveness_stall_s=3, warehouse_url=f"http://127.0.0.1:{port}"
        )
        ensure_topics(s)
        produce(s, make_events(500, 50, seed=3))
        worker = service(["worker", "warehouse"], s)
        wait_until(lambda: probe(s, "/readyz")[0] == 200, timeout=90, what="the worker to be ready")
        wait_until(lambda: _rows(s) == 500, timeout=60, what="the first events loaded")
        assert probe(s, "/healthz")[0] == 200
        adapter.send_signal(signal.SIGKILL)  # the warehouse goes away: inserts retry, nothing moves
        adapter.wait(10)
        produce(s, make_events(500, 50, seed=4))
        status, body = wait_until(
            lambda: (r := probe(s, "/healthz"))[0] == 503 and r,
            timeout=60,
            what="liveness to report the stalled partitions",
        )
        assert any("no progress on" in p and "events[" in p for p in body["problems"]), body
        assert worker.proc.poll() is None  # unhealthy is the probe's verdict; the worker keeps retrying
        # Stopped while its inserts are retried, it gives the batch up (not acknowledged: read
        # again by the next run) and exits cleanly, within the grace a pod is given.
        assert worker.stop(grace=20) == 0, worker.output()[-3000:]
        assert "its batch is read again next run" in worker.output()
        adapter = subprocess.Popen(adapter.args, cwd=Path(__file__).resolve().parents[2],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # the warehouse back
        wait_until(lambda: _up(port), timeout=60, what="the ClickHouse HTTP adapter again")
        service(["worker", "warehouse"], s)
        wait_until(lambda: _rows(s) == 1000, timeout=90, what="the given-up batch loaded by the next run")
    finally:
        adapter.kill()
        adapter.wait(10)


def _up(port: int) -> bool:
    try:
        return http("GET", f"http://127.0.0.1:{port}/ping", timeout=2)[0] == 200
    except OSError:
        return False


def _rows(s: Settings) -> int:
    try:
        status, _, body = http("GET", f"http://127.0.0.1:{s.worker_web_port}/warehouse/stats/", timeout=5)
    except OSError:
        return -1
    return body["rows"] if status == 200 else -1


def test_readiness_waits_for_the_changelog_recovery(settings: Settings, service) -> None:
    s = settings.replace(worker_health_port=free_port(), cards=(), standby_replicas=0)
    ensure_topics(s)
    events = make_events(60_000, 6_000, seed=8)
    produce(s, events)
    want = truth(events)
    worker = service(["worker", "people"], s)
    sample = sorted(want)[:: max(1, len(want) // 40)]
    wait_until(
        lambda: all(_version(s, u) == sum(want[u]["events"].values()) for u in sample[-3:]),
        timeout=180,
        interval=1,
        what="the profiles folded",
    )
    worker.stop()
    shutil.rmtree(s.data_dir / "workers")  # the volume is lost: recovery from the changelog
    restarted = service(["worker", "people"], s)
    seen: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status, body = probe(s, "/readyz")
        if status == 200:
            break
        if body:
            seen.extend(body["problems"])
        time.sleep(0.05)
    else:
        pytest.fail(f"never ready; last problems {seen[-3:]}")
    # Ready means recovered: every sampled profile is there, whole, at once.
    assert {u: _version(s, u) for u in sample} == {u: sum(want[u]["events"].values()) for u in sample}
    assert any("recovering" in p or "assignment" in p for p in seen), seen[:5]
    assert restarted.proc.poll() is None


def _version(s: Settings, uid: str) -> int | None:
    try:
        status, _, body = http("GET", f"http://127.0.0.1:{s.worker_web_port}/profiles/{uid}/", timeout=5)
    except OSError:
        return None
    return body["meta"]["version"] if status == 200 else None
