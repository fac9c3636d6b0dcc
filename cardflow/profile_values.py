"""The stored form of a profile: what the profiles table (RocksDB and its changelog) holds.

A header (the profile JSON's length, the last folded offset, the latest event time), the
profile's JSON, then the bookkeeping's JSON (last offset, version, max_ts, recent event ids;
see cardflow/dedup.py), so readers (the card maps) get the profile and watermark without
parsing the larger dedup ids.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson


def new_value() -> dict[str, Any]:
    return {"profile": {}, "meta": {"offset": -1, "ids": {}, "version": 0, "max_ts": 0}}


_HEADER = struct.Struct(">Iqq")  # profile JSON length, last folded offset, max event time


def encode_value(value: dict[str, Any]) -> bytes:
    """The stored form: a header (profile length and the watermark), the profile's JSON, then
    the bookkeeping's JSON, so readers (cards) get the profile and watermark without parsing
    the (larger) dedup ids."""
    profile = orjson.dumps(value["profile"])
    meta = value["meta"]
    return (_HEADER.pack(len(profile), meta["offset"], meta["max_ts"]) + profile
            + orjson.dumps(meta, option=orjson.OPT_SORT_KEYS))  # sorted: the id buckets' days


def profile_json_of(stored: bytes) -> bytes:
    """The profile's JSON inside a stored value."""
    return stored[_HEADER.size:_HEADER.size + _HEADER.unpack_from(stored)[0]]


def decode_profile(stored: bytes) -> dict[str, Any]:
    profile: dict[str, Any] = orjson.loads(profile_json_of(stored))
    return profile


def decode_watermark(stored: bytes) -> tuple[int, int]:
    """``(offset, max_ts)``: the last events offset folded into this profile and its latest event time."""
    _, offset, max_ts = _HEADER.unpack_from(stored)
    return offset, max_ts


def split_value(stored: bytes | None) -> tuple[dict[str, Any], bytes | None]:
    """A stored value decoded, with its profile's JSON (what the profile was before a fold)."""
    if not stored:
        return new_value(), None
    profile_json = profile_json_of(stored)
    meta = orjson.loads(stored[_HEADER.size + len(profile_json):])
    return {"profile": orjson.loads(profile_json), "meta": meta}, profile_json


def decode_value(stored: bytes) -> dict[str, Any]:
    return split_value(stored)[0]
