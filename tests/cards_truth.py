"""A known event set for the card tests, and each built-in card's expected output computed from
the events alone (no cardflow code), plus helpers to read card results from Kafka."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cardflow.config import Settings

DAY = 86_400_000
EVENTS = ("page_view", "page_view", "page_view", "feature_used", "purchase")
COUNTRIES = ("US", "DE", "FR", "FI", "JP", "Mars")


def today() -> date:
    return datetime.now(UTC).date()


def make_events(users: int, days: int = 40, seed: int = 3) -> list[dict[str, Any]]:
    """Users sign up on a random day of the last ``days`` days and come back now and then."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    start = now - days * DAY
    events = []
    for u in range(users):
        uid = f"user{u}"
        t = start + rng.randrange(days * DAY)
        event: dict[str, Any] = {"uid": uid, "event": "signup", "ts": t}
        if rng.random() < 0.9:
            event["$set"] = {"country": rng.choice(COUNTRIES)}
        events.append(event)
        while True:
            t += int(rng.expovariate(1 / (2.5 * DAY)))
            if t >= now - 60_000:
                break
            events.append({"uid": uid, "event": rng.choice(EVENTS), "ts": t})
    rng.shuffle(events)
    return events


def _day(ts: int) -> date:
    return datetime.fromtimestamp(ts / 1000, UTC).date()


def active_users(events: list[dict[str, Any]], days: int = 30) -> dict[str, Any]:
    active: dict[date, set[str]] = defaultdict(set)
    for e in events:
        active[_day(e["ts"])].add(e["uid"])
    last = today()

    def window(d: date, width: int) -> int:
        return len(set().union(*(active[d - timedelta(days=i)] for i in range(width))))

    dates = [last - timedelta(days=i) for i in reversed(range(days))]
    return {"DAU": [[d.isoformat(), len(active[d])] for d in dates],
            "WAU": [[d.isoformat(), window(d, 7)] for d in dates],
            "MAU": [[d.isoformat(), window(d, 30)] for d in dates]}


def top_events(events: list[dict[str, Any]]) -> list[list[Any]]:
    counts = Counter(e["event"] for e in events)
    users = {name: len({e["uid"] for e in events if e["event"] == name}) for name in counts}
    return [[name, n, users[name]] for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def funnel(events: list[dict[str, Any]], steps: list[str], window: int) -> list[int]:
    """Brute force: a user reaches step n when some day sequence d1 <= … <= dn has dn - d1 <= window."""
    days: dict[str, dict[str, set[date]]] = defaultdict(lambda: defaultdict(set))
    for e in events:
        days[e["uid"]][e["event"]].add(_day(e["ts"]))
    reached = [0] * len(steps)
    for per_event in days.values():
        best = 0
        for start in per_event.get(steps[0], ()):
            frontier, n = {start}, 1
            for step in steps[1:]:
                frontier = {d for d in per_event.get(step, ()) if any(f <= d for f in frontier)
                            and (d - start).days <= window}
                if not frontier:
                    break
                n += 1
            best = max(best, n)
        for i in range(best):
            reached[i] += 1
    return reached


def countries(events: list[dict[str, Any]]) -> Counter[str]:
    latest: dict[str, tuple[int, str]] = {}
    users = set()
    for e in events:
        users.add(e["uid"])
        for k, v in e.get("$set", {}).items():
            if k == "country" and (e["uid"] not in latest or e["ts"] > latest[e["uid"]][0]):
                latest[e["uid"]] = (e["ts"], v)
    return Counter(latest[u][1] if u in latest else "(not set)" for u in users)


def recent_users(events: list[dict[str, Any]], limit: int = 20) -> list[str]:
    last: dict[str, int] = {}
    for e in events:
        last[e["uid"]] = max(last.get(e["uid"], 0), e["ts"])
    return [u for u, _ in sorted(last.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def read_results(settings: Settings) -> dict[str, dict[str, Any]]:
    """The latest result per card id in the results topic."""
    from cardflow.card_results import CARD_RESULT
    from cardflow.connectors.kafka_read import read_topic

    out: dict[str, dict[str, Any]] = {}
    try:
        for msg in read_topic(settings, settings.topic("results"), f"results-{time.monotonic_ns()}"):
            out[msg.key().decode()] = CARD_RESULT.decode(msg.value())
    except RuntimeError as exc:
        if "Unknown topic" not in str(exc):
            raise
    return out


def widgets(result: dict[str, Any]) -> list[dict[str, Any]]:
    import json

    return json.loads(result["widgets"])
