"""Avro single-object encoding (the Avro spec's marker + CRC-64-AVRO fingerprint) on fastavro.

Every record is ``C3 01`` + the writer schema's 8-byte fingerprint + the
binary body. A reader resolves each record against the writer schema it
names, so a consumer on a newer schema reads records of older ones (fields
added with a default) and the other way round.

    >>> codec = AvroCodec.named("ProfileChange")
    >>> codec.decode(codec.encode({"uid": "u", "version": 1, "changed": [], "max_ts": 0,
    ...                            "partition": 0}))["uid"]
    'u'
"""

from __future__ import annotations

import io
import json
from functools import cache
from importlib import resources
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from cardflow.errors import AvroError

MARKER = b"\xc3\x01"
HEADER_BYTES = len(MARKER) + 8


def is_single_object(data: bytes | None) -> bool:
    return data is not None and data[:2] == MARKER


def schema_fingerprint(parsed: Any) -> bytes:
    """CRC-64-AVRO of the parsing canonical form, in the little-endian order the spec puts on the wire."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema from the shipped ``schemas/<name>.avsc``."""
    text = resources.files("cardflow.schemas").joinpath(f"{name}.avsc").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


class AvroCodec:
    """Encode with ``schema``; decode records written with it or with any of ``writers``."""

    def __init__(self, schema: dict[str, Any], writers: tuple[dict[str, Any], ...] = ()) -> None:
        self.schema = parse_schema(schema)
        self.fingerprint = schema_fingerprint(self.schema)
        self.header = MARKER + self.fingerprint  # what every record starts with
        self._writers = {self.fingerprint: self.schema}
        for writer in writers:
            parsed = parse_schema(writer)
            self._writers[schema_fingerprint(parsed)] = parsed

    @classmethod
    def named(cls, name: str) -> AvroCodec:
        """The shipped schema ``<name>.avsc``, reading records of its older versions too
        (``<name>.v1.avsc``, …: kept when a field is added, so old records stay readable)."""
        older = sorted(f.name.removesuffix(".avsc") for f in resources.files("cardflow.schemas").iterdir()
                       if f.name.startswith(f"{name}.v") and f.name.endswith(".avsc"))
        return cls(load_schema(name), tuple(load_schema(v) for v in older))

    def encode(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        schemaless_writer(out, self.schema, record)
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < HEADER_BYTES or data[:2] != MARKER:
            raise AvroError("not Avro single-object encoding (no C3 01 marker and fingerprint)")
        writer = self._writers.get(data[2:HEADER_BYTES])
        if writer is None:
            raise AvroError(f"unknown writer schema fingerprint {data[2:HEADER_BYTES].hex()}")
        body = io.BytesIO(data[HEADER_BYTES:])
        try:
            record: dict[str, Any] = schemaless_reader(body, writer, self.schema)  # type: ignore[assignment]
        except (EOFError, StopIteration, ValueError, IndexError, TypeError, UnicodeDecodeError) as exc:
            raise AvroError(f"truncated or corrupt Avro body: {type(exc).__name__}: {exc}") from None
        if body.read(1):
            raise AvroError("trailing bytes after the Avro record")
        return record


# --- hand encoding, for the few records written per record of a batch (tested against fastavro) ---


def _varint(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SHORT_VARINTS = [_varint(z) for z in range(1 << 14)]  # every one- and two-byte varint
_CONTINUED = [bytes(((z & 0x7F) | 0x80, (z >> 7) | 0x80)) for z in range(1 << 14)]  # 14 bits, more follow


def avro_long(n: int) -> bytes:
    """Avro's zig-zag varint, 14 bits a step (an event time takes three steps, not six)."""
    z = (n << 1) ^ (n >> 63)
    if z < 1 << 14:
        return _SHORT_VARINTS[z]
    out = b""
    while z >= 1 << 14:
        out += _CONTINUED[z & 0x3FFF]
        z >>= 14
    return out + _SHORT_VARINTS[z]
