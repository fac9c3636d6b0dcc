"""Test helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cardflow.config import Settings

T = TypeVar("T")


class Service:
    """A cardflow command run as a child process, its output kept in a log file."""

    def __init__(self, args: list[str], settings: Settings, log: Path) -> None:
        self.log = log
        env = {**os.environ, **settings.to_env()}
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cardflow", *args], env=env, stdout=self._out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, grace: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def wait_until(
    predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.2, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, dict[str, str], Any]:
    """One HTTP request; returns (status, headers, parsed JSON body or text)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, head, json.loads(raw)
    except ValueError:
        return status, head, raw.decode(errors="replace")


def start_api(service: Callable[..., Service], settings: Settings) -> str:
    """Start `cardflow api` and wait until it answers; returns its base URL."""
    api = service(["api"], settings)
    base = f"http://127.0.0.1:{settings.api_port}"

    def up() -> bool:
        assert api.proc.poll() is None, api.output()[-3000:]
        try:
            return http("GET", f"{base}/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    wait_until(up, timeout=60, what="the API to answer /healthz")
    return base


def consume_all(settings: Settings, topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
    """Read ``expected`` messages from the start of ``topic`` (all partitions)."""
    from confluent_kafka import Consumer

    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"reader-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([settings.topic(topic)])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                messages.append(msg)
        # A short grace read catches extras (duplicates) beyond the expected count.
        extra_deadline = time.monotonic() + 1.5
        while time.monotonic() < extra_deadline:
            msg = consumer.poll(0.3)
            if msg is not None and msg.error() is None:
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def profile_change(message: Any) -> dict[str, Any]:
    """A profile-changes record, decoded."""
    from cardflow.codec import AvroCodec

    return AvroCodec.named("ProfileChange").decode(message.value())


def read_table(settings: Settings, table: str = "profiles", app: str = "people") -> dict[str, dict[str, Any]]:
    """The latest value of every key of a Faust table, read from its changelog topic."""
    from cardflow.connectors.kafka_read import read_topic
    from cardflow.profile_values import decode_value

    topic = f"{settings.topic_prefix}{app}-{table}-changelog"
    latest: dict[str, dict[str, Any]] = {}
    try:
        for msg in read_topic(settings, topic, f"table-{time.monotonic_ns()}"):
            if msg.value() is None:
                latest.pop(msg.key().decode(), None)
            else:
                latest[msg.key().decode()] = decode_value(msg.value())
    except RuntimeError as exc:
        if "Unknown topic" not in str(exc):
            raise
        return {}  # the worker has not created its changelog yet
    return latest
