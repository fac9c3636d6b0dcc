"""A fresh `cardflow dev`: history first, so every built-in card shows something meaningful on
first load, and the Map widget draws country shapes (the screenshot in docs/)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cardflow.config import Settings
from cardflow.local_kafka import free_port

from ..helpers import http, wait_until
from .test_dashboard import DOCS, EXPECTED, launch, open_page


def meaningful(card: dict[str, Any]) -> bool:
    """The card's widgets hold data, not zeros or empty tables."""
    if card["error"] or not card["widgets"]:
        return False
    w = card["widgets"]
    match card["id"]:
        case "active-users":
            series = w[1]["series"]["DAU"]
            return w[0]["children"][2]["value"] > 0 and len({v for _, v in series}) > 3  # MAU; a curve
        case "retention":
            return sum(1 for row in w[0]["rows"] if row["size"] and row["cells"][1:] and row["cells"][1]) >= 7
        case "funnel":
            return w[0]["steps"][0][1] > 0 and w[0]["steps"][-1][1] > 0
        case "users-by-country":
            return len(w[0]["values"]) >= 5
        case "top-events":
            return len(w[0]["data"]) >= 4
        case "recent-users":
            return len(w[0]["users"]) >= 5
    return True


def test_a_fresh_dev_shows_every_card_with_data_and_a_map(settings: Settings, service,
                                                          tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    # The session's broker, as an existing cluster: dev starts no broker of its own.
    settings = settings.replace(kafka_port=free_port(), kafka_controller_port=free_port(),
                                worker_urls=(f"http://127.0.0.1:{settings.worker_web_port}",),
                                card_params={"funnel": {"steps": ["signup", "page_view", "purchase"]}})
    started = time.monotonic()
    dev = service(["dev", "--rate", "5", "--history", "60"], settings)
    base = f"http://127.0.0.1:{settings.api_port}"

    def shown() -> bool:
        assert dev.proc.poll() is None, dev.output()[-3000:]
        try:
            status, _, body = http("GET", f"{base}/v1/cards", timeout=5)
        except OSError:
            return False
        cards = {c["id"]: c for c in body.get("cards", [])} if status == 200 else {}
        return set(EXPECTED) <= {card_id for card_id, c in cards.items() if meaningful(c)}

    wait_until(shown, timeout=180, interval=1, what="every built-in card to show data")
    print(f"every built-in card showed data {time.monotonic() - started:.1f}s after `cardflow dev` started")
    assert "history: " in dev.output() and "events over 60 days" in dev.output()

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            errors: list[str] = []
            page = open_page(browser, f"{base}/", errors)
            page.wait_for_selector("#status.live", timeout=20_000)
            shapes = page.locator('[data-card="users-by-country"] .geo canvas[data-drawn]')
            shapes.wait_for(state="attached", timeout=20_000)
            assert int(shapes.get_attribute("data-drawn") or "0") >= 5  # countries filled on the map
            page.wait_for_timeout(500)
            shots = DOCS if os.environ.get("CARDFLOW_UPDATE_SCREENSHOT") else tmp_path
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
            assert "null" not in page.locator('[data-card="active-users"]').inner_text().split("\n")
            assert not errors, errors
        finally:
            browser.close()
