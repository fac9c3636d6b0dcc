"""Lake backends for tests: a local directory, and moto's S3 HTTP server (started per test)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cardflow.config import Settings
from cardflow.connectors.lake import DataLake, open_lake
from cardflow.connectors.lake_objects import Archived, decode, parse_name
from cardflow.local_kafka import free_port

BUCKET = "cardflow-lake"


class MotoS3:
    """moto's S3 server in this process, on a loopback port; its state survives a stop and start
    (moto keeps it in this process), like a real endpoint that went away and came back."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._cls = ThreadedMotoServer
        self.server: Any = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Backend:
    name: str
    settings: Settings
    moto: MotoS3 | None = None

    def lake(self) -> DataLake:
        s = self.settings
        return open_lake(s.effective_lake_url, s.lake_endpoint_url, s.lake_region, s.lake_multipart_bytes)


def make_backend(name: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    if name == "local":
        return Backend(name, settings.replace(lake_url=(tmp_path / "lake").resolve().as_uri()))
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    moto = MotoS3()
    boto3.client("s3", endpoint_url=moto.url).create_bucket(Bucket=BUCKET)
    return Backend(name, settings.replace(lake_url=f"s3://{BUCKET}/archive", lake_endpoint_url=moto.url,
                                          lake_region="us-east-1"), moto)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    made = make_backend(request.param, settings, tmp_path, monkeypatch)
    yield made
    if made.moto is not None:
        made.moto.stop()


def walk(lake: DataLake, topic: str) -> tuple[dict[int, dict[int, Archived]], list[str]]:
    """Every archived record of ``topic`` by partition and offset, and what was wrong: an offset
    in two objects, an object whose name does not match its records."""
    found: dict[int, dict[int, Archived]] = defaultdict(dict)
    problems: list[str] = []
    for obj in lake.list(f"topic={topic}/"):
        name = parse_name(obj.key)
        assert name is not None, obj.key
        records = decode(obj.key, lake.get(obj.key))
        if records[0].offset != name.first_offset:
            problems.append(f"{obj.key} starts at {records[0].offset}")
        for record in records:
            if record.offset in found[record.partition]:
                problems.append(f"{topic}[{record.partition}]@{record.offset} twice (again in {obj.key})")
            found[record.partition][record.offset] = record
    return found, problems
