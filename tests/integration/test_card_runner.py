"""`cardflow card run` prints the numbers the live card shows for the same events (real broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from cardflow.cli import cli
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics

from .. import cards_truth as truth
from ..helpers import wait_until
from .test_people import produce

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
README_CARD = ROOT / "examples" / "cards" / "buyers.py"
SAMPLE = ROOT / "examples" / "events.jsonl"
OTHERS = "cardflow.builtin_cards:TopEvents,cardflow.builtin_cards:UsersByProperty"


def printed(settings: Settings, path: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Each card's summary and widgets as `cardflow card run` prints them."""
    html = tmp_path / "preview.html"
    result = CliRunner().invoke(cli, ["card", "run", path, "--events", str(SAMPLE), "--html", str(html)],
                                obj=settings, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "window.CARDFLOW_PREVIEW" in html.read_text()  # drawn by the dashboard's own code
    cards: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for line in result.output.splitlines():
        if line.startswith("== "):
            current = cards[line.rsplit("(", 1)[1].rstrip(")")] = {"summary": "", "widgets": []}
        elif line.startswith("summary: "):
            current["summary"] = line.removeprefix("summary: ")
        elif line.startswith("{"):
            current["widgets"].append(orjson.loads(line))
    return cards


def test_the_runner_prints_what_the_live_cards_show(settings: Settings, service, tmp_path: Path) -> None:
    live = settings.replace(cards=(str(README_CARD), *OTHERS.split(",")))
    local = {**printed(live, str(README_CARD), tmp_path), **printed(live, OTHERS.split(",")[0], tmp_path),
             **printed(live, OTHERS.split(",")[1], tmp_path)}
    assert set(local) == {"buyers", "top-events", "users-by-country"}
    assert local["buyers"]["summary"] == "27 of the users bought"
    ensure_topics(live)
    worker = service(["worker", "people"], live)
    produce(live, [orjson.loads(line) for line in SAMPLE.read_text().splitlines() if line])

    def same() -> bool:
        assert worker.proc.poll() is None
        results = truth.read_results(live)
        shown = {card_id: {"summary": r["summary"], "widgets": truth.widgets(r)}
                 for card_id, r in results.items() if r["complete"]}
        return shown == local

    wait_until(same, timeout=120, what="the live cards to show what the runner printed")
