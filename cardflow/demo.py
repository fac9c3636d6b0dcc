"""A small realistic event stream for `cardflow dev`: sign-ups, page views, purchases."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import EVENTS
from cardflow.kafka_clients import producer_config

COUNTRIES = ("US", "DE", "FR", "GB", "IN", "BR", "JP", "FI", "CA", "ES")
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


