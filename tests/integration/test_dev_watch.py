"""`cardflow dev --watch`: editing a card reloads it without restarting the broker or the API; a
broken edit waits for the next one instead of stopping everything."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cardflow.config import Settings
from cardflow.local_kafka import free_port

from ..helpers import http, wait_until

pytestmark = pytest.mark.integration
CARD = '''
from cardflow.cards import Card
from cardflow.widgets import Number


class Watched(Card):
    debounce = 0.2

    def contribute(self, profile):
        return 1

    def render(self, total):
        return [Number(total or 0)]

    def summary(self, total):
        return "{version}: %d users" % (total or 0)
'''


def test_dev_watch_reloads_an_edited_card(settings: Settings, service, tmp_path: Path) -> None:
    cards = tmp_path / "cards"
    cards.mkdir()
    card = cards / "watched.py"
    card.write_text(CARD.replace("{version}", "v1"))
    # The session's broker as an existing cluster (dev starts none); the card directory watched.
    settings = settings.replace(kafka_port=free_port(), kafka_controller_port=free_port(),
                                worker_urls=(f"http://127.0.0.1:{settings.worker_web_port}",),
                                cards=(f"{cards}/",))
    dev = service(["dev", "--rate", "5", "--history", "0", "--watch"], settings)
    base = f"http://127.0.0.1:{settings.api_port}"

    def summary(prefix: str) -> bool:
        assert dev.proc.poll() is None, dev.output()[-3000:]
        try:
            status, _, body = http("GET", f"{base}/v1/cards/watched", timeout=5)
        except OSError:
            return False
        return status == 200 and body["summary"].startswith(prefix)

    wait_until(lambda: summary("v1:"), timeout=120, interval=1, what="the card's first version")
    started = [line for line in dev.output().splitlines() if "Dashboard:" in line]
    time.sleep(1.1)  # a new modification time
    card.write_text(CARD.replace("{version}", "v2"))
    wait_until(lambda: summary("v2:"), timeout=120, interval=1, what="the edited card")
    assert "restarting the people worker" in dev.output()
    time.sleep(1.1)
    card.write_text("this is not Python\n")
    wait_until(lambda: "waiting for a change to try again" in dev.output(), timeout=60,
               what="dev to report the broken card and wait")
    time.sleep(1.1)
    card.write_text(CARD.replace("{version}", "v3"))
    wait_until(lambda: summary("v3:"), timeout=120, interval=1, what="the fixed card")
    assert dev.proc.poll() is None
    # Started once: the broker, topics and API stayed; only the people worker restarted.
    assert [line for line in dev.output().splitlines() if "Dashboard:" in line] == started
