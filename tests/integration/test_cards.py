"""Cards on the real broker: every built-in card's result equals what this test computes from the
events alone; retention equals bitmapist's cohorts on a real Redis; failing cards publish errors
while the others keep updating; partitions moving between workers count nothing twice."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.local_kafka import free_port

from .. import cards_truth as truth
from ..helpers import http, wait_until
from .test_people import metrics, produce

FUNNEL = ["signup", "page_view", "purchase"]
CARDS = "cardflow.builtin_cards,tests.integration.extra_cards"


def bitmapist_cohorts(redis_port: int, events: list[dict[str, Any]],
                      queries: dict[str, dict[str, Any]]) -> dict[str, list[list[Any]]]:
    """bitmapist's get_dates_data for each query, over the same events marked in a real Redis."""
    import bitmapist
    from bitmapist.cohort import get_dates_data

    bitmapist.setup_redis("cards", "127.0.0.1", redis_port)
    bitmapist.get_redis("cards").flushdb()
    marked: set[tuple[str, str]] = set()
    for e in sorted(events, key=lambda e: e["ts"]):
        uid = int(e["uid"].removeprefix("user"))
        when = datetime.fromtimestamp(e["ts"] / 1000, UTC)
        for name in (e["event"], "active"):
            bitmapist.mark_event(name, uid, system="cards", now=when, track_hourly=False)
        for name in ("first_seen", f"first:{e['event']}"):
            if (e["uid"], name) not in marked:
                marked.add((e["uid"], name))
                bitmapist.mark_event(name, uid, system="cards", now=when, track_hourly=False)
    return {card: get_dates_data(system="cards", **{"as_percent": False, **query})
            for card, query in queries.items()}


RETENTION_QUERIES = {
    # card id → the bitmapist query its parameters correspond to (counts, not percents)
    "retention": {"select1": "first_seen", "select2": "active", "time_group": "days",
                  "num_results": 14, "num_of_rows": 12},
    "weekly-buyers": {"select1": "page_view", "select2": "purchase", "time_group": "weeks",
                      "num_results": 8, "num_of_rows": 4},
    "monthly-first-views": {"select1": "first:page_view", "select2": "active", "time_group": "months",
                            "num_results": 3, "num_of_rows": 2},
}


def expected_results(events: list[dict[str, Any]], cohorts: dict[str, list[list[Any]]]) -> dict[str, Any]:
    countries = truth.countries(events)
    users = sum(countries.values())
    top = sorted(countries.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    out: dict[str, Any] = {
        "active-users": truth.active_users(events),
        "top-events": truth.top_events(events)[:10],
        "funnel": [[s, n] for s, n in zip(FUNNEL, truth.funnel(events, FUNNEL, 7), strict=True)],
        "users-by-country": ({k: v for k, v in countries.items() if len(k) == 2},
                             [[k, v, round(v / users, 4)] for k, v in top]),
        "recent-users": truth.recent_users(events),
    }
    for card, rows in cohorts.items():
        out[card] = [[row[0].date().isoformat(), row[1],
                      [None if c == "" else int(c) for c in row[2:]]] for row in rows]
    return out


def observed(result: dict[str, Any]) -> Any:
    """The numbers of a card result, in the shape ``expected_results`` gives."""
    w = truth.widgets(result)
    card = result["card_id"]
    if card == "active-users":
        return w[1]["series"]
    if card == "top-events":
        return w[1]["rows"]
    if card == "funnel":
        return w[0]["steps"]
    if card == "users-by-country":
        return w[0]["values"], w[1]["rows"]
    if card == "recent-users":
        return [u["uid"] for u in w[0]["users"]]
    return [[row["label"], row["size"], row["counts"]] for row in w[0]["rows"]]


def compare(settings: Settings, expected: dict[str, Any]) -> list[str]:
    results = truth.read_results(settings)
    problems = []
    for card, want in expected.items():
        result = results.get(card)
        if result is None:
            problems.append(f"{card}: no result yet")
        elif result["error"]:
            problems.append(f"{card}: error {result['error']}")
        elif observed(result) != want:
            problems.append(f"{card}: got {observed(result)!r:.300} want {want!r:.300}")
    return problems


def wait_exact(settings: Settings, expected: dict[str, Any], worker: Any, timeout: float = 120) -> None:
    last: list[str] = []

    def exact() -> bool:
        assert worker.proc.poll() is None, worker.output()[-3000:]
        last[:] = compare(settings, expected)
        return not last

    try:
        wait_until(exact, timeout=timeout, interval=1, what="card results to equal the ground truth")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last}") from None


