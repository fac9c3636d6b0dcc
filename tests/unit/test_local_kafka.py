from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import pytest

from cardflow.config import load_settings
from cardflow.local_kafka import BrokerError, LocalKafka, free_port


def _broker(tmp_path: Path, **overrides: object) -> LocalKafka:
    return LocalKafka(load_settings(env={}, data_dir=tmp_path / "data",
                                    cache_dir=tmp_path / "cache", **overrides))


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="java not found on PATH: Kafka needs Java 17"):
        _broker(tmp_path, kafka_port=free_port()).start()


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"mvn \(Apache Maven\) not found"):
        _broker(tmp_path).fetch()


def test_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        broker = _broker(tmp_path, kafka_port=port, kafka_controller_port=free_port())
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            broker.start()
    assert not broker.pid_file.exists()
    assert not broker.status().running


def test_corrupt_cache_is_detected(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    assert broker.cache_problem() == "not fetched"
    broker.libs.mkdir(parents=True)
    with zipfile.ZipFile(broker.libs / "a.jar", "w") as jar:
        jar.writestr("x", "y")
    (broker.libs / "b.jar").write_bytes(b"truncated download")
    (broker.libs / "MANIFEST.txt").write_text("a.jar\nb.jar\nc.jar\n")
    assert broker.cache_problem() == f"{broker.libs / 'b.jar'} is not a valid jar"
    (broker.libs / "MANIFEST.txt").write_text("a.jar\nc.jar\n")
    assert broker.cache_problem() == f"{broker.libs / 'c.jar'} is missing"
    (broker.libs / "MANIFEST.txt").write_text("a.jar\n")
    assert broker.cache_problem() is None


def test_stop_when_not_running_is_a_no_op(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    assert broker.stop() is False
    assert broker.stop() is False
    broker.state.mkdir(parents=True)
    broker.pid_file.write_text("1\n")  # pid 1 is not our broker: never signal it
    assert broker.stop() is False


def test_cluster_ids_never_look_like_options() -> None:
    from cardflow.local_kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]  # ~31 of 2000 random ids would start with "-"
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == 2000
