from __future__ import annotations

import json
import pickle

import pytest

from cardflow.events import (
    DEFAULT_MAPPING,
    Event,
    FieldMapping,
    Reason,
    Rejected,
    decode_event,
    decode_record,
    encode_avro,
    parse_ts,
)

NOW = 1_795_000_000_000  # 2026-11-18
TWITTER = FieldMapping(name="twitter", when="tweet", uid="tweet.user.id", event="=tweet",
                       ts="tweet.created_at", properties="tweet")


def _decode(obj: object, **kwargs: object) -> Event:
    return decode_event(json.dumps(obj).encode(), now_ms=NOW, **kwargs)  # type: ignore[arg-type]


def test_minimal_event_gets_a_deterministic_id() -> None:
    a = _decode({"uid": "u1", "event": "signup", "ts": "2026-11-01T10:00:00Z"})
    b = _decode({"event": "signup", "uid": "u1", "ts": 1_793_527_200})
    assert a == b
    assert a.ts == 1_793_527_200_000 and len(a.event_id) == 32
    assert a.event_id != _decode({"uid": "u1", "event": "signup", "ts": 1_793_527_201}).event_id


@pytest.mark.parametrize("mappings", [(DEFAULT_MAPPING,), (TWITTER, DEFAULT_MAPPING)])
def test_decoded_events_are_immutable_events_with_their_own_empty_fields(mappings: tuple) -> None:
    event = _decode({"uid": "u", "event": "e", "ts": NOW - 1, "event_id": "x", "$set": {"a": 1}},
                    mappings=mappings)
    assert type(event) is Event and event == Event("x", "u", "e", NOW - 1, set={"a": 1})
    assert event._asdict() == {"event_id": "x", "uid": "u", "event": "e", "ts": NOW - 1, "properties": {},
                               "set": {"a": 1}, "set_once": {}, "source": "default", "depth": 0}
    with pytest.raises(AttributeError):
        event.uid = "v"  # type: ignore[misc]
    made = Event("y", "u", "e", NOW)
    assert made.properties == {} and made.properties is not Event("z", "u", "e", NOW).properties
    assert pickle.loads(pickle.dumps(event)) == event


def test_envelope_decodes_to_itself() -> None:
    event = _decode({"uid": 42, "event": "buy", "ts": 1_793_527_200_123, "properties": {"n": 1},
                     "$set": {"plan": "team"}, "$set_once": {"first": "x"}, "source": "web"})
    assert event.uid == "42" and event.source == "web"
    assert decode_event(event.to_bytes(), now_ms=NOW) == event
    assert decode_record(encode_avro(event), now_ms=NOW) == event


def test_explicit_event_id_is_kept() -> None:
    assert _decode({"uid": "u", "event": "e", "ts": 1_793_527_200, "event_id": "abc"}).event_id == "abc"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-01T10:00:00Z", 1_793_527_200_000),
        ("2026-11-01T10:00:00", 1_793_527_200_000),
        ("2026-11-01T12:00:00+02:00", 1_793_527_200_000),
        ("2026-11-01T10:00:00.250Z", 1_793_527_200_250),
        ("2026-11-01", 1_793_491_200_000),
        (1_793_527_200, 1_793_527_200_000),
        (1_793_527_200.5, 1_793_527_200_500),
        (1_793_527_200_000, 1_793_527_200_000),
        ("1793527200", 1_793_527_200_000),
        ("Sun, 01 Nov 2026 10:00:00 +0000", 1_793_527_200_000),
        ("Sun Nov 01 10:00:00 +0000 2026", 1_793_527_200_000),
    ],
)
def test_timestamp_forms(value: object, expected: int) -> None:
    assert parse_ts(value, now_ms=NOW) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("yesterday", Reason.BAD_TIMESTAMP), (0, Reason.BAD_TIMESTAMP), (-5, Reason.BAD_TIMESTAMP),
        ("1970-01-01T00:00:00Z", Reason.BAD_TIMESTAMP), (True, Reason.BAD_TIMESTAMP),
        ({"t": 1}, Reason.BAD_TIMESTAMP), (float("inf"), Reason.BAD_TIMESTAMP),
        ("3000-01-01T00:00:00Z", Reason.FUTURE_TIMESTAMP), (NOW + 2 * 86_400_000, Reason.FUTURE_TIMESTAMP),
    ],
)
def test_bad_timestamps(value: object, reason: Reason) -> None:
    with pytest.raises(Rejected) as info:
        parse_ts(value, now_ms=NOW)
    assert info.value.reason is reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{", Reason.NOT_JSON), (b"{\"uid\":", Reason.NOT_JSON), (b"", Reason.NOT_JSON),
        (b'{"uid":"u","event":"e","ts":1793527200,"properties":{"x":NaN}}', Reason.NOT_JSON),
        (b"[1,2]", Reason.NOT_OBJECT), (b'"str"', Reason.NOT_OBJECT), (b"null", Reason.NOT_OBJECT),
        (b'{"event":"e","ts":1793527200}', Reason.MISSING_UID),
        (b'{"uid":"","event":"e","ts":1793527200}', Reason.MISSING_UID),
        (b'{"uid":"u","ts":1793527200}', Reason.MISSING_EVENT),
        (b'{"uid":"u","event":"e"}', Reason.MISSING_TS),
        (b'{"uid":["u"],"event":"e","ts":1793527200}', Reason.BAD_FIELD),
        (b'{"uid":"u","event":5,"ts":1793527200}', Reason.BAD_FIELD),
        (b'{"uid":"u","event":"e","ts":1793527200,"properties":[1]}', Reason.BAD_FIELD),
        (b'{"uid":"u","event":"e","ts":1793527200,"$set":"plan"}', Reason.BAD_FIELD),
        (b"\xc3\x01\x00\x00", Reason.BAD_AVRO),
    ],
)
def test_rejections_have_reasons(raw: bytes, reason: Reason) -> None:
    with pytest.raises(Rejected) as info:
        decode_record(raw, now_ms=NOW)
    assert info.value.reason is reason and info.value.message


def test_too_large() -> None:
    raw = json.dumps({"uid": "u", "event": "e", "ts": 1_793_527_200, "properties": {"x": "y" * 100}})
    with pytest.raises(Rejected, match="limit is 64") as info:
        decode_event(raw.encode(), max_event_bytes=64, now_ms=NOW)
    assert info.value.reason is Reason.TOO_LARGE


def test_self_describing_objects_with_a_mapping() -> None:
    tweet = {"tweet": {"user": {"id": 1234}, "created_at": "Sun Nov 01 10:00:00 +0000 2026",
                       "text": "hello"}}
    event = decode_event(json.dumps(tweet).encode(), (TWITTER, DEFAULT_MAPPING), now_ms=NOW)
    assert (event.uid, event.event, event.ts, event.source) == ("1234", "tweet", 1_793_527_200_000, "twitter")
    assert event.properties["text"] == "hello"
    plain = decode_event(b'{"uid":"u","event":"e","ts":1793527200}', (TWITTER, DEFAULT_MAPPING),
                         now_ms=NOW)
    assert plain.source == "default"


def test_truncated_avro_is_bad_avro() -> None:
    event = _decode({"uid": "u", "event": "e", "ts": 1_793_527_200})
    data = encode_avro(event)
    for cut in (3, 10, len(data) - 1):
        with pytest.raises(Rejected) as info:
            decode_record(data[:cut], now_ms=NOW)
        assert info.value.reason is Reason.BAD_AVRO
