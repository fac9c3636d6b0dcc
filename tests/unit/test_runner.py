"""The local card runner: `cardflow card run` and `cardflow card test` (no Kafka)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cardflow.cli import cli
from cardflow.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
BUYERS = ROOT / "examples" / "cards" / "buyers.py"  # the README's example card


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), obj=load_settings(env={}))
    return result.exit_code, result.output


def test_card_test_runs_the_examples(tmp_path: Path) -> None:
    assert invoke("card", "test", str(BUYERS)) == (0, "1 of 1 examples passed\n")
    (tmp_path / "wrong.py").write_text(
        "from cardflow.cards import Card\n"
        "from cardflow.widgets import Number\n"
        "class Wrong(Card):\n"
        "    def contribute(self, profile): return 1\n"
        "    def render(self, total): return [Number(total)]\n"
        "    def summary(self, total): return f'{total} users'\n"
        "    one = [{'uid': 'a', 'event': 'x', 'ts': 1767225600000}]\n"
        "    examples = [{'events': one, 'summary': '2 users'}, {'events': one, 'total': 1}]\n")
    code, output = invoke("card", "test", str(tmp_path / "wrong.py"))
    assert code == 1 and "FAIL wrong example 1: summary is '1 users', expected '2 users'" in output
    assert "1 of 2 examples passed" in output


def test_card_run_reports_bad_events_and_bad_params(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"uid": "a", "event": "purchase", "ts": 1767225600000}\n{"event": "no uid"}\n')
    code, output = invoke("card", "run", str(BUYERS), "--events", str(events))
    assert code == 0 and "1 events folded into 1 profiles; 1 left out:" in output
    assert "event 2: missing_uid" in output and "summary: 1 of the users bought" in output
    code, output = invoke("card", "run", "cardflow.builtin_cards:Retention", "--events", str(events),
                          "--params", '{"nope": 1}')
    assert code != 0 and "unknown parameter(s) ['nope']" in output


def test_the_dev_watcher_sees_cards_and_scripts_change(tmp_path: Path) -> None:
    import os

    from cardflow.dev import Watcher

    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "a.py").write_text("# a card\n")
    script = tmp_path / "scripts.py"
    script.write_text("# a script\n")
    settings = load_settings(env={}).replace(
        cards=(f"{cards}/", "cardflow.builtin_cards"),
        profile_scripts=(str(script), "tests.integration.fragile_scripts"))
    watcher = Watcher(settings)
    assert watcher.changed() == []
    os.utime(script, (1, 1))
    (cards / "b.py").write_text("# a new card\n")
    assert watcher.changed() == [cards / "b.py", script]
    (cards / "a.py").unlink()
    assert watcher.changed() == [cards / "a.py"] and watcher.changed() == []
    fragile = ROOT / "tests" / "integration" / "fragile_scripts.py"
    assert fragile in watcher.seen  # a module outside site-packages is watched by its file


def test_the_readme_walkthrough_files_are_the_readme_s_and_run() -> None:
    """`Writing analytics` in the README shows examples/analytics/*.py as they are, and they work."""
    import re

    readme = (ROOT / "README.md").read_text()
    for name in ("scripts.py", "cards.py", "views.py"):
        shown = re.search(rf"```python\n# examples/analytics/{name}\n(.*?)```", readme, re.S)
        assert shown is not None, name
        code = (ROOT / "examples" / "analytics" / name).read_text()
        squeeze = lambda text: [line.split("  #")[0].rstrip() for line in text.splitlines() if line.strip()]  # noqa: E731
        assert squeeze(shown[1]) == squeeze(code), name
    settings = load_settings(env={}).replace(
        profile_scripts=("cardflow.standard", str(ROOT / "examples" / "analytics" / "scripts.py")))
    result = CliRunner().invoke(cli, ["card", "test", str(ROOT / "examples" / "analytics" / "cards.py")],
                                obj=settings)
    assert (result.exit_code, result.output) == (0, "1 of 1 examples passed\n")
    result = CliRunner().invoke(cli, ["card", "run", str(ROOT / "examples" / "analytics" / "cards.py"),
                                      "--events", str(ROOT / "examples" / "events.jsonl")], obj=settings)
    assert result.exit_code == 0 and "summary: 6 repeat buyers" in result.output
    assert "406 events folded" in result.output  # the six derived repeat_buyer events folded too
    assert result.output.split("\n", 1)[1] in readme  # what the README says it prints
    from cardflow.views import load_views

    [orders] = load_views([str(ROOT / "examples" / "analytics" / "views.py")]).values()
    drawn = orders.widgets({"orders": {"count": 2, "spent": 30}}, "ann", {}, {})
    assert [n["value"] for n in drawn[0]["children"]] == [2, 30]
