"""Shared fixtures. Integration tests get a real Kafka broker started here, once per session."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cardflow.config import Settings, load_settings
from cardflow.local_kafka import LocalKafka, free_port

from .helpers import Service

_prefixes = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Markers follow the folder, so `pytest -m unit` needs no per-test decoration.
    for item in items:
        for kind in ("unit", "integration", "e2e", "browser"):
            if f"{os.sep}{kind}{os.sep}" in str(item.fspath):
                item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real single-node Kafka broker on free loopback ports, stopped after the session."""
    port = free_port()
    settings = load_settings(
        env={}, data_dir=tmp_path_factory.mktemp("kafka"), kafka_port=port,
        kafka_controller_port=free_port(), broker=f"127.0.0.1:{port}",
    )
    broker = LocalKafka(settings)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def settings(kafka: LocalKafka, tmp_path: Path) -> Settings:
    """Settings for one test: the session broker, its own topic prefix and data directory."""
    return load_settings(
        env={}, broker=kafka.bootstrap, partitions=4, data_dir=tmp_path / "data",
        topic_prefix=f"t{next(_prefixes)}-{os.getpid()}-", worker_web_port=free_port(),
        api_port=free_port(), kafka_port=kafka.port, kafka_controller_port=kafka.controller_port,
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator:
    """Start cardflow commands as processes; all are stopped when the test ends."""
    started: list[Service] = []

    def start(args: list[str], settings: Settings) -> Service:
        svc = Service(args, settings, tmp_path / f"{'-'.join(args)}-{len(started)}.log")
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real Redis server (Debian's redis-server) on a free loopback port, for bitmapist."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; `make test` installs it (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def chdb_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The test process's one embedded chDB (chDB keeps one engine per process): modules share it,
    each in a database of its own."""
    from cardflow.connectors.warehouse import ChdbWarehouse

    made = ChdbWarehouse(tmp_path_factory.mktemp("chdb"), "cardflow_test")
    yield made
    made.close()


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ClickHouse HTTP endpoint: CARDFLOW_TEST_CLICKHOUSE_URL when set (a real server), else the
    test-only adapter serving ClickHouse's HTTP interface from chDB in a process of its own."""
    url = os.environ.get("CARDFLOW_TEST_CLICKHOUSE_URL")
    if url:
        yield url
        return
    import sys
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.clickhouse_http", "--port", str(port), "--path",
                             str(tmp_path_factory.mktemp("clickhouse-http"))],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the ClickHouse HTTP adapter (tests/clickhouse_http.py) did not start")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
