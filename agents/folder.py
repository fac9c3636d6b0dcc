"""The fold of one batch of ``events``: events → profiles table, profile-changes, events-dlq.

Per batch: decode and validate every record, dead-letter what cannot be
used, re-route records that sit on the wrong partition, fold each user's
events with every profile script, write each changed profile back once,
and emit one profile change per changed user.

Profiles are read from and written to the partition's RocksDB directly (one
write batch per partition, and a cache of the decoded values last written),
and everything the batch produces — the table's changelog records, profile
changes, dead letters, re-routed events — goes through one librdkafka
producer (``BatchSink``), flushed before the batch is acknowledged (Faust's
own per-message paths were the worker's bottleneck; see docs/benchmarks.md).
Synchronous on purpose: it is CPU-bound, and runs between two awaits of the
batch agent (agents/profiles.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import faust
import orjson
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from rocksdict import WriteBatch

from cardflow.agents.derived import DerivedSink
from cardflow.agents.records import dead_letter, profile_change
from cardflow.batches import RecordRun, partition_db
from cardflow.connectors.producer import BatchSink
from cardflow.errors import ProfileScriptError, Rejected
from cardflow.events import Decoder, Event
from cardflow.isolation import ReadOnlyFieldError, ScriptTimeout
from cardflow.partitioning import partition_of
from cardflow.profile_values import encode_value, profile_json_of, split_value
from cardflow.profiles import FoldResult, ProfileScript, ScriptSet, changed_fields, fold_value
from cardflow.reasons import Reason

log = logging.getLogger(__name__)
# Derived events of one fold: (source offset, encoded or why not, the event when refused).
Derived = list[tuple[int, bytes | Rejected, dict[str, Any] | None]]


class PeopleMetrics:
    """Counters proving one in, one out: consumed = folded + duplicates + dead_lettered + rerouted."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter("cardflow_people_consumed", "records consumed from events",
                                registry=registry)
        self.folded = Counter("cardflow_people_folded", "events folded into profiles", registry=registry)
        self.duplicates = Counter("cardflow_people_duplicates", "re-delivered or re-sent events skipped",
                                  registry=registry)
        self.dead_lettered = Counter("cardflow_people_dead_lettered", "records sent to events-dlq",
                                     ["reason"], registry=registry)
        self.derived = Counter("cardflow_people_derived", "derived events sent to events (emit)",
                               registry=registry)
        self.rerouted = Counter("cardflow_people_rerouted",
                                "records re-sent to their uid's partition", registry=registry)
        self.batch_seconds = Histogram("cardflow_people_batch_seconds", "time to process one batch",
                                       registry=registry,
                                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.batch_size = Histogram("cardflow_people_batch_size", "records per batch", registry=registry,
                                    buckets=(1, 10, 100, 1000, 5000, 20_000, 50_000))
        self.lag = Gauge("cardflow_people_lag", "records in events not yet processed", ["partition"],
                         registry=registry)
        self.script_failures = Counter("cardflow_profile_script_failures",
                                       "events a profile script failed on (dead-lettered)",
                                       ["script", "reason"], registry=registry)
        self.script_disabled = Gauge("cardflow_profile_script_disabled",
                                     "1 when a profile script was disabled for failing in a row",
                                     ["script"], registry=registry)
        self.script_skipped = Counter("cardflow_profile_script_skipped",
                                      "events a disabled profile script was not called for",
                                      ["script"], registry=registry)


@dataclass
class Topics:
    events: faust.TopicT
    changes: faust.TopicT
    dlq: faust.TopicT


class ProfileFolder:
    """Processes one batch of the events topic (see the module doc)."""

    def __init__(self, profiles: faust.Table, topics: Topics, decoder: Decoder,
                 scripts: ScriptSet | tuple[ProfileScript, ...], horizon_ms: int, partitions: int,
                 metrics: PeopleMetrics, sink: BatchSink, cache_size: int = 0, *,
                 max_profile_bytes: int = 512 * 1024, max_record_bytes: int = 1_000_000,
                 derived: DerivedSink | None = None) -> None:
        self.profiles = profiles
        self.max_profile_bytes = max_profile_bytes
        self.max_record_bytes = max_record_bytes
        self.store = profiles.data  # writes here skip Faust's changelog: the sink sends it
        self.changelog = profiles.changelog_topic.get_topic_name()
        self.sink = sink
        self.topics = topics
        self.names = {"events": topics.events.get_topic_name(), "changes": topics.changes.get_topic_name(),
                      "dlq": topics.dlq.get_topic_name()}
        self.decoder = decoder
        self.scripts = scripts if isinstance(scripts, ScriptSet) else ScriptSet(scripts)
        for script in self.scripts.scripts:
            metrics.script_disabled.labels(script.name).set(0)
        self.scripts.on_disable = lambda name, why: metrics.script_disabled.labels(name).set(1)
        self.horizon_ms = horizon_ms
        self.partitions = partitions
        self.metrics = metrics
        self.last_offsets: dict[int, int] = {}
        self.derived = derived
        # Decoded values of recently folded users, as last written (least recently used first):
        # a user seen again skips the read and parse. Valid while nobody else writes the
        # partition, so it is emptied at every assignment (see register_profiles).
        self.cache: dict[bytes, tuple[dict[str, Any], bytes | None]] = {}
        self.cache_size = cache_size

    def process(self, batch: list[RecordRun]) -> None:
        """Fold a batch of the events topic (runs of records, offset order per partition)."""
        metrics = self.metrics
        size = sum(map(len, batch))
        metrics.consumed.inc(size)
        metrics.batch_size.observe(size)
        users: dict[str, tuple[int, list[tuple[Event, int]]]] = {}  # uid → (partition, events)
        decode, partitions = self.decoder.record, self.partitions
        now_ms = int(time.time() * 1000)
        for run in batch:
            partition = run.partition
            self.last_offsets[partition] = run.last_offset
            for record in run.records:
                try:
                    event = decode(record.value, now_ms)
                except Rejected as exc:
                    self._dead_letter(run.consumer_record(record), exc.reason.value, exc.message)
                    continue
                except Exception as exc:  # noqa: BLE001 - one record's failure, never the worker's
                    self._internal_error(run.consumer_record(record), "decoding", exc)
                    continue
                user = users.get(event.uid)
                home = partition_of(event.key, partitions) if user is None else user[0]
                if partition != home:
                    # Produced without the uid key or with another partitioner: send the original
                    # bytes to the uid's partition, so one user's events stay on one partition.
                    self.sink.produce(
                        self.names["events"], event.key, record.value, home,
                        headers={"cardflow-rerouted-from": f"{partition}/{record.offset}".encode()})
                    metrics.rerouted.inc()
                elif user is None:
                    users[event.uid] = (partition, [(event, record.offset)])
                else:
                    user[1].append((event, record.offset))
        writes: dict[int, WriteBatch] = {}
        folded = duplicates = 0
        for uid, (partition, events) in users.items():
            writes_here = writes.get(partition)
            if writes_here is None:
                writes_here = writes[partition] = WriteBatch(raw_mode=True)
            key = uid.encode()
            result = self._fold_user(uid, key, partition, events, writes_here, batch)
            folded, duplicates = folded + result.folded, duplicates + result.duplicates
        for partition, writes_here in writes.items():
            # One write per partition: a RocksDB write batch costs half of a put per key.
            partition_db(self.store, partition).write(writes_here)
        metrics.folded.inc(folded)  # once a batch: a Prometheus inc takes a lock
        metrics.duplicates.inc(duplicates)
        for name, skipped in self.scripts.take_skipped().items():
            metrics.script_skipped.labels(name).inc(skipped)

    def _fold_user(self, uid: str, key: bytes, partition: int, events: list[tuple[Event, int]],
                   writes: WriteBatch, batch: list[RecordRun]) -> FoldResult:
        """Fold one user's events and queue the profile's write-back."""
        cached = self.cache.pop(key, None)
        if cached is None:
            cached = split_value(self._db(partition).get(key))
        value, profile_json = cached
        refused: list[tuple[int, Rejected]] = []
        stored: bytes | None
        try:
            result = fold_value(value, profile_json, events, self.scripts, self.horizon_ms)
            derived = self._ledger(result, key, partition)
            stored = encode_value(result.value)
        except Exception:  # noqa: BLE001 - the events' failures, never the worker's
            stored = None
        if stored is None or len(stored) > self.max_profile_bytes:  # which events: one at a time
            result, stored, refused = self._fold_each(key, partition, events)
            derived = self._ledger(result, key, partition) if stored is not None else []
            if derived:
                stored = encode_value(result.value)
        for _, offset, script, exc in result.failed:
            timeout = isinstance(exc, ScriptTimeout)
            reason = Reason.PROFILE_SCRIPT_TIMEOUT if timeout else Reason.PROFILE_SCRIPT_ERROR
            text = str(exc) if timeout or isinstance(exc, ReadOnlyFieldError) else (
                f"profile script {script!r} raised {type(exc).__name__}: {exc}")
            self._dead_letter(self._record_at(batch, partition, offset), reason.value, text, script)
            self.metrics.script_failures.labels(script, reason.value).inc()
        for offset, rejected in refused:
            self._dead_letter(self._record_at(batch, partition, offset), rejected.reason.value,
                              rejected.message)
        if stored is None:
            return result
        self._send_derived(result, derived, key, partition, batch)
        writes.put(key, stored)
        if self.cache_size:
            # A slice, not encode's own orjson bytes: each of those keeps a ~4 KB buffer (80k
            # cached users took 865 instead of ~590 MiB of peak RSS).
            self.cache[key] = (result.value, profile_json_of(stored))
            if len(self.cache) > self.cache_size:
                del self.cache[next(iter(self.cache))]
        # Written back even when nothing changed: a re-delivered batch then brings the
        # changelog up to what the local store already holds.
        self.sink.produce(self.changelog, key, stored, partition)
        if result.changed:  # every field when records were read again (see fold_value)
            meta = result.value["meta"]
            self.sink.produce(self.names["changes"], key, profile_change(
                uid, meta["version"], result.changed, meta["max_ts"], partition, profile_json_of(stored)),
                partition)
        return result

    def _fold_each(self, key: bytes, partition: int, events: list[tuple[Event, int]]
                   ) -> tuple[FoldResult, bytes | None, list[tuple[int, Rejected]]]:
        """The slow path, when folding the user's events together failed or outgrew
        ``max_profile_bytes``: one event at a time from the stored value (which the cache
        equals), each event that cannot be folded and stored refused with its reason."""
        stored = self._db(partition).get(key) or b""
        first_json = profile_json_of(stored) if stored else None
        total = FoldResult({})
        refused: list[tuple[int, Rejected]] = []
        for event, offset in events:
            value, profile_json = split_value(stored)
            try:
                step = fold_value(value, profile_json, [(event, offset)], self.scripts, self.horizon_ms)
            except ProfileScriptError as exc:  # a script broke a rule only the whole fold sees
                refused.append((offset, Rejected(Reason.PROFILE_SCRIPT_ERROR, str(exc))))
                continue
            except Exception as exc:  # noqa: BLE001 - this event's failure
                refused.append((offset, Rejected(Reason.INTERNAL_ERROR, _describe("folding", exc))))
                continue
            try:
                candidate = encode_value(step.value)
            except Exception as exc:  # noqa: BLE001 - only scripts put values into a profile
                refused.append((offset, Rejected(Reason.PROFILE_SCRIPT_ERROR,
                                                 "a profile script left a value that cannot be stored "
                                                 f"as JSON: {type(exc).__name__}: {exc}")))
                continue
            if len(candidate) > self.max_profile_bytes:
                refused.append((offset, Rejected(Reason.PROFILE_TOO_LARGE, (
                    f"the profile would be {len(candidate)} bytes stored; the limit is "
                    f"{self.max_profile_bytes} (max_profile_bytes)"))))
                continue
            stored = candidate
            total.folded += step.folded
            total.duplicates += step.duplicates
            total.failed += step.failed
            total.derived += step.derived
            total.too_deep += step.too_deep
            total.max_ts = max(total.max_ts, step.max_ts)
            total.redelivered = total.redelivered or step.redelivered
            total.value = step.value
        if not total.value:  # no event folded: the value as it was
            if not stored:
                return total, None, refused  # a new user whose events were all refused: no profile
            total.value = split_value(stored)[0]
        meta = total.value["meta"]
        meta["offset"] = max(meta["offset"], events[-1][1])  # a refused record is not read again
        stored = encode_value(total.value)
        profile = total.value["profile"]
        if total.redelivered:
            total.changed = sorted(profile)
        elif total.folded:
            total.changed = changed_fields(first_json, profile)
        return total, stored, refused

    def _ledger(self, result: FoldResult, key: bytes, partition: int) -> Derived:
        """Keep the fold's derived events in the stored value's ledger until committed (see
        agents/derived.py); the ones to send now, encoded (or why they cannot be)."""
        sink = self.derived
        meta = result.value["meta"]
        ledger: list[list[Any]] = meta.get("derived", [])
        if sink is None or not (ledger or result.derived):
            return []
        kept = [entry for entry in ledger if not sink.committed(partition, entry[0])]
        out: Derived = []
        if result.redelivered:  # their batch may have died before its commit: send them again
            out += [(offset, text.encode(), None) for offset, text in kept
                    if not sink.sent(partition, offset)]

        for offset, event in result.derived:
            if sink.sent(partition, offset):
                continue  # folded again (a lost RocksDB directory): committed already
            try:
                encoded = self.decoder.check_sent(event)
            except Rejected as exc:
                out.append((offset, exc, event))
                continue
            kept.append([offset, encoded.decode()])
            out.append((offset, encoded, None))
        if kept:
            meta["derived"] = kept
        else:
            meta.pop("derived", None)
        return out

    def _send_derived(self, result: FoldResult, derived: Derived, key: bytes,
                      partition: int, batch: list[RecordRun]) -> None:
        for offset, encoded, event in derived:
            if isinstance(encoded, Rejected):
                assert event is not None
                self._dead_letter(self._derived_record(batch, partition, offset, key, _as_bytes(event)),
                                  encoded.reason.value, f"a derived event: {encoded.message}",
                                  event["derived_from"]["script"])
                continue
            assert self.derived is not None
            self.derived.add(key, encoded, partition, offset)
            self.metrics.derived.inc()
        for offset, event in result.too_deep:
            script = event["derived_from"]["script"]
            depth, limit = event["derived_from"]["depth"], self.scripts.max_derived_depth
            self._dead_letter(self._derived_record(batch, partition, offset, key, _as_bytes(event)),
                              Reason.DERIVED_TOO_DEEP.value,
                              f"profile script {script!r} emitted {event['event']!r} at depth {depth}; the "
                              f"limit is {limit} (max_derived_depth): the chain stops here", script)

    def _derived_record(self, batch: list[RecordRun], partition: int, offset: int, key: bytes,
                        value: bytes) -> Any:
        """A dead letter's record for a derived event: its own bytes, where its source came from."""
        source = self._record_at(batch, partition, offset)
        return SimpleNamespace(key=key, value=value, topic=source.topic, partition=partition, offset=offset,
                               timestamp=source.timestamp)

    def _db(self, partition: int) -> Any:
        return partition_db(self.store, partition)

    @staticmethod
    def _record_at(batch: list[RecordRun], partition: int, offset: int) -> Any:
        """The batch's record at ``offset`` of ``partition``, for its dead letter (a rare path)."""
        return next(run.consumer_record(r) for run in batch if run.partition == partition
                    for r in run.records if r.offset == offset)

    def _internal_error(self, record: Any, what: str, exc: Exception) -> None:
        log.error("%s record %s[%d]@%d failed; dead-lettered", what, record.topic, record.partition,
                  record.offset, exc_info=exc)
        self._dead_letter(record, Reason.INTERNAL_ERROR.value, _describe(what, exc))

    def note_delivered(self) -> None:
        """After a flush: note in each RocksDB partition how far the changelog is known to hold
        it, so Faust's recovery starts there instead of at the changelog's beginning."""
        for (topic, partition), offset in self.sink.delivered.items():
            if topic == self.changelog:
                self.store.set_persisted_offset(TP(topic, partition), offset)
        self.sink.delivered.clear()

    def _dead_letter(self, record: Any, reason: str, text: str, detail: str | None = None) -> None:
        key, value = dead_letter(record, reason, text, detail, self.max_record_bytes)
        self.sink.produce(self.names["dlq"], key, value,
                          partition_of(key, self.partitions) if key else record.partition)
        self.metrics.dead_lettered.labels(reason).inc()


def _as_bytes(event: dict[str, Any]) -> bytes:
    """A derived event's JSON for its dead letter, even when a script put in what JSON cannot hold."""
    try:
        return orjson.dumps(event)
    except TypeError:
        return orjson.dumps(event, default=repr)


def _describe(what: str, exc: BaseException) -> str:
    return (f"cardflow failed {what} this record ({type(exc).__name__}: {exc}); this is a bug, "
            "please report it; `cardflow dlq replay --reason internal_error` after the fix")
