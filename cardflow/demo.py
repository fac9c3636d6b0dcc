"""A small realistic event stream for `cardflow dev`: sign-ups, page views, purchases."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import EVENTS
from cardflow.kafka_clients import producer_config

COUNTRIES = ("US", "DE", "FR", "GB", "IN", "BR", "JP", "FI", "CA", "ES")
COUNTRY_WEIGHTS = (30, 12, 9, 10, 14, 8, 7, 3, 4, 3)
DAY_MS = 86_400_000
PAGES = ("/", "/pricing", "/docs", "/blog", "/signup", "/dashboard")
PLANS = ("free", "team", "business")


def demo_events(users: int = 500, seed: int = 7) -> Iterator[dict[str, Any]]:
    """An endless stream: new users sign up, returning users browse and sometimes buy."""
    rng = random.Random(seed)
    seen: set[int] = set()
    while True:
        # Zipf-like activity: a few users are very active, most are occasional.
        n = min(int(rng.paretovariate(1.2)), users)
        uid = f"user-{n:05d}"
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        if n not in seen:
            seen.add(n)
            yield {"uid": uid, "event": "signup", "ts": now,
                   "properties": {"referrer": rng.choice(("google", "twitter", "direct"))},
                   "$set": {"country": rng.choice(COUNTRIES), "plan": "free"},
                   "$set_once": {"signup_page": rng.choice(PAGES)}}
            continue
        roll = rng.random()
        if roll < 0.8:
            yield {"uid": uid, "event": "page_view", "ts": now,
                   "properties": {"path": rng.choice(PAGES)}}
        elif roll < 0.95:
            yield {"uid": uid, "event": "feature_used", "ts": now,
                   "properties": {"feature": rng.choice(("export", "share", "filter"))}}
        else:
            plan = rng.choice(PLANS[1:])
            yield {"uid": uid, "event": "purchase", "ts": now,
                   "properties": {"plan": plan, "amount": 49 if plan == "team" else 199},
                   "$set": {"plan": plan}}


def history_events(days: int, now_ms: int, seed: int = 11) -> list[dict[str, Any]]:
    """``days`` of history before ``now_ms``, the same for the same day: sign-ups growing day by
    day, each user coming back less and less often (a fifth of them stay loyal), page views,
    feature use and purchases; events after ``now_ms`` are left out. Ids are fixed, so sending
    them twice counts once."""
    rng = random.Random(seed)
    start = (now_ms // DAY_MS - days + 1) * DAY_MS
    out: list[dict[str, Any]] = []
    users = 0
    for day in range(days):
        for _ in range(8 + day * 16 // max(1, days) + rng.randrange(6)):  # growing sign-ups
            users += 1
            uid = f"user-{users:05d}"
            loyal = rng.random() < 0.2
            country = rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0]
            plan = "free"
            for later in range(day, days):
                age = later - day
                if age and rng.random() > (0.45 if loyal else 0.4 * 0.8 ** age):
                    continue  # not active that day
                at = start + later * DAY_MS + rng.randrange(DAY_MS)
                if age == 0:
                    out.append({"uid": uid, "event": "signup", "ts": at,
                                "properties": {"referrer": rng.choice(("google", "twitter", "direct"))},
                                "$set": {"country": country, "plan": plan},
                                "$set_once": {"signup_page": rng.choice(PAGES)}})
                for k in range(1 + rng.randrange(5)):
                    out.append({"uid": uid, "event": "page_view", "ts": at + 1 + k * 60_000,
                                "properties": {"path": rng.choice(PAGES)}})
                if rng.random() < 0.35:
                    out.append({"uid": uid, "event": "feature_used", "ts": at + 400_000,
                                "properties": {"feature": rng.choice(("export", "share", "filter"))}})
                if rng.random() < (0.08 if loyal else 0.03):
                    plan = rng.choice(PLANS[1:])
                    out.append({"uid": uid, "event": "purchase", "ts": at + 500_000,
                                "properties": {"plan": plan, "amount": 49 if plan == "team" else 199},
                                "$set": {"plan": plan}})
    for n, event in enumerate(out):  # before the cut: an event's id does not depend on the hour
        event["event_id"] = f"history-{seed}-{start // DAY_MS}-{n}"
    return [e for e in out if e["ts"] <= now_ms]


def seed_history(settings: Settings, days: int) -> int:
    """Send ``days`` of history when ``events`` is still empty (a fresh installation); 0 otherwise."""
    from cardflow.connectors.kafka_read import manual_consumer, topic_partitions, watermarks

    topic = settings.topic(EVENTS)
    consumer = manual_consumer(settings, f"history-{time.monotonic_ns()}")
    try:  # right after the topics are made: watermarks() waits out "not leader yet"
        partitions = topic_partitions(consumer, topic, 30, settings)
        held = sum(watermarks(consumer, topic, p, 30)[1] for p in partitions)
    finally:
        consumer.close()
    if held or days <= 0:
        return 0
    producer = Producer(producer_config(settings, **{"linger.ms": 50}))
    events = history_events(days, int(time.time() * 1000))
    for n, event in enumerate(events):
        producer.produce(topic, key=event["uid"].encode(), value=json.dumps(event).encode())
        if n % 1000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("demo history: not every event was delivered in 60 s")
    return len(events)


def run_demo(settings: Settings, stop: threading.Event, rate: float = 20.0) -> int:
    """Produce demo events at about ``rate`` per second until ``stop`` is set."""
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    sent = 0
    topic = settings.topic(EVENTS)
    for event in demo_events():
        if stop.is_set():
            break
        producer.produce(topic, key=event["uid"].encode(), value=json.dumps(event).encode(),
                         on_delivery=delivered)
        producer.poll(0)
        sent += 1
        if errors:
            raise RuntimeError(f"demo producer: delivery failed: {errors[0]}")
        stop.wait(1.0 / rate)
    remaining = producer.flush(10)
    if remaining or errors:
        raise RuntimeError(f"demo producer: {remaining} undelivered, errors {errors[:3]}")
    return sent


