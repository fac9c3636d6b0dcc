from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from cardflow.config import load_settings
from cardflow.local_kafka import LocalKafka, free_port


def _java_processes_for(state: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"kafka.Kafka" in cmdline and str(state).encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def test_cli_start_status_stop_leaves_no_process(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "CARDFLOW_DATA_DIR": str(tmp_path), "CARDFLOW_KAFKA_PORT": str(port),
           "CARDFLOW_KAFKA_CONTROLLER_PORT": str(free_port())}
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "cardflow", "kafka", *args], env=env, capture_output=True,
        text=True, timeout=180,
    )
    started = run("start")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().endswith(f"127.0.0.1:{port}")
    meta = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
    assert len(meta.brokers) == 1

    status = run("status")
    assert status.returncode == 0 and "running (pid" in status.stdout
    assert run("start").returncode == 0, "a second start must find the running broker"
    assert len(_java_processes_for(tmp_path / "kafka")) == 1

    stopped = run("stop")
    assert stopped.returncode == 0 and "Kafka stopped" in stopped.stdout
    assert _java_processes_for(tmp_path / "kafka") == []
    again = run("stop")
    assert again.returncode == 0 and "was not running" in again.stdout
    status = run("status")
    assert status.returncode == 3 and "not running" in status.stdout
    assert "broker.log" in status.stdout and (tmp_path / "kafka" / "broker.log").stat().st_size > 0


def test_restart_keeps_data(tmp_path: Path) -> None:
    """A second broker on its own data dir formats once, and restarts on the same storage."""
    settings = load_settings(env={}, data_dir=tmp_path, kafka_port=free_port(),
                             kafka_controller_port=free_port())
    broker = LocalKafka(settings)
    try:
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("kept", 2, 1)])["kept"].result()
        broker.stop()
        broker.start()
        meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
        assert "kept" in meta.topics and len(meta.topics["kept"].partitions) == 2
    finally:
        broker.stop()
    assert _java_processes_for(broker.state) == []
