"""Per-user views on the real broker: answered for known users with injected parameters, 404 for
unknown users and views; a failing view is its own error; a sample of profiles."""

from __future__ import annotations

import time

import pytest

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics

from ..helpers import http, start_api, wait_until
from .test_people import produce

pytestmark = pytest.mark.integration
VIEWS = ("cardflow.builtin_views", "tests.integration.views_extra")


def test_views_answer_for_known_users_and_404_otherwise(settings: Settings, service) -> None:
    settings = settings.replace(views=VIEWS, cards=("cardflow.builtin_cards:TopEvents",))
    ensure_topics(settings)
    service(["worker", "people"], settings)
    base = start_api(service, settings.replace(worker_urls=(f"http://127.0.0.1:{settings.worker_web_port}",)))
    now = int(time.time() * 1000)
    produce(settings, [{"uid": f"s{n % 7}", "event": "lesson_done" if n % 3 else "page_view", "ts": now - n}
                       for n in range(70)])
    wait_until(lambda: http("GET", f"{base}/v1/cards/top-events")[0] == 200, timeout=60, what="a card result")

    def progress() -> dict | None:
        status, _, body = http("GET", f"{base}/v1/users/s1/views/progress?goal=12")
        return body if status == 200 and body["widgets"][0]["value"] == 7 else None

    body = wait_until(progress, timeout=60, what="s1's progress view")
    assert body["title"] == "Lesson progress" and body["widgets"][0]["label"] == "lessons of 12"
    assert body["widgets"][1]["text"].startswith("s1; everyone: most frequent: lesson_done")
    status, _, body = http("GET", f"{base}/v1/users/nobody/views/progress")
    assert status == 404 and body["error"] == "not_found" and "no profile" in body["message"]
    status, _, body = http("GET", f"{base}/v1/users/s1/views/nope")
    assert status == 404 and "views: ['activity', 'broken', 'progress', 'properties']" in body["message"]
    status, _, body = http("GET", f"{base}/v1/users/s1/views/broken")
    assert status == 500 and body["error"] == "view 'broken' raised ValueError: this view always fails"
    status, _, body = http("GET", f"{base}/v1/users/s1/views")
    assert status == 200
    assert [v["name"] for v in body["views"]] == ["activity", "properties", "progress", "broken"]
    assert body["views"][0]["widgets"][0]["children"][0]["value"] == 10  # activity: s1's events
    status, _, body = http("GET", f"{base}/v1/profiles?sample=5")
    assert status == 200 and len(body["uids"]) == 5 and set(body["uids"]) <= {f"s{n}" for n in range(7)}
    assert http("GET", f"{base}/v1/profiles?sample=0")[0] == 400
