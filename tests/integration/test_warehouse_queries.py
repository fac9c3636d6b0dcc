"""Insights through the whole path: events on the real broker → people worker (profiles, the users
feed, the retention card) and warehouse worker (chDB) → the API's POST /v1/query and /v1/sql.
Every query kind equals the plain-Python reference over the same events, and the warehouse's
retention equals the retention card's cells."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.insights import AGGREGATIONS, PERIODS
from cardflow.local_kafka import free_port
from tests import cards_truth
from tests import insights_truth as truth
from tests.helpers import http, wait_until
from tests.integration.test_people import produce
from tests.integration.test_warehouse_load import stats
from tests.unit.test_insights import FILTERS, HOSTILE, REFUSED, same

pytestmark = pytest.mark.integration

END = datetime.now(UTC).date()
RETENTION = {"periods": 10, "after": 6, "as_of": END.isoformat()}


def queries() -> list[dict[str, Any]]:
    span = {"from": "2000-01-01", "to": END.isoformat()}
    return [
        {"kind": "trend", "event": "purchase", **span},
        {"kind": "trend", "aggregation": "unique_users", "period": "week", **span},
        {
            "kind": "trend",
            "aggregation": "sum",
            "property": "amount",
            "period": "month",
            **span,
            "breakdown": "browser",
        },
        {
            "kind": "trend",
            "aggregation": "p90",
            "property": "amount",
            **span,
            "filters": [{"property": "flag", "op": "eq", "value": True}],
        },
        {
            "kind": "trend",
            "aggregation": "count",
            "period": "week",
            **span,
            "breakdown": {"property": "country", "on": "user"},
            "filters": [
                {"property": "plan", "op": "in", "value": ["pro", 3], "on": "user"},
                {"property": "amount", "op": "gte", "value": 100},
            ],
        },
        # every aggregation in every period, every filter op (event and user properties)
        *[
            {
                "kind": "trend",
                "event": "purchase",
                "aggregation": agg,
                "period": period,
                **(
                    {"from": (END - timedelta(days=2)).isoformat(), "to": END.isoformat()}
                    if period == "hour"
                    else span
                ),
                **({"property": "amount"} if agg not in ("count", "unique_users") else {}),
            }
            for agg in AGGREGATIONS
            for period in PERIODS
        ],
        *[
            {"kind": "trend", "aggregation": "unique_users", "period": "week", **span, "filters": [f]}
            for f in FILTERS
        ],
        *[
            {
                "kind": "trend",
                "period": "week",
                **span,
                "breakdown": text,
                "filters": [{"property": text, "op": "in", "value": [text, "firefox"]}],
            }
            for text in HOSTILE
        ],
        {"kind": "funnel", "steps": ["signup", "page_view", "purchase"], **span},
        *[
            {
                "kind": "funnel",
                "steps": [text, "purchase"],
                **span,
                "breakdown": {"property": text, "on": "user"},
            }
            for text in HOSTILE[:4]
        ],
        {
            "kind": "funnel",
            "steps": ["search", "purchase"],
            "window_seconds": 86_400,
            **span,
            "breakdown": {"property": "country", "on": "user"},
        },
    ]


def post(base: str, path: str, body: Any, token: str = "admin-token") -> tuple[int, dict[str, str], Any]:
    return http(
        "POST",
        f"{base}{path}",
        orjson.dumps(body),
        timeout=60,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def test_queries_through_the_topology_equal_the_reference(settings: Settings, service) -> None:
    events, users = truth.generate(300, 40, seed=61, end=END)
    set_once: set[str] = set()
    for n, e in enumerate(events):
        e["event_id"] = f"q{n}"
        if e["uid"] not in set_once:  # each user's properties, set once: the profile holds them
            set_once.add(e["uid"])
            e["$set"] = users[e["uid"]]
    warehouse_port = free_port()
    s = settings.replace(
        cards=("cardflow.builtin_cards",),
        card_params={"retention": RETENTION},
        api_tokens="admin-token:admin;reader:read",
        warehouse_worker_url=f"http://127.0.0.1:{warehouse_port}",
        worker_urls=(f"dns+http://localhost:{settings.worker_web_port}",),  # as a headless Service
    )
    ensure_topics(s)
    feeder = threading.Thread(target=produce, args=(s, events))
    feeder.start()
    service(["worker", "people"], s)
    wh = s.replace(worker_web_port=warehouse_port)
    service(["worker", "warehouse"], wh)
    api = service(["api"], s)
    feeder.join()
    base = f"http://127.0.0.1:{s.api_port}"
    want = {
        "rows": len(events),
        "event_ids": len(events),
        "users": len(users),
        "profiles": len(users),
        "versions": len(events),
    }
    wait_until(lambda: stats(wh) == want, timeout=120, interval=1, what=f"the warehouse to hold {want}")

    for q in queries():
        status, headers, got = post(base, "/v1/query", q, token="reader")
        assert status == 200, got
        if q["kind"] == "trend":
            assert same(
                {"buckets": got["buckets"], "series": got["series"]}, truth.trend(events, users, q)
            ), q
        else:
            observed = [
                {"breakdown": x["breakdown"], "users": [st["users"] for st in x["steps"]]}
                for x in got["series"]
            ]
            assert {"series": observed} == truth.funnel(events, users, q), q
        status, headers, again = post(base, "/v1/query", q, token="reader")
        assert headers.get("X-Cardflow-Cache") == "hit" and again == got  # unchanged data: cached

    # A body that arrives in many pieces, slowly (chunked, ~900 kB of whitespace around a query), is
    # read whole; one byte past query_max_body_bytes is a 413.
    big = b" " * 450_000 + orjson.dumps(queries()[0]) + b" " * 450_000
    assert chunked(s.api_port, big)[0] == 200
    assert chunked(s.api_port, b" " * (s.query_max_body_bytes + 1))[0] == 413

    # The warehouse's retention equals the retention card's cells on the same events.
    def card_rows() -> Any:
        result = cards_truth.read_results(s).get("retention")
        if result is None or result["error"]:
            return None
        return cards_truth.widgets(result)[0]["rows"]

    status, _, got = post(base, "/v1/query", {"kind": "retention", **RETENTION}, token="reader")
    assert status == 200, got
    expected = [[r["date"], r["size"], r["counts"]] for r in got["rows"]]
    assert sum(r[1] for r in expected) > 0

    def card_matches() -> bool:
        rows = card_rows()
        return rows is not None and [[r["label"], r["size"], r["counts"]] for r in rows] == expected

    wait_until(
        card_matches,
        timeout=120,
        interval=1,
        what=f"the retention card to equal the warehouse's retention {expected} (card: {card_rows()})",
    )

    # SQL: admin only, read-only, ClickHouse's errors as 400s.
    status, _, got = post(base, "/v1/sql", {"sql": "SELECT count() AS n FROM cardflow.events"})
    assert (status, got["rows"]) == (200, [[len(events)]])
    assert post(base, "/v1/sql", {"sql": "SELECT 1"}, token="reader")[0] == 403
    for text in REFUSED:  # writes, DDL, settings, files, URLs, credentials: each a 400, nothing changed
        status, _, got = post(base, "/v1/sql", {"sql": text.replace("insights_test.", "cardflow.")})
        assert status == 400 and got["error"] == "bad_query", (text, got)
    status, _, got = post(base, "/v1/sql", {"sql": "SELECT count() AS n FROM cardflow.events"})
    assert got["rows"] == [[len(events)]]
    status, _, got = post(base, "/v1/query", {"kind": "trend", "aggregation": "mode"}, token="reader")
    assert (status, got["field"]) == (400, "aggregation") and "count, unique_users" in got["message"]
    status, _, got = http("GET", f"{base}/v1/warehouse/schema", headers={"Authorization": "Bearer reader"})
    assert status == 200 and set(got["events"]) == {e["event"] for e in events}
    assert {"country", "plan"} <= set(got["user_properties"]) and "amount" in got["event_properties"]
    # A user's recent events (the user page's), newest first, from the warehouse.
    uid = events[0]["uid"]
    mine = sorted((e for e in events if e["uid"] == uid), key=lambda e: (-e["ts"], e["event_id"]))[:5]
    reader = {"Authorization": "Bearer reader"}
    status, _, got = http("GET", f"{base}/v1/users/{uid}/events?limit=5", headers=reader)
    assert status == 200 and [(e["event_id"], e["ts"]) for e in got["events"]] == [
        (e["event_id"], e["ts"]) for e in mine]
    assert http("GET", f"{base}/v1/users/{uid}/events?limit=0", headers=reader)[0] == 400
    # The notebook guide runs as written, and its client agrees with the API.
    run_notebook_doc(base, "admin-token")
    from cardflow.client import Client

    frame = Client(base, token="reader").query(queries()[2])
    status, _, answer = post(base, "/v1/query", queries()[2], token="reader")
    assert [(str(b), v) for b, v in zip(frame["breakdown"], frame["value"], strict=True)] == [
        (str(s["breakdown"]), v) for s in answer["series"] for v in s["values"]
    ]
    assert api.proc.poll() is None


def run_notebook_doc(url: str, token: str) -> None:
    """Every python block of docs/notebook.md, in order, in one namespace."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "notebook.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 5
    namespace: dict[str, Any] = {"url": url, "token": token}
    for block in blocks:
        exec(compile(block, "docs/notebook.md", "exec"), namespace)  # noqa: S102 - our own documentation


def chunked(port: int, body: bytes) -> tuple[int, bytes]:
    """POST /v1/query with ``body`` sent chunked, in 64 kB pieces with pauses between them."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", "/v1/query")
    for k, v in {"Authorization": "Bearer reader", "Content-Type": "application/json",
                 "Transfer-Encoding": "chunked"}.items():
        conn.putheader(k, v)
    conn.endheaders()
    try:
        for at in range(0, len(body), 65_536):
            piece = body[at:at + 65_536]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.01)
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the end: the answer is still there
    response = conn.getresponse()
    out = (response.status, response.read())
    conn.close()
    return out