def cohort_shares_match(settings: Settings, cohorts_pct: dict[str, list[list[Any]]]) -> None:
    results = truth.read_results(settings)
    for card, rows in cohorts_pct.items():
        got = truth.widgets(results[card])[0]["rows"]
        for row, want in zip(got, rows, strict=True):
            for share, pct in zip(row["cells"], want[2:], strict=True):
                assert (share is None) == (pct == ""), (card, row, want)
                if share is not None:
                    assert share * 100 == pytest.approx(pct, rel=1e-12), (card, row, want)


def test_cards_exact_and_failing_cards_isolated(settings: Settings, service, redis_port: int) -> None:
    settings = settings.replace(cards=CARDS, card_params={"funnel": {"steps": FUNNEL, "window_days": 7}})
    ensure_topics(settings)
    events = truth.make_events(300)
    first, second = events[: len(events) // 2], events[len(events) // 2:]
    worker = service(["worker", "people"], settings)
    produce(settings, first)
    wait_exact(settings, expected_results(first, bitmapist_cohorts(redis_port, first, RETENTION_QUERIES)),
               worker)

    # The failing cards publish errors, each naming what went wrong, and the worker lives on.
    results = truth.read_results(settings)
    assert "ZeroDivisionError: this card always fails" in results["broken"]["error"]
    assert "longer than its budget of 2s" in results["forever"]["error"]
    assert "ended the map process (exit code 3)" in results["quitter"]["error"]
    assert results["broken"]["widgets"] == "[]"

    # More events: every other card keeps updating to the new truth.
    produce(settings, second)
    cohorts = bitmapist_cohorts(redis_port, events, RETENTION_QUERIES)
    wait_exact(settings, expected_results(events, cohorts), worker)
    percent = {card: {**q, "as_percent": True} for card, q in RETENTION_QUERIES.items()}
    cohort_shares_match(settings, bitmapist_cohorts(redis_port, events, percent))
    assert worker.proc.poll() is None
    # Each result carries its input watermark: the latest event time and an offset per partition.
    result = truth.read_results(settings)["top-events"]
    assert result["max_ts"] == max(e["ts"] for e in events)
    assert sorted(result["offsets"]) == [str(p) for p in range(settings.partitions)]


def assigned(settings: Settings) -> bool:
    """Whether the worker's /metrics/ shows it owning at least one events partition."""
    try:
        status, _, text = http("GET", f"http://127.0.0.1:{settings.worker_web_port}/metrics/", timeout=5)
    except OSError:
        return False
    return status == 200 and "cardflow_people_lag{" in text


def test_partitions_moving_between_workers(settings: Settings, service) -> None:
    """A second worker joins mid-stream (half the partitions move to it), then leaves (they move
    back): every result ends exact, so no partition was counted twice or lost."""
    settings = settings.replace(partitions=6)
    ensure_topics(settings)
    events = truth.make_events(400, seed=11)
    thirds = [events[i::3] for i in range(3)]
    one = service(["worker", "people"], settings)
    produce(settings, thirds[0])
    expected_first = expected_results(thirds[0], {})
    wait_exact(settings, expected_first, one)

    other = settings.replace(worker_web_port=free_port(), data_dir=settings.data_dir.parent / "data2")
    two = service(["worker", "people"], other)
    joining, joined = thirds[1][: len(thirds[1]) // 2], thirds[1][len(thirds[1]) // 2:]
    producing = threading.Thread(target=produce, args=(settings, joining), kwargs={"rate": 200})
    producing.start()  # events flow while the second worker joins and partitions move
    wait_until(lambda: assigned(other), timeout=90, what="the second worker to get partitions")
    producing.join()
    produce(settings, joined, rate=500)  # and after it owns some of them
    wait_exact(settings, expected_results(thirds[0] + thirds[1], {}), one)
    assert metrics(other).get("cardflow_people_consumed_total", 0) > 0, "the second worker got nothing"
    owners = defaultdict(set)
    for result in truth.read_results(settings).values():
        owners[result["card_id"]] = set(result["offsets"])
    assert all(len(p) == 6 for p in owners.values()), owners
    assert two.proc.poll() is None

    two.stop()
    produce(settings, thirds[2], rate=2000)
    wait_exact(settings, expected_results(events, {}), one)
