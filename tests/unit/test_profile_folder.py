"""The profiles batch on a real RocksDB with a recording sink: the profile cache changes no byte."""

from __future__ import annotations

import gc
import random
import weakref
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from prometheus_client import CollectorRegistry
from rocksdict import Options, Rdict

from cardflow.agents.folder import PeopleMetrics, ProfileFolder, Topics
from cardflow.agents.gc_policy import BatchCollector
from cardflow.agents.records import PROFILE_CHANGE, profile_change
from cardflow.batches import RecordRun
from cardflow.events import Decoder
from cardflow.partitioning import partition_of as uid_partition
from cardflow.standard import DAY_MS, standard

pytestmark = pytest.mark.unit
PARTITIONS = 4
T0 = 1_790_000_000_000


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes
    headers: tuple = ()
    timestamp_type: int = 0


def runs(records: list[Record]) -> list[RecordRun]:
    """The records as the consumer hands them over: runs of consecutive records of a partition."""
    out: list[RecordRun] = []
    for record in records:
        if out and out[-1].partition == record.partition:
            out[-1].records.append(record)
        else:
            out.append(RecordRun(record.topic, record.partition, [record]))
    return out


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.dbs: dict[int, Rdict] = {}

    def _db_for_partition(self, partition: int) -> Rdict:
        if partition not in self.dbs:
            self.dbs[partition] = Rdict(str(self.path / str(partition)), Options(raw_mode=True))
        return self.dbs[partition]

    def contents(self) -> dict[tuple[int, bytes], bytes]:
        return {(p, k): v for p, db in sorted(self.dbs.items()) for k, v in db.items()}


class Table:
    def __init__(self, path: Path) -> None:
        self.data = Store(path)
        self.changelog_topic = Named("changelog")


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int]] = []

    def produce(self, topic: str, key: bytes | None, value: bytes, partition: int,
                headers: Any = None) -> None:
        self.sent.append((topic, key, value, partition))


def folder(path: Path, cache_size: int) -> ProfileFolder:
    return ProfileFolder(Table(path), Topics(Named("events"), Named("changes"), Named("dlq")),  # type: ignore[arg-type]
                         Decoder(), (standard,), 7 * DAY_MS, PARTITIONS, PeopleMetrics(CollectorRegistry()),
                         Sink(), cache_size)  # type: ignore[arg-type]


def records(n: int, users: int, seed: int) -> list[Record]:
    rng = random.Random(seed)
    offsets = [0] * PARTITIONS
    out = []
    for i in range(n):
        uid = f"u{min(int(rng.paretovariate(1.0)), users)}"  # a few users most of the time
        event = {"uid": uid, "event": rng.choice(["view", "buy"]), "ts": T0 + rng.randrange(20 * DAY_MS),
                 "properties": {"i": i}}
        if rng.random() < 0.1:
            event["$set"] = {"plan": rng.choice(["free", "pro"])}
        partition = uid_partition(uid.encode(), PARTITIONS)
        out.append(Record("events", partition, offsets[partition], T0, uid.encode(), orjson.dumps(event)))
        offsets[partition] += 1
    return out


def test_cached_profiles_give_the_same_bytes_and_changes(tmp_path: Path) -> None:
    stream = records(3000, 200, seed=1)
    rng = random.Random(2)
    cuts = sorted(rng.sample(range(1, len(stream)), 40))
    batches = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    batches.insert(10, batches[5])  # a re-delivered batch: every record a duplicate
    plain, cached = folder(tmp_path / "plain", 0), folder(tmp_path / "cached", 25)  # 25: evictions too
    for batch in batches:
        plain.process(runs(batch))
        cached.process(runs(batch))
    assert cached.store.contents() == plain.store.contents()  # type: ignore[attr-defined]
    assert cached.sink.sent == plain.sink.sent  # changelog and profile changes alike
    assert len(cached.cache) == 25
    assert cached.metrics.duplicates._value.get() == plain.metrics.duplicates._value.get() == len(batches[5])


