"""Archive objects: the hand encoder writes what fastavro writes; objects round-trip; damage is
detected, never read as fewer records."""

from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardflow.connectors.lake_objects import (
    SCHEMA,
    Archived,
    _avro,
    decode,
    encode,
    object_key,
    parse_name,
    record_bytes,
    span,
)
from cardflow.errors import CorruptObject

pytestmark = pytest.mark.unit

maybe_bytes = st.none() | st.binary(max_size=300)
records = st.builds(
    Archived, topic=st.text(min_size=1, max_size=30).filter(lambda t: "+" not in t and "/" not in t),
    partition=st.integers(0, 2**31 - 1), offset=st.integers(0, 2**63 - 1),
    timestamp=st.integers(-(2**63), 2**63 - 1), timestamp_type=st.integers(0, 1), key=maybe_bytes,
    value=maybe_bytes, headers=st.lists(st.tuples(st.text(max_size=20), maybe_bytes), max_size=4))


@given(records)
@settings(max_examples=300)
def test_the_hand_encoder_writes_what_fastavro_writes(record: Archived) -> None:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, _avro(record))
    assert record_bytes(record) == out.getvalue()


@given(st.lists(records, min_size=1, max_size=50), st.sampled_from(["avro", "jsonl"]),
       st.sampled_from(["deflate", "null"]))
@settings(max_examples=60)
def test_objects_round_trip_and_say_their_span(batch: list[Archived], fmt: str, codec: str) -> None:
    batch = [Archived("events", 2, 100 + n, r.timestamp, r.timestamp_type, r.key, r.value, r.headers)
             for n, r in enumerate(batch)]
    key = object_key("events", 2, 100, 1_790_000_000_000, fmt)
    data = encode(key, batch, fmt, codec)
    assert data == encode(key, batch, fmt, codec)  # the same records, the same bytes
    assert decode(key, data) == batch
    assert span(key, data[:8192]) == (100, 99 + len(batch), len(batch))
    if fmt == "avro":
        assert len(list(fastavro.reader(io.BytesIO(data)))) == len(batch)  # any Avro reader reads it


def test_truncation_is_detected_not_read_short() -> None:
    batch = [Archived("events", 0, n, 1_790_000_000_000 + n, 0, b"k", b"v" * 5000) for n in range(100)]
    for fmt in ("avro", "jsonl"):
        key = object_key("events", 0, 0, batch[0].timestamp, fmt)
        data = encode(key, batch, fmt)
        for cut in (10, len(data) // 2, len(data) - 20):
            with pytest.raises(CorruptObject, match="events\\+0\\+"):
                decode(key, data[:cut])


def test_names_parse_back() -> None:
    key = object_key("t1-events", 7, 42, 1_790_000_000_000, "avro")
    assert key.startswith("topic=t1-events/dt=2026-09-21/hour=")
    name = parse_name(key)
    assert name is not None and (name.topic, name.partition, name.first_offset, name.format) == \
        ("t1-events", 7, 42, "avro")
    assert parse_name("topic=x/other.txt") is None
