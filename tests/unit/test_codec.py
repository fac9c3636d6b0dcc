from __future__ import annotations

import copy

import pytest

from cardflow.codec import MARKER, AvroCodec, AvroError, load_schema, schema_fingerprint

SCHEMAS = ["Event", "DeadLetter", "ProfileChange", "CardPartial", "CardResult"]


def test_fingerprint_matches_the_avro_spec_vector() -> None:
    # From the Avro spec's test data: "int" has CRC-64-AVRO 0x7275d51a3f395c8f, little-endian on the wire.
    assert schema_fingerprint("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_schema_loads(name: str) -> None:
    codec = AvroCodec.named(name)
    assert codec.fingerprint and load_schema(name)["name"] == name


def _v1_and_v2() -> tuple[dict, dict]:
    v2 = load_schema("ProfileChange.v1")  # a fixed sample: the shipped schema moves on
    v1 = copy.deepcopy(v2)
    v1["fields"] = [f for f in v1["fields"] if f["name"] != "partition"]
    v2 = copy.deepcopy(v2)
    v2["fields"][-1]["default"] = -1
    return v1, v2


def test_new_reader_reads_old_writer() -> None:
    v1, v2 = _v1_and_v2()
    old = AvroCodec(v1).encode({"uid": "u", "version": 3, "changed": ["a"], "max_ts": 5})
    assert old[:2] == MARKER
    record = AvroCodec(v2, writers=(v1,)).decode(old)
    assert record == {"uid": "u", "version": 3, "changed": ["a"], "max_ts": 5, "partition": -1}


def test_old_reader_reads_new_writer() -> None:
    v1, v2 = _v1_and_v2()
    new = AvroCodec(v2).encode({"uid": "u", "version": 3, "changed": [], "max_ts": 5, "partition": 7})
    assert AvroCodec(v1, writers=(v2,)).decode(new) == {"uid": "u", "version": 3, "changed": [], "max_ts": 5}


def test_unknown_writer_and_garbage_are_errors() -> None:
    v1, v2 = _v1_and_v2()
    new = AvroCodec(v2).encode({"uid": "u", "version": 3, "changed": [], "max_ts": 5, "partition": 7})
    with pytest.raises(AvroError, match="unknown writer schema fingerprint"):
        AvroCodec(v1).decode(new)
    with pytest.raises(AvroError, match="no C3 01 marker"):
        AvroCodec(v1).decode(b'{"uid": "u"}')
    with pytest.raises(AvroError, match="trailing bytes"):
        AvroCodec(v2).decode(new + b"\x00")
