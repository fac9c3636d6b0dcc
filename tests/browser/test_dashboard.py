"""The dashboard in headless Chromium (Debian's): it loads, draws every built-in card's widgets,
and a new event changes a number on the page within seconds, without a reload."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics

from .. import cards_truth as truth
from ..helpers import http, start_api, wait_until
from ..integration.test_people import produce

DOCS = Path(__file__).resolve().parents[2] / "docs"
# What each built-in card must draw: widget types in the card, and how many drawn charts.
EXPECTED = {
    "active-users": ({"group", "number", "line"}, 1),
    "top-events": ({"bar", "table"}, 1),
    "retention": ({"cohort"}, 0),
    "funnel": ({"funnel"}, 0),
    "users-by-country": ({"map", "table"}, 1),  # the choropleth
    "recent-users": ({"users"}, 0),
}


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed; `make test` installs it (apt-get install chromium)")
    return path


def launch(pw: Any) -> Any:
    """Debian's Chromium, headless, as the browser tests drive it."""
    return pw.chromium.launch(executable_path=chromium(), headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])


def open_page(browser: Any, url: str, errors: list[str]) -> Any:
    """A page at ``url`` whose JavaScript errors land in ``errors``."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page


def publish_result(settings: Settings, record: dict[str, Any]) -> None:
    """A CardResult written to the results topic as the reducer writes it."""
    from confluent_kafka import Producer

    from cardflow.card_results import CARD_RESULT

    producer = Producer(settings.kafka_client_config())
    producer.produce(settings.topic("results"), CARD_RESULT.encode(record), record["card_id"].encode())
    assert producer.flush(30) == 0


def test_dashboard_draws_cards_and_updates_live(settings: Settings, service, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    settings = settings.replace(api_tokens="reader:read;writer:ingest", card_params={
        "funnel": {"steps": ["signup", "page_view", "purchase"]}})
    ensure_topics(settings)
    service(["worker", "people"], settings)
    base = start_api(service, settings)
    produce(settings, truth.make_events(150))

    def all_cards() -> bool:
        status, _, body = http("GET", f"{base}/v1/cards", headers={"Authorization": "Bearer reader"})
        assert status == 200, body
        ready = {c["id"] for c in body["cards"] if not c["error"] and c["widgets"] and c["complete"]}
        return set(EXPECTED) <= ready

    wait_until(all_cards, timeout=120, interval=1, what="every built-in card to have a result")

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            errors: list[str] = []
            page = open_page(browser, f"{base}/?token=reader", errors)
            page.wait_for_selector("#status.live", timeout=20_000)
            for card, (types, charts) in EXPECTED.items():
                section = page.locator(f'[data-card="{card}"]')
                section.wait_for(timeout=20_000)
                drawn = set(section.locator("[data-widget]").evaluate_all(
                    "nodes => nodes.map(n => n.dataset.widget)"))
                assert types <= drawn, (card, drawn)
                if charts:
                    page.wait_for_function(
                        f"document.querySelectorAll('[data-card=\"{card}\"] canvas[data-drawn]').length"
                        f" >= {charts}", timeout=10_000)
                assert section.locator(".error").count() == 0, section.inner_text()
                # Freshness: what the result includes, and no "incomplete" once every partition is in.
                assert "includes events up to" in section.locator(".fresh").inner_text()
                assert section.locator(".incomplete").count() == 0
            assert not errors, errors

            dau = page.locator('[data-card="active-users"] [data-widget="number"] .value').first
            before = int(dau.get_attribute("data-value") or "0")
            page.evaluate("window.__noReload = true")
            status, _, body = http("POST", f"{base}/v1/events", body=json.dumps(
                {"uid": "brand-new-user", "event": "signup", "ts": int(time.time() * 1000)}).encode(),
                headers={"Authorization": "Bearer writer", "Content-Type": "application/json"})
            assert status == 202, body
            started = time.monotonic()
            page.wait_for_function(
                "v => Number(document.querySelector('[data-card=\"active-users\"] "
                "[data-widget=\"number\"] .value').dataset.value) === v", arg=before + 1, timeout=15_000)
            took = time.monotonic() - started
            assert page.evaluate("window.__noReload") is True, "the page reloaded"
            print(f"DAU went {before} -> {before + 1} on the page {took:.2f}s after the event was sent")

            # The README's picture is refreshed on request only (a test run leaves the tree clean).
            shots = DOCS if os.environ.get("CARDFLOW_UPDATE_SCREENSHOT") else tmp_path
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

            # A result that covers only some partitions (a new configuration on its way in) says so.
            publish_result(settings, {
                "card_id": "half-done", "card_version": "1", "title": "Half done", "summary": "",
                "widgets": json.dumps([{"type": "text", "text": "so far"}]),
                "generated_at": int(time.time() * 1000), "max_ts": 0, "offsets": {"0": 3},
                "run_ms": 1.0, "error": None, "config": "abc",
                "complete": False, "partitions": 1})
            note = page.locator('[data-card="half-done"] .incomplete')
            note.wait_for(timeout=15_000)
            assert "incomplete: 1 partition(s)" in note.inner_text()
        finally:
            browser.close()
