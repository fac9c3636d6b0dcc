"""Derived events on the real broker: in ``events`` exactly once each, through a kill -9 mid-stream,
and a self-triggering chain stopped at the depth limit."""

from __future__ import annotations

import random
import signal
import threading
from collections import Counter
from typing import Any

import orjson
import pytest

from cardflow.codec import AvroCodec
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.connectors.kafka_read import read_topic
from tests.helpers import consume_all, read_table, wait_until
from tests.integration.test_people import T0, metrics, produce

pytestmark = pytest.mark.integration
SCRIPTS = "cardflow.standard,tests.integration.derived_scripts"


def derived_in_events(settings: Settings) -> list[dict[str, Any]]:
    """Every derived event in ``events`` (committed records only, as every consumer reads them)."""
    out = []
    for msg in read_topic(settings, settings.topic("events"), "derived-reader"):
        event = orjson.loads(msg.value())
        if event.get("source") == "derived":
            out.append(event)
    return out


def test_derived_events_are_sent_exactly_once_through_a_kill_9(settings: Settings, service) -> None:
    ensure_topics(settings)
    scripted = settings.replace(profile_scripts=SCRIPTS, batch_size=5_000)
    rng = random.Random(5)
    events = [{"uid": f"u{n % 4000}", "event": rng.choice(["purchase", "page_view", "page_view"]),
               "ts": T0 + n} for n in range(80_000)]
    rng.shuffle(events)
    purchases = Counter(e["uid"] for e in events if e["event"] == "purchase")
    power_users = {uid for uid, n in purchases.items() if n >= 3}
    assert len(power_users) > 3000
    worker = service(["worker", "people"], scripted)
    feeder = threading.Thread(target=produce, args=(settings, events, 10_000))
    feeder.start()
    wait_until(lambda: metrics(settings).get("cardflow_people_derived_total", 0) > 500, timeout=120,
               what="derived events mid-stream")
    worker.stop(signal.SIGKILL)
    feeder.join()
    worker = service(["worker", "people"], scripted)

    def all_derived() -> list[dict[str, Any]] | None:
        found = derived_in_events(settings)
        return found if len({e["uid"] for e in found}) >= len(power_users) else None

    try:
        found = wait_until(all_derived, timeout=120, interval=2, what="a derived event for every power user")
    except AssertionError:
        table = read_table(settings)
        missing = sorted(power_users - {e["uid"] for e in derived_in_events(settings)})
        raise AssertionError(f"{len(missing)} power users have no derived event: " + "; ".join(
            f"{u}: {table.get(u, {}).get('profile', {}).get('purchases')} purchases, "
            f"meta {dict((k, v) for k, v in table.get(u, {}).get('meta', {}).items() if k != 'ids')}"
            for u in missing[:5])) from None
    # Each exactly once: one per power user, no id twice, ids as derived from the third purchase.
    ids = Counter(e["event_id"] for e in found)
    assert [i for i, n in ids.items() if n > 1] == []
    assert sorted(e["uid"] for e in found) == sorted(power_users)
    for e in found:
        assert e["event"] == "became_power_user" and e["derived_from"]["script"] == "power"
        assert e["derived_from"]["depth"] == 1 and e["properties"]["third"] == e["derived_from"]["event_id"]
    # Folded like any event: every power user's profile counts it once.
    def counted() -> bool:
        table = read_table(settings)
        return all(table[u]["profile"]["events"].get("became_power_user") == 1 for u in power_users)

    wait_until(counted, timeout=120, interval=2, what="every derived event folded once")
    assert worker.proc.poll() is None


def test_a_self_triggering_chain_stops_at_the_depth_limit(settings: Settings, service) -> None:
    ensure_topics(settings)
    service(["worker", "people"], settings.replace(profile_scripts=SCRIPTS, max_derived_depth=3))
    produce(settings, [{"uid": f"p{n}", "event": "ping", "ts": T0 + n, "event_id": f"ping-{n}"}
                       for n in range(5)])
    letters = [AvroCodec.named("DeadLetter").decode(m.value())
               for m in consume_all(settings, "events-dlq", 5)]
    assert len(letters) == 5 and {d["reason"] for d in letters} == {"derived_too_deep"}
    assert {d["detail"] for d in letters} == {"echo"} and "the limit is 3" in letters[0]["message"]
    stopped = [orjson.loads(d["value"]) for d in letters]
    assert sorted(e["derived_from"]["depth"] for e in stopped) == [4] * 5
    # Three hops each went to events, and were folded: four pings per user.
    found = derived_in_events(settings)
    assert sorted(e["derived_from"]["depth"] for e in found) == sorted([1, 2, 3] * 5)
    assert sorted(e["properties"]["hop"] for e in found) == sorted([1, 2, 3] * 5)
    wait_until(lambda: all(read_table(settings).get(f"p{n}", {}).get("profile", {}).get("events", {})
                           .get("ping") == 4 for n in range(5)), timeout=60, what="four pings per user")
