"""Archive objects: how a batch of one partition's records is laid out and encoded in the lake.

Layout (Hive-style, like the Kafka Connect S3 sink's):
``topic=<topic>/dt=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first offset, 20 digits>.<ext>``,
the date and hour from the first record's timestamp (UTC). An object's name is a
function of its first offset, and its first and last offsets are in its header (Avro
metadata; the gzip header's file name for JSON lines), so the archive, restarted after
a crash, finds the object it had written and carries on after it: never a second,
overlapping object.

Formats:
- ``avro``: an Avro object container file (``schemas/ArchivedRecord.avsc``), deflate by
  default, readable by ClickHouse, Spark, DuckDB or ``fastavro``; the sync marker is
  derived from the object's name, so the same records give the same bytes.
- ``jsonl``: gzip'd JSON lines for ``zcat | jq``: ``key``/``value`` as text when they
  are UTF-8, else ``key_b64``/``value_b64``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fastavro
import orjson
from fastavro.read import HEADER_SCHEMA

from cardflow.codec import load_schema
from cardflow.errors import ConfigError, CorruptObject

SCHEMA = fastavro.parse_schema(load_schema("ArchivedRecord"))
EXTENSIONS = {"avro": "avro", "jsonl": "jsonl.gz"}
CODECS = ("deflate", "null")
HEAD_BYTES = 8192  # enough for an object's header (schema and metadata)
_NAME = re.compile(
    r"(?:^|/)(?P<topic>[^/+]+)\+(?P<partition>\d+)\+(?P<first>\d{20})\.(?P<ext>avro|jsonl\.gz)$")


@dataclass
class Archived:
    """One Kafka record as the lake keeps it."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int = 0
    key: bytes | None = None
    value: bytes | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


@dataclass(frozen=True)
class ObjectName:
    topic: str
    partition: int
    first_offset: int
    format: str


def object_key(topic: str, partition: int, first_offset: int, first_timestamp: int, fmt: str) -> str:
    at = datetime.fromtimestamp(max(0, first_timestamp) / 1000, UTC)
    return (f"topic={topic}/dt={at:%Y-%m-%d}/hour={at:%H}/"
            f"{topic}+{partition}+{first_offset:020d}.{EXTENSIONS[fmt]}")


def parse_name(key: str) -> ObjectName | None:
    """What an object's key says (None: not an archive object's name)."""
    match = _NAME.search(key)
    if match is None:
        return None
    fmt = "avro" if match["ext"] == "avro" else "jsonl"
    return ObjectName(match["topic"], int(match["partition"]), int(match["first"]), fmt)


def check_format(fmt: str, codec: str) -> None:
    if fmt not in EXTENSIONS:
        raise ConfigError(f"archive_format {fmt!r}: use one of {sorted(EXTENSIONS)}")
    if codec not in CODECS:
        raise ConfigError(f"archive_codec {codec!r}: use one of {list(CODECS)}")


