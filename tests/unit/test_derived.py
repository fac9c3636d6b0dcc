"""Derived events (emit): deterministic ids, lineage, depth, and nothing kept from a failed event."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cardflow.events import Event, decode_event, derive_event_id
from cardflow.profiles import MAX_EMITS, ProfileScriptError, ScriptSet, emit, fold_events, profile_script
from cardflow.standard import DAY_MS, standard

T0 = 1_790_000_000_000


def _event(name: str, i: int, depth: int = 0, **props: Any) -> Event:
    ts = T0 + i
    event_id = derive_event_id("u", name, ts, props, {}, {})
    return Event(event_id, "u", name, ts, props, {}, {}, "default", depth)


@profile_script("milestones", version="1")
def milestones(profile: dict[str, Any], event: Event) -> None:
    profile["n"] = profile.get("n", 0) + 1
    if event.properties.get("emit"):
        for _ in range(event.properties["emit"]):
            emit("milestone", {"n": profile["n"]})
    if event.properties.get("fail"):
        raise ValueError("after emitting")


def test_emitted_events_have_deterministic_ids_and_lineage() -> None:
    events = [(_event("view", 0, emit=2), 0), (_event("view", 1), 1)]
    first = fold_events(None, events, (standard, milestones), 10**12)
    again = fold_events(None, events, (standard, milestones), 10**12)
    assert [d for _, d in first.derived] == [d for _, d in again.derived]
    (o1, d1), (o2, d2) = first.derived
    assert (o1, o2) == (0, 0) and d1["event_id"] != d2["event_id"]  # the 1st and 2nd emit differ
    source = events[0][0]
    assert d1["uid"] == "u" and d1["ts"] == source.ts and d1["source"] == "derived"
    assert d1["derived_from"] == {"event_id": source.event_id, "event": "view", "script": "milestones",
                                  "depth": 1}
    # Decoded from events, it carries its depth on.
    assert decode_event(orjson.dumps(d1), now_ms=T0 + 10).depth == 1


def test_a_failed_events_emits_are_dropped_with_it() -> None:
    result = fold_events(None, [(_event("view", 0, emit=1, fail=True), 0), (_event("view", 1, emit=1), 1)],
                         (milestones,), 10**12)
    assert [o for _, o, *_ in result.failed] == [0] and [o for o, _ in result.derived] == [1]
    assert result.derived[0][1]["properties"] == {"n": 1}  # the refold left the failed event out


def test_depth_limit_and_emit_limits() -> None:
    runner = ScriptSet((milestones,), max_derived_depth=2)
    events = [(_event("view", 0, depth=1, emit=1), 0), (_event("view", 1, depth=2, emit=1), 1)]
    result = fold_events(None, events, runner, 10**12)
    assert [o for o, _ in result.derived] == [0] and [o for o, _ in result.too_deep] == [1]
    assert result.too_deep[0][1]["derived_from"]["depth"] == 3
    result = fold_events(None, [(_event("view", 0, emit=MAX_EMITS + 1), 0)], (milestones,), 10**12)
    assert result.derived == [] and f"more than {MAX_EMITS}" in str(result.failed[0][3])
    with pytest.raises(ProfileScriptError, match="while it folds an event"):
        emit("outside")


def test_the_ledger_sends_again_what_a_crash_left_uncommitted_and_never_twice(tmp_path) -> None:
    """The folder's side of exactly once (agents/derived.py), on a real RocksDB; the transaction is
    simulated by moving the marks (the Kafka side is the real-broker test's)."""
    import orjson as json_
    from prometheus_client import CollectorRegistry

    from cardflow.agents.derived import DerivedSink
    from cardflow.agents.folder import PeopleMetrics, ProfileFolder, Topics
    from cardflow.config import load_settings
    from cardflow.events import Decoder
    from cardflow.partitioning import partition_of
    from tests.unit.test_profile_folder import Named, Record, Sink, Table, runs

    @profile_script("third", version="1", events=["buy"])
    def third(profile: dict[str, Any], event: Event) -> None:
        profile["buys"] = profile.get("buys", 0) + 1
        if profile["buys"] == 3:
            emit("third_buy", {})

    partition = partition_of(b"ann", 4)
    batch = [Record("events", partition, n, T0, b"ann",
                    json_.dumps({"uid": "ann", "event": "buy", "ts": T0 + n, "event_id": f"b{n}"}))
             for n in range(4)]

    def stop(dead: ProfileFolder) -> None:  # its RocksDB closed, as a killed process leaves it
        for db in dead.store.dbs.values():  # type: ignore[attr-defined]
            db.close()

    def worker(store_path, marks: dict[int, int]) -> tuple[ProfileFolder, DerivedSink]:
        sink = DerivedSink(load_settings(env={}), "events")
        sink.stale, sink.marks = False, dict(marks)
        return ProfileFolder(Table(store_path), Topics(Named("events"), Named("changes"), Named("dlq")),  # type: ignore[arg-type]
                             Decoder(), (standard, third), 7 * DAY_MS, 4, PeopleMetrics(CollectorRegistry()),
                             Sink(), 0, derived=sink), sink  # type: ignore[arg-type]

    first, sink = worker(tmp_path / "db", {})
    first.process(runs(batch))
    taken = sink.take()
    assert taken is not None and len(taken[0]) == 1 and taken[1] == {partition: 2}  # the third buy
    sent = taken[0][0][1]
    # Killed before the commit: the records are read again, folded already; the ledger sends it again.
    stop(first)
    again, sink = worker(tmp_path / "db", {})
    again.process(runs(batch))
    retaken = sink.take()
    assert retaken is not None and [v for _, v, _ in retaken[0]] == [sent]
    # Killed after the commit (the mark covers it): read again, nothing sent, the ledger emptied.
    stop(again)
    after, sink = worker(tmp_path / "db", {partition: 2})
    after.process(runs(batch))
    assert sink.take() is None
    stored = after.store._db_for_partition(partition)[b"ann"]  # type: ignore[attr-defined]
    assert b'"derived"' not in stored
    # Folded again from nothing (a lost RocksDB directory) after the commit: not sent twice.
    lost, sink = worker(tmp_path / "elsewhere", {partition: 2})
    lost.process(runs(batch))
    assert sink.take() is None
