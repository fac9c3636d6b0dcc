"""The user page and the profiles browser in headless Chromium: look a user up from the
dashboard, see the profile and its views; open a user from the sample of profiles."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics

from ..helpers import http, start_api, wait_until
from ..integration.test_people import produce
from .test_dashboard import DOCS, launch, open_page


def test_user_page_shows_the_profile_and_views_and_the_browser_finds_users(settings: Settings, service,
                                                                            tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shots = DOCS if os.environ.get("CARDFLOW_UPDATE_SCREENSHOT") else tmp_path
    settings = settings.replace(views=("cardflow.builtin_views", "tests.integration.views_extra"),
                                cards=("cardflow.builtin_cards:TopEvents",))
    settings = settings.replace(worker_urls=(f"http://127.0.0.1:{settings.worker_web_port}",))
    ensure_topics(settings)
    service(["worker", "people"], settings)
    base = start_api(service, settings)
    now = int(time.time() * 1000)
    produce(settings, [{"uid": f"learner-{n % 5}", "event": "lesson_done" if n % 2 else "page_view",
                        "ts": now - n * 1000, "$set": {"plan": "pro"}} for n in range(40)])
    wait_until(lambda: http("GET", f"{base}/v1/profiles/learner-3")[0] == 200, timeout=60, what="a profile")

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            errors: list[str] = []
            page = open_page(browser, f"{base}/", errors)
            page.fill("#lookup-uid", "learner-3")
            page.click("#lookup button")
            page.wait_for_url("**/users/learner-3")
            page.wait_for_selector("#status.live", timeout=20_000)
            profile = page.locator("#profile-json").inner_text()
            assert '"lesson_done": 4' in profile and '"plan"' in profile
            progress = page.locator('[data-view="progress"]')
            assert progress.locator('[data-widget="number"] .value').get_attribute("data-value") == "4"
            assert "lessons of 10" in progress.inner_text()
            assert page.locator('[data-view="activity"] [data-widget="bar"]').count() == 1
            assert "always fails" in page.locator('[data-view="broken"] .error').inner_text()
            page.screenshot(path=str(shots / "user-page.png"), full_page=True)
            # The profiles browser: a sample of users, each opening its page.
            link = page.locator('#sample a', has_text="learner-1")
            link.wait_for(timeout=10_000)
            link.click()
            page.wait_for_url("**/users/learner-1")
            page.wait_for_function("document.querySelector('#profile-json').textContent.includes('lesson')")
            assert page.locator("#user-title").inner_text() == "learner-1"
            # An unknown user says so.
            page.goto(f"{base}/users/nobody-here")
            page.wait_for_selector("#status.down", timeout=10_000)
            assert "no profile" in page.locator("#profile-json").inner_text()
            assert not errors, errors
        finally:
            browser.close()
    assert Path(shots / "user-page.png").stat().st_size > 10_000
