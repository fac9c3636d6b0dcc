"""Generated JSON through the decoder, the push-API body parser and the fold: an event or a
Rejected with a reason, never another exception, and the API and the worker agree."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardflow.agents.records import DEAD_LETTER
from cardflow.api.errors import ApiError
from cardflow.api.ingest import _gunzip, _items, _validate
from cardflow.events import Decoder, Event, Reason, Rejected, encode_avro
from cardflow.limits import check, loads
from cardflow.partitioning import partition_of as uid_partition
from cardflow.profile_values import decode_value, encode_value, new_value
from cardflow.profiles import ScriptSet, fold_value, profile_script
from cardflow.standard import standard

from .test_profile_folder import Record, folder, runs

NOW = 1_795_000_000_000
DECODER = Decoder(max_depth=16, max_uid_bytes=64, max_name_bytes=64)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(-(2**80), 2**80)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=30)
odd_text = st.text(st.characters(codec="utf-8"), max_size=80) | st.sampled_from(
    ["", " ", "\t", "\u00a0", "a\nb", "\u200b", "user-1", "x" * 70, "é" * 30, "🙂"])
ts_values = (st.integers(NOW - 10**11, NOW + 10**8) | st.sampled_from(
    ["2026-11-20T08:30:00Z", "soon", "", 0, -1, 1e30, True, "1795000000", [1]]))


def _deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@st.composite
def raw_events(draw: st.DrawFn) -> bytes:
    """An event's bytes: a mostly well-formed object with odd values in every field, sometimes
    nested past any limit (written by hand: json.dumps recurses) or with huge integers."""
    obj: dict[str, Any] = {}
    for field, values in (("uid", odd_text | st.integers(-(2**70), 2**70) | json_values),
                          ("event", odd_text | json_values), ("ts", ts_values),
                          ("event_id", st.text(max_size=20) | st.integers() | json_values),
                          ("properties", json_values), ("$set", json_values), ("$set_once", json_values)):
        if draw(st.booleans()):
            obj[field] = draw(values)
    raw = json.dumps(obj)
    if draw(st.integers(0, 5)) == 0:  # a deep value in a field
        field = draw(st.sampled_from(["properties", "$set", "extra"]))
        inner = _deep(draw(st.integers(1, 1100)))
        raw = raw[:-1] + ("," if obj else "") + f'"{field}":{{"deep":{inner}}}}}'
    return raw.encode()


def _worker(raw: bytes) -> Event | Rejected:
    try:
        return DECODER.record(raw, NOW)
    except Rejected as exc:
        return exc


def _api(body: bytes, content_type: str) -> list[tuple[Event, bytes] | Rejected]:
    try:
        items = _items(body, content_type, DECODER.max_depth)
    except ApiError:
        return []
    valid, rejected = _validate(items, DECODER, NOW)
    out: dict[int, tuple[Event, bytes] | Rejected] = {i: (e, p) for i, e, p in valid}
    out.update({r["index"]: Rejected(Reason(r["reason"]), r["message"]) for r in rejected})
    return [out[i] for i in sorted(out)]


@FAST
@given(raw_events())
def test_the_worker_decodes_or_rejects_and_the_api_agrees(raw: bytes) -> None:
    worker = _worker(raw)
    for body, kind in ((raw, "application/x-ndjson"), (b"[" + raw + b"]", "application/json")):
        api = _api(body, kind)
        if not api:  # the whole JSON body refused: only for what the worker refuses too
            assert isinstance(worker, Rejected), worker
            continue
        (verdict,) = api
        if isinstance(worker, Rejected):
            if worker.reason is Reason.MISSING_TS:
                continue  # the push API stamps the receive time
            assert isinstance(verdict, Rejected) and verdict.reason == worker.reason, (verdict, worker)
        else:
            assert not isinstance(verdict, Rejected), (verdict, worker)
            event, payload = verdict
            assert DECODER.record(payload, NOW) == event  # what the API stores, the worker folds


@FAST
@given(raw_events())
def test_accepted_events_fold_and_store(raw: bytes) -> None:
    event = _worker(raw)
    if isinstance(event, Rejected):
        return
    value = new_value()
    result = fold_value(value, None, [(event, 0)], (standard,), 7 * 86_400_000)
    assert result.folded == 1 and not result.failed
    assert decode_value(encode_value(result.value)) == result.value


@FAST
@given(st.integers(-(2**70), 2**70))
def test_integers_are_kept_exactly_or_rejected(number: int) -> None:
    raw = json.dumps({"uid": "u", "event": "e", "ts": NOW, "$set": {"n": number}}).encode()
    verdict = _worker(raw)
    if -(2**63) <= number < 2**64:
        assert isinstance(verdict, Event) and verdict.set["n"] == number and type(verdict.set["n"]) is int
    else:
        assert isinstance(verdict, Rejected) and verdict.reason is Reason.BAD_NUMBER


@pytest.mark.parametrize(("depth", "reason"), [(16, None), (17, Reason.TOO_DEEP), (1100, Reason.TOO_DEEP)])
def test_depth_limit_counts_the_event_object(depth: int, reason: Reason | None) -> None:
    # The event object is level 1, properties level 2: properties' value adds the rest.
    raw = f'{{"uid":"u","event":"e","ts":{NOW},"properties":{_deep(depth - 1)}}}'.encode()
    verdict = _worker(raw)
    assert (verdict.reason if isinstance(verdict, Rejected) else None) == reason


def test_avro_events_get_the_same_limits() -> None:
    deep = Event("i", "u", "e", NOW, properties=orjson.loads(_deep(20)))
    assert _worker(encode_avro(deep)).reason is Reason.TOO_DEEP  # type: ignore[union-attr]
    big = Event("i", "u", "e", NOW, set={"n": 2**70})
    assert _worker(encode_avro(big)).reason is Reason.BAD_NUMBER  # type: ignore[union-attr]
    assert _worker(encode_avro(Event("i", "u", "e", NOW, set={"n": 2**63}))).set == {"n": 2**63}


@pytest.mark.parametrize(("uid", "ok"), [
    ("user-1", True), (" padded ", True), ("é" * 32, True), ("é" * 33, False), (" ", False),
    ("\t\n", False), ("a\x00b", False), ("a\u2028b", False), ("x" * 64, True), ("x" * 65, False)])
def test_uid_rules(uid: str, ok: bool) -> None:
    verdict = _worker(orjson.dumps({"uid": uid, "event": "e", "ts": NOW}))
    assert isinstance(verdict, Event) == ok, verdict
    if not ok:
        assert verdict.reason is Reason.BAD_UID  # type: ignore[union-attr]


def test_check_walks_any_depth_without_recursion() -> None:
    value: Any = 1
    for _ in range(100_000):
        value = [value]
    with pytest.raises(Rejected) as info:
        check(value, 64)
    assert info.value.reason is Reason.TOO_DEEP
    assert loads(b"[1, 2]", 64) == ([1, 2], False)


def test_gzip_members_are_read_and_limits_hold() -> None:
    body = b'{"a": 1}\n' * 10
    assert _gunzip(gzip.compress(body[:40]) + gzip.compress(body[40:]), 1000) == body
    with pytest.raises(ApiError) as info:
        _gunzip(gzip.compress(b"x" * 5000), 1000)
    assert info.value.status == 413
    with pytest.raises(ApiError) as info:
        _gunzip(gzip.compress(body)[:-5], 1000)
    assert info.value.status == 400


@given(st.lists(st.integers(1, 9), min_size=1, max_size=6))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_profiles_over_the_limit_refuse_the_outgrowing_event(tmp_path: Path, sizes: list[int]) -> None:
    """Events of one user in one batch, each $set carrying ``size`` KiB: the fold keeps every
    event while the stored profile fits 24 KiB and dead-letters the rest as profile_too_large."""
    people = folder(tmp_path / f"db{len(list(tmp_path.iterdir()))}", cache_size=10)
    people.max_profile_bytes = 24 * 1024
    home = uid_partition(b"u", 4)
    records = [Record("events", home, i, NOW, b"u", orjson.dumps(
        {"uid": "u", "event": "set", "ts": NOW - 1000 + i, "$set": {f"p{i}": "x" * (size * 1024)}}))
        for i, size in enumerate(sizes)]
    people.process(runs(records))
    sent = people.sink.sent  # type: ignore[attr-defined]
    letters = [v for t, _, v, _ in sent if t == "dlq"]
    stored = [v for t, _, v, _ in sent if t == "changelog"]
    kept, total = 0, 0
    for size in sizes:  # what fits, in offset order
        if total + size * 1024 + 600 <= 24 * 1024:
            total += size * 1024
            kept += 1
    assert people.metrics.folded._value.get() + len(letters) == len(sizes)
    assert all(len(v) <= 24 * 1024 for v in stored)
    assert abs(people.metrics.folded._value.get() - kept) <= 1  # the envelope's size is approximate


@FAST
@given(uid=odd_text, name=odd_text, props=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
       event_id=st.none() | st.text(max_size=10) | st.integers() | st.lists(st.integers(), max_size=2),
       depth=st.integers(0, 40))
def test_the_sdks_check_agrees_with_the_worker(uid: str, name: str, props: dict[str, Any],
                                               event_id: Any, depth: int) -> None:
    """``Decoder.check_sent`` (the SDK's cheap check of the envelope it built) refuses exactly
    what the worker's decoder refuses, for the same reason."""
    props = {**props, "d": orjson.loads(_deep(depth))}
    obj: dict[str, Any] = {"uid": uid, "event": name, "ts": NOW, "properties": props}
    if event_id is not None:
        obj["event_id"] = event_id
    try:
        payload = DECODER.check_sent(obj)
    except Rejected as exc:
        sdk: Rejected | None = exc
    else:
        sdk = None
    try:
        worker: Rejected | None = None
        DECODER.record(payload if sdk is None else json.dumps(obj).encode(), NOW)
    except Rejected as exc:
        worker = exc
    except (TypeError, ValueError):  # not even the stdlib can write it: the SDK said why
        assert sdk is not None and sdk.reason is Reason.BAD_FIELD
        return
    assert (sdk and sdk.reason) == (worker and worker.reason), (sdk, worker)


@profile_script("fragile", version="1")
def fragile(profile: dict[str, Any], event: Event) -> None:
    """A user's script doing what scripts do wrong, chosen by the event's properties."""
    what = event.properties.get("do") if isinstance(event.properties.get("do"), str) else None
    if what == "raise":
        raise RuntimeError("boom")
    if what == "set":
        profile["seen"] = {event.event}  # a set: not JSON
    elif what == "deep":
        profile["deep"] = orjson.loads(_deep(300))  # deeper than orjson writes
    elif what == "huge":
        profile["huge"] = "h" * 40_000


@st.composite
def batches(draw: st.DrawFn) -> list[Record]:
    """Records of a few users (some on the wrong partition, some re-delivered) mixed with
    generated raw events and the fragile script's triggers."""
    out: list[Record] = []
    offsets = [0] * 4
    for _ in range(draw(st.integers(1, 40))):
        if draw(st.integers(0, 2)) == 0:
            raw = draw(raw_events())
            uid = b"odd"
        else:
            user = f"u{draw(st.integers(0, 5))}"
            uid = user.encode()
            do = draw(st.sampled_from([None, None, "raise", "set", "deep", "huge"]))
            raw = orjson.dumps({"uid": user, "event": "e", "ts": NOW - draw(st.integers(0, 10**9)),
                                "properties": {"do": do} if do else {}})
        partition = uid_partition(uid, 4) if draw(st.integers(0, 5)) else draw(st.integers(0, 3))
        out.append(Record("events", partition, offsets[partition], NOW, uid, raw))
        offsets[partition] += 1
        if draw(st.integers(0, 9)) == 0:
            out.append(out[-1])  # re-delivered
    return sorted(out, key=lambda r: (r.partition, r.offset))


@given(batches())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_whatever_records_and_scripts_do_each_ends_one_way(tmp_path: Path, records: list[Record]) -> None:
    """One in, one out, and nothing stored the broker or orjson could refuse."""
    people = folder(tmp_path / f"db{len(list(tmp_path.iterdir()))}", cache_size=3)
    people.scripts = ScriptSet((standard, fragile))
    people.max_profile_bytes = 32 * 1024
    people.process(runs(records))
    m = people.metrics
    dead = sum(s.value for metric in m.dead_lettered.collect() for s in metric.samples
               if s.name.endswith("_total"))
    assert m.consumed._value.get() == len(records)
    assert len(records) == m.folded._value.get() + m.duplicates._value.get() + dead + m.rerouted._value.get()
    sent = people.sink.sent  # type: ignore[attr-defined]
    assert len([1 for topic, *_ in sent if topic == "dlq"]) == dead
    for topic, _, value, _ in sent:
        if topic == "changelog":
            assert len(value) <= people.max_profile_bytes and decode_value(value)
        elif topic == "dlq":
            assert DEAD_LETTER.decode(value)["reason"] in {r.value for r in Reason}