def encode(key: str, records: list[Archived], fmt: str, codec: str = "deflate") -> bytes:
    """The object holding ``records`` (one partition's, in offset order)."""
    first, last = records[0].offset, records[-1].offset
    if fmt == "avro":
        out = io.BytesIO()
        meta = {"cardflow.first_offset": str(first), "cardflow.last_offset": str(last),
                "cardflow.count": str(len(records))}
        fastavro.writer(out, SCHEMA, (_avro(r) for r in records), codec=codec, metadata=meta,
                        sync_marker=hashlib.blake2b(key.encode(), digest_size=16).digest())
        return out.getvalue()
    lines = b"".join(orjson.dumps(_json(r)) + b"\n" for r in records)
    out = io.BytesIO()
    # The header's file name carries the offsets and count; mtime 0: the same records, the same bytes.
    name = f"{first}-{last}-{len(records)}.jsonl"
    with gzip.GzipFile(filename=name, mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(lines)
    return out.getvalue()


def span(key: str, head: bytes) -> tuple[int, int, int]:
    """``(first offset, last offset, count)`` from an object's first bytes."""
    name = parse_name(key)
    try:
        if name is not None and name.format == "jsonl":
            if head[:3] != b"\x1f\x8b\x08" or not head[3] & 0x08:
                raise ValueError("no gzip header with a file name")
            end = head.index(b"\x00", 10)
            first, last, count = head[10:end].decode().removesuffix(".jsonl").split("-")
            return int(first), int(last), int(count)
        header: Any = fastavro.schemaless_reader(io.BytesIO(head), HEADER_SCHEMA, None)
        meta = header["meta"]
        return (int(meta["cardflow.first_offset"]), int(meta["cardflow.last_offset"]),
                int(meta["cardflow.count"]))
    except Exception as exc:  # noqa: BLE001 - whatever is wrong, the object is not readable as ours
        raise CorruptObject(f"{key}: no archive header ({type(exc).__name__}: {exc}); it is truncated or "
                            "not written by cardflow (replay --skip-corrupt leaves it out)") from exc


def decode(key: str, data: bytes) -> list[Archived]:
    """Every record of an object; CorruptObject when it is damaged, truncated or not ours."""
    name = parse_name(key)
    try:
        if name is not None and name.format == "jsonl":
            header_first, header_last, count = span(key, data[:HEAD_BYTES])
            records = [_from_json(orjson.loads(line)) for line in gzip.decompress(data).splitlines() if line]
        else:
            header_first, header_last, count = span(key, data[:HEAD_BYTES])
            records = [_from_avro(r) for r in fastavro.reader(io.BytesIO(data))]  # type: ignore[arg-type]
    except CorruptObject:
        raise
    except Exception as exc:  # noqa: BLE001 - see above
        raise CorruptObject(f"{key}: cannot be read ({type(exc).__name__}: {exc}); it is truncated or "
                            "damaged (replay --skip-corrupt leaves it out)") from exc
    if len(records) != count or (records and (records[0].offset, records[-1].offset)
                                 != (header_first, header_last)):
        raise CorruptObject(f"{key}: holds {len(records)} records, its header says {count} "
                            f"({header_first}..{header_last}); it is truncated (replay --skip-corrupt "
                            "leaves it out)")
    return records


def _avro(r: Archived) -> dict[str, Any]:
    return {"topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
            "timestamp_type": r.timestamp_type, "key": r.key, "value": r.value,
            "headers": [{"key": k, "value": v} for k, v in r.headers]}


def _from_avro(d: dict[str, Any]) -> Archived:
    return Archived(d["topic"], d["partition"], d["offset"], d["timestamp"], d["timestamp_type"],
                    d["key"], d["value"], [(h["key"], h["value"]) for h in d["headers"]])


def _text(prefix: str, data: bytes | None, out: dict[str, Any]) -> None:
    if data is None:
        out[prefix] = None
        return
    try:
        out[prefix] = data.decode()
    except UnicodeDecodeError:
        out[prefix + "_b64"] = base64.b64encode(data).decode()


def _json(r: Archived) -> dict[str, Any]:
    out: dict[str, Any] = {"topic": r.topic, "partition": r.partition, "offset": r.offset,
                           "timestamp": r.timestamp, "timestamp_type": r.timestamp_type}
    _text("key", r.key, out)
    _text("value", r.value, out)
    headers = []
    for k, v in r.headers:
        h: dict[str, Any] = {"key": k}
        _text("value", v, h)
        headers.append(h)
    out["headers"] = headers
    return out


def _bytes(d: dict[str, Any], name: str) -> bytes | None:
    if name + "_b64" in d:
        return base64.b64decode(d[name + "_b64"])
    text = d.get(name)
    return None if text is None else str(text).encode()


def _from_json(d: dict[str, Any]) -> Archived:
    headers = [(h["key"], _bytes(h, "value")) for h in d["headers"]]
    return Archived(d["topic"], d["partition"], d["offset"], d["timestamp"], d.get("timestamp_type", 0),
                    _bytes(d, "key"), _bytes(d, "value"), headers)
