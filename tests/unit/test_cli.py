from __future__ import annotations

import pytest
from click.testing import CliRunner

from cardflow.cli import cli

COMMANDS = [
    [], ["kafka"], ["kafka", "start"], ["kafka", "stop"], ["kafka", "status"], ["kafka", "fetch"],
    ["topics"], ["topics", "create"], ["worker"], ["api"], ["dev"],
    ["dlq"], ["dlq", "count"], ["dlq", "show"], ["dlq", "replay"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cardflow")
def test_every_command_explains_itself(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    summary = result.output.split("\n\n")[1].strip()
    assert len(summary) > 20, f"{command} has no real description: {summary!r}"


def test_bad_setting_is_a_clear_error_not_a_traceback() -> None:
    result = CliRunner().invoke(cli, ["topics", "create"], env={"CARDFLOW_PARTITIONS": "x"})
    assert result.exit_code == 1
    assert "CARDFLOW_PARTITIONS: Input should be a valid integer" in result.output
    assert "Traceback" not in result.output
