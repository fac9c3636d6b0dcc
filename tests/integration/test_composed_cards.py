"""A card built on two other cards, on the real broker: it re-renders when either changes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics

from .. import cards_truth as truth
from ..helpers import wait_until
from .test_people import produce

pytestmark = pytest.mark.integration
CARDS = ("tests.integration.composed_cards",)


def test_a_card_using_two_cards_re_renders_when_either_changes(settings: Settings, service) -> None:
    settings = settings.replace(cards=CARDS)
    ensure_topics(settings)
    worker = service(["worker", "people"], settings)
    now = int(time.time() * 1000)

    def conversion(summary: str) -> dict[str, Any]:
        def shown() -> dict[str, Any] | None:
            assert worker.proc.poll() is None
            result = truth.read_results(settings).get("conversion")
            return result if result and result["summary"] == summary and result["complete"] else None

        return wait_until(shown, timeout=90, what=f"conversion to say {summary!r}")

    produce(settings, [{"uid": f"v{n}", "event": "page_view", "ts": now + n} for n in range(10)])
    conversion("0 of 10")
    # Only the purchasers card's total changes (they visited already) ...
    produce(settings, [{"uid": f"v{n}", "event": "purchase", "ts": now + 100 + n} for n in range(4)])
    assert truth.widgets(conversion("4 of 10"))[0]["value"] == 0.4
    # ... then only the visitors card's.
    produce(settings, [{"uid": f"w{n}", "event": "page_view", "ts": now + 200 + n} for n in range(6)])
    result = conversion("4 of 16")
    assert truth.widgets(result)[0]["value"] == 0.25 and result["error"] is None
    assert result["max_ts"] == now + 205  # as fresh as the cards it is built on
