"""A card's parameters change and the worker restarts while events flow: every result published
is the complete table of the old configuration or a table of the new one alone (complete once
every partition has its partial), never a mixture — checked on every record of the results
topic, not only the last."""

from __future__ import annotations

import threading
import time
from typing import Any

from cardflow.builtin_cards import UsersByProperty
from cardflow.card_results import CARD_RESULT
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.connectors.kafka_read import read_topic

from .. import cards_truth as truth
from ..helpers import wait_until
from .test_people import produce

COUNTRIES = ("FI", "SE", "DE", "FR", "JP")
PLANS = ("free", "team", "pro")


def events(users: range) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [{"uid": f"user{n}", "event": "page_view", "ts": now - 60_000 + n % 1000,
             "$set": {"country": COUNTRIES[n % 5], "plan": PLANS[n % 3]}} for n in users]


def every_result(settings: Settings) -> list[dict[str, Any]]:
    return [CARD_RESULT.decode(m.value()) for m in
            read_topic(settings, settings.topic("results"), f"all-{time.monotonic_ns()}")]


def table(result: dict[str, Any]) -> dict[str, int]:
    return {row[0]: row[1] for row in truth.widgets(result)[1]["rows"]}


def test_changing_a_cards_params_never_publishes_a_mixture(settings: Settings, service) -> None:
    settings = settings.replace(cards=("cardflow.builtin_cards:UsersByProperty",))
    by_country = settings.replace(card_params={"users-by-country": {"property": "country"}})
    by_plan = settings.replace(card_params={"users-by-country": {"property": "plan"}})
    old, new = UsersByProperty(property="country").config, UsersByProperty(property="plan").config
    ensure_topics(settings)

    produce(settings, events(range(0, 400)))
    worker = service(["worker", "people"], by_country)

    def latest() -> dict[str, Any] | None:
        return truth.read_results(settings).get("users-by-country")

    def counted(config: str, users: int) -> bool:
        assert worker.proc.poll() is None, worker.output()[-3000:]
        result = latest()
        return bool(result and result["config"] == config and result["complete"]
                    and sum(table(result).values()) == users)

    wait_until(lambda: counted(old, 400), timeout=120, what="the table by country over 400 users")
    worker.stop()

    # Restart with the new parameters while events keep coming.
    more = events(range(400, 1000))
    flowing = threading.Thread(target=produce, args=(settings, more), kwargs={"rate": 200})
    flowing.start()
    worker = service(["worker", "people"], by_plan)
    flowing.join()
    wait_until(lambda: counted(new, 1000), timeout=120, what="the table by plan over 1000 users")
    final = latest()
    assert final is not None
    assert table(final) == {plan: sum(1 for n in range(1000) if PLANS[n % 3] == plan) for plan in PLANS}

    published = [r for r in every_result(settings) if r["card_id"] == "users-by-country"]
    seen = {"old complete": 0, "new complete": 0}
    for i, result in enumerate(published):
        keys = set(table(result))
        assert result["complete"] == (result["partitions"] == settings.partitions), result
        if result["config"] == old:
            assert keys <= set(COUNTRIES), f"a mixture of configurations: {keys}"
            assert not any(r["config"] == new for r in published[:i]), "the old table came back"
            seen["old complete"] += result["complete"]
        else:
            assert result["config"] == new, result["config"]
            assert keys <= set(PLANS), f"a mixture of configurations: {keys}"
            seen["new complete"] += result["complete"]
    assert seen["old complete"] and seen["new complete"], seen