def test_a_cleared_cache_reads_what_another_owner_wrote(tmp_path: Path) -> None:
    stream = records(400, 20, seed=3)
    mine, other = folder(tmp_path / "mine", 100), folder(tmp_path / "other", 0)
    mine.process(runs(stream[:200]))
    other.store = mine.store  # the partitions moved away and back: someone else folded the rest
    other.process(runs(stream[200:]))
    mine.cache.clear()  # what an assignment does
    mine.process(runs(stream[200:]))  # re-delivered: all duplicates if the cache was really forgotten
    assert mine.metrics.folded._value.get() == 200
    assert mine.metrics.duplicates._value.get() == 200


class Node:
    me: Any = None


def test_batch_collector_freezes_survivors_and_collects_when_due() -> None:
    collector = BatchCollector(full_every=3600)
    gc.unfreeze()
    try:
        with collector.paused():
            assert not gc.isenabled()
            node = Node()
            node.me = node  # cyclic garbage made during a batch
            ref = weakref.ref(node)
            del node
        assert gc.isenabled() and gc.get_freeze_count() > 0
        gc.collect()
        assert ref() is not None  # frozen: ordinary collections skip it
        collector.full_every = 0  # due: the next batch ends with a full collection
        with collector.paused():
            pass
        assert ref() is None and gc.isenabled()
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("record", [
    {"uid": "u1", "version": 1, "changed": ["days", "events", "last_seen"], "max_ts": T0, "partition": 3},
    {"uid": "ü" * 70, "version": 2**40, "changed": [], "max_ts": 0, "partition": 0},
    {"uid": "x", "version": 0, "changed": ["a" * 200], "max_ts": -5, "partition": 2**31 - 1},
    # Every varint length, both signs, at the 14-bit steps' edges.
    *({"uid": "e", "version": 2**bits - 1, "changed": ["c"], "max_ts": sign * 2**bits + edge, "partition": 1}
      for bits in range(0, 63, 7) for sign in (1, -1) for edge in (-1, 0)),
    {"uid": "m", "version": 2**63 - 1, "changed": ["c"], "max_ts": -(2**63), "partition": 0},
])
@pytest.mark.parametrize("profile", [None, '{"events": {"signup": 1}}', "{}", '{"x": "' + "é" * 5000 + '"}'])
def test_profile_change_is_the_avro_codec_byte_for_byte(record: dict[str, Any], profile: str | None) -> None:
    record = {**record, "profile": profile}
    encoded = profile_change(**{**record, "profile": None if profile is None else profile.encode()})
    assert encoded == PROFILE_CHANGE.encode(record)
    assert PROFILE_CHANGE.decode(encoded) == record


def test_a_redelivered_batch_sends_its_profile_changes_again_naming_every_field(tmp_path: Path) -> None:
    # Read again, a batch's records are duplicates; its first pass may have crashed before its
    # profile changes were written, so they go out again (at least once), the profiles unchanged.
    stream = records(300, 30, seed=4)
    worker = folder(tmp_path, 100)
    worker.process(runs(stream))
    sink: Any = worker.sink
    first = {key: PROFILE_CHANGE.decode(value) for topic, key, value, _ in sink.sent if topic == "changes"}
    stored = worker.store.contents()  # type: ignore[attr-defined]
    sink.sent.clear()
    worker.process(runs(stream))
    assert worker.store.contents() == stored  # type: ignore[attr-defined]
    again = {key: PROFILE_CHANGE.decode(value) for topic, key, value, _ in sink.sent if topic == "changes"}
    assert again.keys() == first.keys() and len(again) == len({r.key for r in stream})
    for key, change in again.items():
        profile = orjson.loads(worker.cache[key][1])
        assert change["changed"] == sorted(profile)  # every field: what the lost pass changed is unknown
        assert {k: change[k] for k in ("uid", "version", "max_ts")} == {
            k: first[key][k] for k in ("uid", "version", "max_ts")}
    assert worker.metrics.duplicates._value.get() == len(stream)
