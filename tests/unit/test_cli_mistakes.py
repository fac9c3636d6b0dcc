"""Every command, given a user's mistake, ends with one message (``Error: …``) and a non-zero exit
code, not a traceback: the real `cardflow` executable, as a user runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cardflow.local_kafka import free_port

pytestmark = pytest.mark.unit

EVERY_COMMAND = [
    ["kafka", "fetch"], ["kafka", "start"], ["kafka", "stop"], ["kafka", "status"],
    ["topics", "create"], ["dlq", "count"], ["dlq", "show"], ["dlq", "replay"],
    ["worker", "people"], ["api"], ["dev"],
]
UNREACHABLE = {"CARDFLOW_KAFKA_ADMIN_TIMEOUT_MS": "1500"}  # and a broker address nothing listens on


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CARDFLOW_")}
    base.update(CARDFLOW_DATA_DIR=str(tmp_path / "data"), CARDFLOW_BROKER=f"127.0.0.1:{free_port()}",
                CARDFLOW_WORKER_WEB_PORT=str(free_port()), CARDFLOW_API_PORT=str(free_port()))
    base.update(env)
    return subprocess.run([sys.executable, "-m", "cardflow", *args], env=base, capture_output=True,
                          text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[str], *expected: str, logs: bool = False) -> None:
    """``logs``: a service that logged as it started may have written lines before the error."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [n for n, line in enumerate(lines) if line.startswith("Error: ")]
    assert len(errors) == 1 and (logs or errors == [0]), result.stderr
    # One message: a line, or a heading and one indented line per bad setting.
    assert all(line.startswith("  ") for line in lines[errors[0] + 1:]), result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_a_bad_setting(command: list[str], tmp_path: Path) -> None:
    one_line_error(run(command, tmp_path, CARDFLOW_PARTITIONS="eight"), "CARDFLOW_PARTITIONS")


@pytest.mark.parametrize("command", [["topics", "create"], ["dlq", "count"], ["dlq", "show"],
                                     ["dlq", "replay"], ["worker", "people"]], ids=" ".join)
def test_an_unreachable_broker(command: list[str], tmp_path: Path) -> None:
    one_line_error(run(command, tmp_path, **UNREACHABLE), "cannot reach Kafka at 127.0.0.1:",
                   "CARDFLOW_BROKER")


@pytest.mark.parametrize("command", [["worker", "people"], ["dev"]], ids=" ".join)
def test_a_bad_card_module(command: list[str], tmp_path: Path) -> None:
    one_line_error(run(command, tmp_path, CARDFLOW_CARDS="no_such_cards_module", **UNREACHABLE),
                   "no_such_cards_module")


@pytest.mark.parametrize("command", [["worker", "people"], ["dev"]], ids=" ".join)
def test_a_missing_profile_script_module(command: list[str], tmp_path: Path) -> None:
    one_line_error(run(command, tmp_path, CARDFLOW_PROFILE_SCRIPTS="no_such.scripts", **UNREACHABLE),
                   "no_such.scripts")


def test_an_api_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(run(["api"], tmp_path, CARDFLOW_API_PORT=str(port)), f"127.0.0.1:{port}",
                       "CARDFLOW_API_PORT", logs=True)


def test_cards_using_each_other_are_refused_at_start(tmp_path: Path) -> None:
    one_line_error(run(["worker", "people"], tmp_path, CARDFLOW_CARDS="tests.integration.cycle_cards",
                       **UNREACHABLE), "cycle: chicken → egg → chicken")
