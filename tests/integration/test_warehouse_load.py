"""The warehouse topology on chDB through the real broker: every valid event loaded exactly once,
through kill -9; invalid records are not loaded."""

from __future__ import annotations

import random
import signal
import threading
import time

import orjson
import pytest

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.local_kafka import free_port
from tests.helpers import http, wait_until
from tests.integration.test_lake import produce_raw
from tests.integration.test_people import make_events, produce

pytestmark = pytest.mark.integration


def stats(settings: Settings) -> dict[str, int]:
    try:
        url = f"http://127.0.0.1:{settings.worker_web_port}/warehouse/stats/"
        status, _, body = http("GET", url, timeout=5)
    except OSError:
        return {}
    return body if status == 200 else {}


def test_kill_9_mid_stream_loads_every_event_once(settings: Settings, service) -> None:
    s = settings.replace(batch_size=2_000)
    ensure_topics(s)
    events = make_events(40_000, 2_000, seed=31)
    for n, event in enumerate(events):
        event["event_id"] = f"e{n}"
    junk = [(None, b"not json", []), (b"u1", b'{"uid": "u1"}', [])] * 50  # never loaded
    produce_raw(s, s.topic("events"), junk)
    feeder = threading.Thread(target=produce, args=(s, events, 4_000))
    feeder.start()
    service(["worker", "people"], s.replace(worker_web_port=free_port(), cards=()))  # the users feed
    worker = service(["worker", "warehouse"], s)
    for kill in range(3):
        time.sleep(random.Random(kill).uniform(2.5, 4))
        worker.stop(signal.SIGKILL)
        worker = service(["worker", "warehouse"], s)
    feeder.join()
    users = len({e["uid"] for e in events})
    # Each user's final profile version is the number of their events: the versions add up to them all.
    want = {"rows": len(events), "event_ids": len(events), "users": users, "profiles": users,
            "versions": len(events)}
    wait_until(lambda: stats(s) == want, timeout=120, interval=1,
               what=f"the warehouse to hold {want} (has {stats(s)})")
    assert worker.proc.poll() is None
    # The views kept what the events say, whatever insert a kill cut (the next run repairs it).
    db = s.warehouse_database
    sql = (f"SELECT (SELECT count() FROM (SELECT DISTINCT event, day, uid FROM {db}.user_days)), "
           f"(SELECT count() FROM (SELECT DISTINCT arrayJoin([event, '']), toDate(ts), uid "
           f"FROM {db}.events)), "
           f"(SELECT count() FROM (SELECT DISTINCT event, uid FROM {db}.user_first)), "
           f"(SELECT count() FROM (SELECT DISTINCT arrayJoin([event, '']), uid FROM {db}.events))")
    status, _, got = http("POST", f"http://127.0.0.1:{s.worker_web_port}/warehouse/sql/",
                          orjson.dumps({"sql": sql}), {"Content-Type": "application/json"}, timeout=60)
    days, days_want, firsts, firsts_want = (int(v) for v in got["rows"][0])
    assert status == 200 and (days, firsts) == (days_want, firsts_want) and days > 1000
