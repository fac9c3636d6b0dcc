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
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fastavro
import orjson
from fastavro.read import HEADER_SCHEMA

from cardflow.codec import avro_long, load_schema
from cardflow.errors import ConfigError, CorruptObject

SCHEMA = fastavro.parse_schema(load_schema("ArchivedRecord"))
SCHEMA_JSON = json.dumps(load_schema("ArchivedRecord"), separators=(",", ":")).encode()
BLOCK_BYTES = 64 * 1024  # uncompressed bytes of records per Avro block
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


def encode(key: str, records: Sequence[Any], fmt: str, codec: str = "deflate") -> bytes:
    """The object ``key`` holding ``records`` (one partition's, in offset order): ``Archived``, or
    any records with their fields (``offset``, ``timestamp``, ``timestamp_type``, ``key``,
    ``value``, ``headers``; aiokafka's, as the archive worker has them), the topic and partition
    being the key's."""
    name = parse_name(key)
    if name is None:
        raise ValueError(f"{key!r} is not an archive object's name")
    first, last = records[0].offset, records[-1].offset
    if fmt == "avro":
        meta = {"cardflow.first_offset": str(first), "cardflow.last_offset": str(last),
                "cardflow.count": str(len(records))}
        topic = name.topic.encode()
        prefix = avro_long(len(topic)) + topic + avro_long(name.partition)
        return container(key, (record_bytes(r, prefix) for r in records), codec, meta)
    lines = b"".join(orjson.dumps(_json(r, name.topic, name.partition)) + b"\n" for r in records)
    out = io.BytesIO()
    # The header's file name carries the offsets and count; mtime 0: the same records, the same bytes.
    header = f"{first}-{last}-{len(records)}.jsonl"
    with gzip.GzipFile(filename=header, mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(lines)
    return out.getvalue()


def record_bytes(r: Archived, prefix: bytes | None = None) -> bytes:
    """One ArchivedRecord in Avro's binary encoding, as fastavro writes it (a unit test checks), at
    a fraction of its cost (fastavro's writer was 45 % of the archive worker's time). ``prefix``:
    the encoded topic and partition, the same for every record of an object."""
    if prefix is None:
        topic = r.topic.encode()
        prefix = avro_long(len(topic)) + topic + avro_long(r.partition)
    key, value = r.key, r.value
    out = (prefix + avro_long(r.offset) + avro_long(r.timestamp) + (b"\x02" if r.timestamp_type else b"\x00")
           + (b"\x00" if key is None else b"\x02" + avro_long(len(key)) + key)
           + (b"\x00" if value is None else b"\x02" + avro_long(len(value)) + value))
    if not r.headers:
        return out + b"\x00"
    parts = [out, avro_long(len(r.headers))]
    for name, data in r.headers:
        raw = name.encode()
        parts += (avro_long(len(raw)), raw)
        parts += (b"\x00",) if data is None else (b"\x02", avro_long(len(data)), data)
    parts.append(b"\x00")
    return b"".join(parts)


def container(key: str, encoded: Iterator[bytes], codec: str, meta: dict[str, str]) -> bytes:
    """An Avro object container file of already encoded records: the header (schema, codec,
    ``meta``, a sync marker derived from ``key``), then blocks of about BLOCK_BYTES."""
    sync = hashlib.blake2b(key.encode(), digest_size=16).digest()
    entries = {"avro.schema": SCHEMA_JSON, "avro.codec": codec.encode(),
               **{k: v.encode() for k, v in meta.items()}}
    out = [b"Obj\x01", avro_long(len(entries))]
    for name, value in entries.items():
        out += (avro_long(len(name)), name.encode(), avro_long(len(value)), value)
    out += (b"\x00", sync)
    block: list[bytes] = []
    size = 0
    for item in encoded:
        block.append(item)
        size += len(item)
        if size >= BLOCK_BYTES:
            out.append(_block(block, codec, sync))
            block, size = [], 0
    if block:
        out.append(_block(block, codec, sync))
    return b"".join(out)


def _block(items: list[bytes], codec: str, sync: bytes) -> bytes:
    data = b"".join(items)
    if codec == "deflate":
        # Raw deflate, as Avro's spec says; level 1: 1 % larger than level 6 at half the time here.
        packer = zlib.compressobj(1, zlib.DEFLATED, -15)
        data = packer.compress(data) + packer.flush()
    return b"".join((avro_long(len(items)), avro_long(len(data)), data, sync))


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


def _json(r: Any, topic: str, partition: int) -> dict[str, Any]:
    out: dict[str, Any] = {"topic": topic, "partition": partition, "offset": r.offset,
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
