"""The insights page in headless Chromium: a query built with its controls draws a chart and a
table equal to the API's answer; the page's link reproduces it; a bad query shows its error in place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.local_kafka import free_port
from tests import insights_truth as truth
from tests.helpers import http, start_api, wait_until
from tests.integration.test_people import produce
from tests.integration.test_warehouse_load import stats

from .test_dashboard import launch, open_page

pytestmark = pytest.mark.browser


def test_insights_page_draws_a_query_and_its_link_reproduces_it(settings: Settings, service) -> None:
    from playwright.sync_api import sync_playwright

    end = datetime.now(UTC).date()
    events, _ = truth.generate(120, 20, seed=5, end=end)
    port = free_port()
    s = settings.replace(api_tokens="reader:read", warehouse_worker_url=f"http://127.0.0.1:{port}")
    ensure_topics(s)
    produce(s, events)
    wh = s.replace(worker_web_port=port)
    service(["worker", "warehouse"], wh)
    base = start_api(service, s)
    wait_until(lambda: stats(wh).get("rows") == len(events), timeout=120, interval=1, what="events loaded")
    start = (end - timedelta(days=13)).isoformat()
    query = {
        "kind": "trend",
        "event": "purchase",
        "aggregation": "unique_users",
        "period": "day",
        "from": start,
        "to": end.isoformat(),
        "breakdown": {"property": "browser", "on": "event"},
        "filters": [{"property": "amount", "op": "gte", "value": 100, "on": "event"}],
    }
    status, _, answer = http(
        "POST",
        f"{base}/v1/query",
        orjson.dumps(query),
        headers={"Authorization": "Bearer reader", "Content-Type": "application/json"},
    )
    assert status == 200, answer
    assert sum(sum(s["values"]) for s in answer["series"]) > 0
    want = [
        [b[:10], *[str(s["values"][i]) for s in answer["series"]]] for i, b in enumerate(answer["buckets"])
    ]

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            errors: list[str] = []
            page = open_page(browser, f"{base}/insights?token=reader", errors)
            page.wait_for_selector("#status.live", timeout=20_000)
            page.select_option("#event", "purchase")  # the controls hold the warehouse's own names
            page.select_option("#aggregation", "unique_users")
            page.select_option("#period", "day")
            page.fill("#from", start)
            page.fill("#to", end.isoformat())
            page.select_option("#breakdown", "event:browser")
            page.click("#add-filter")
            page.fill("#filters .filter .property", "amount")
            page.select_option("#filters .filter .op", "gte")
            page.fill("#filters .filter .value", "100")
            page.click("#run")
            page.wait_for_selector("#chart[data-drawn]", timeout=20_000)
            assert page.get_attribute("#chart", "data-series") == str(len(answer["series"]))
            assert table(page) == want
            link = page.get_attribute("#share", "href")
            assert link and "token" not in link

            shared = open_page(browser, f"{link}&token=reader", errors)
            shared.wait_for_selector("#chart[data-drawn]", timeout=20_000)
            assert table(shared) == want
            assert shared.input_value("#event") == "purchase" and shared.input_value("#from") == start

            page.fill("#filters .filter .value", "true")  # gte true: refused, shown in place
            page.click("#run")
            page.wait_for_selector("#error:not([hidden])", timeout=10_000)
            assert "filters[0].value" in page.inner_text("#error")
            assert not errors, errors
        finally:
            browser.close()


def table(page) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all(
        "#table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
