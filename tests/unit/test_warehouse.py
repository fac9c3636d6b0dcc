"""The warehouse on both backends (embedded chDB; clickhouse-connect against a ClickHouse HTTP
endpoint): versioned migrations, deduplicated inserts, bound parameters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardflow.connectors.warehouse import (
    MIGRATIONS,
    ChdbWarehouse,
    ClickhouseWarehouse,
    Warehouse,
    keep_bitmaps,
    migrate,
    open_warehouse,
    schema_version,
)
from cardflow.errors import ConfigError, WarehouseError, WarehouseUnavailable
from cardflow.local_kafka import free_port

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module", params=["chdb", "clickhouse-http"])
def wh(request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    if request.param == "chdb":
        yield request.getfixturevalue("chdb_engine")
        return
    server = ClickhouseWarehouse(request.getfixturevalue("clickhouse_url"), "cardflow_test")
    yield server
    server.close()


def test_migrations_apply_once_and_refuse_a_newer_schema(wh: Warehouse) -> None:
    assert migrate(wh) == [v for v, _, _ in MIGRATIONS]
    assert migrate(wh) == []  # idempotent
    assert schema_version(wh) == MIGRATIONS[-1][0]
    tables = {
        r["name"]
        for r in wh.query("SELECT name FROM system.tables WHERE database = {db:String}", {"db": wh.database})
    }
    assert {"events", "users", "cardflow_schema"} <= tables
    wh.command(f"INSERT INTO {wh.database}.cardflow_schema (version, name) VALUES (999, 'future')")
    with pytest.raises(WarehouseError, match="schema version 999, newer than this cardflow knows"):
        migrate(wh)
    wh.command(
        f"ALTER TABLE {wh.database}.cardflow_schema DELETE WHERE version = 999 SETTINGS mutations_sync = 1"
    )


def test_an_insert_retried_with_its_token_is_stored_once(wh: Warehouse) -> None:
    migrate(wh)
    rows = [
        {
            "event_id": f"e{i}",
            "uid": "u1",
            "event": "signup",
            "ts": "2026-12-01 10:00:00.000",
            "properties": "{}",
            "set_properties": "{}",
            "source": "test",
            "kafka_topic": "events",
            "kafka_partition": 0,
            "kafka_offset": i,
            "ingested_at": "2026-12-01 10:00:01.000",
        }
        for i in range(5)
    ]
    for _ in range(3):  # a batch retried after a crash
        wh.insert("events", rows, token="events/0/0-4")
    wh.insert("events", [dict(rows[0], event_id="e9", kafka_offset=9)], token="events/0/9-9")
    got = wh.query(f"SELECT count() AS n, uniqExact(event_id) AS ids FROM {wh.database}.events")
    assert [(int(r["n"]), int(r["ids"])) for r in got] == [(6, 6)]  # 64-bit counts come quoted


def test_bitmaps_are_kept_read_imported_and_deleted_on_both_backends(wh: Warehouse) -> None:
    import base64

    from cardflow import bitmaps

    migrate(wh)
    rows = [
        {
            "event_id": f"b{i}",
            "uid": uid,
            "event": "bm-open",
            "ts": ts,
            "properties": props,
            "set_properties": "{}",
            "source": "test",
            "kafka_topic": "events",
            "kafka_partition": 1,
            "kafka_offset": 100 + i,
            "ingested_at": "2026-12-01 10:00:01.000",
        }
        for i, (uid, ts, props) in enumerate(
            [
                ("7", "2020-12-31 23:30:00.000", '{"$hourly": true}'),
                ("4294967295", "2021-01-01 00:10:00.000", "{}"),
                ("07", "2021-01-01 00:10:00.000", "{}"),  # not bitmapist's way of writing 7: not counted
                ("x", "2021-01-01 00:10:00.000", '{"$unique": true}'),
                ("9", "2021-01-02 00:10:00.000", '{"$unique": true}'),
            ]
        )
    ]
    wh.insert("events", rows, token="events/1/100-104")
    limits = bitmaps.Limits()
    week = {"event": "bm-open", "period": "week", "year": 2020, "week": 53}
    got = bitmaps.run(
        wh,
        {
            "queries": [
                {"expr": week, "members": {}},
                {
                    "expr": {
                        "event": "bm-open",
                        "period": "hour",
                        "year": 2020,
                        "month": 12,
                        "day": 31,
                        "hour": 23,
                    }
                },
                {"expr": {"event": "bm-open", "period": "year", "year": 2021}},
                {"expr": {"event": "bm-open", "period": "unique"}, "members": {}},
                {"expr": {"op": "not", "args": [{"event": "bm-open", "period": "unique"}]}},
            ]
        },
        limits,
    )["results"]
    assert got[0]["members"] == [7, 9, 4294967295]  # ISO 2020-W53 runs to Sunday 3 January
    assert [r["count"] for r in got[1:]] == [1, 2, 1, 15]  # NOT: 16 bits (ids up to 9), 1 set
    assert got[3]["members"] == [9]
    slice_ = base64.b64encode(bytes([0b01000000, 0b00000001])).decode()  # ids 1 and 15
    flag = {"event": "bm-paid", "period": "unique"}
    bitmaps.import_bits(wh, {"expr": flag, "offset": 0, "length": 4, "bits": slice_}, limits)
    got = bitmaps.run(
        wh, {"queries": [{"expr": flag, "members": {}}, {"expr": {"op": "not", "args": [flag]}}]}, limits
    )["results"]
    assert got[0]["members"] == [1, 15] and got[1]["count"] == 30  # the key's 4 bytes kept
    bitmaps.delete(wh, {"expr": week}, limits)
    assert bitmaps.run(wh, {"queries": [{"expr": week}]}, limits)["results"][0]["count"] == 0


def test_bitmaps_turned_off_cost_nothing_and_on_again_are_backfilled(wh: Warehouse) -> None:
    from cardflow import bitmaps

    migrate(wh)
    assert keep_bitmaps(wh, True) is False  # migration 3 keeps them already

    def views() -> set[str]:
        rows = wh.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND name LIKE 'bitmap%_mv'",
            {"db": wh.database},
        )
        return {r["name"] for r in rows}

    def event(i: int, uid: str) -> dict[str, object]:
        return {"event_id": f"off{i}", "uid": uid, "event": "bm-off", "ts": "2021-02-03 10:00:00.000",
                "properties": '{"$unique": true}', "set_properties": "{}", "source": "test",
                "kafka_topic": "events", "kafka_partition": 2, "kafka_offset": 500 + i,
                "ingested_at": "2026-12-01 10:00:01.000"}

    def counts() -> list[int]:
        day = {"event": "bm-off", "period": "day", "year": 2021, "month": 2, "day": 3}
        got = bitmaps.run(wh, {"queries": [{"expr": day}, {"expr": {"event": "bm-off", "period": "unique"}}]},
                          bitmaps.Limits())
        return [r["count"] for r in got["results"]]

    assert views() == {"bitmaps_mv", "bitmap_flags_mv"}
    try:
        assert keep_bitmaps(wh, False) is True and views() == set()
        assert keep_bitmaps(wh, False) is False
        wh.insert("events", [event(0, "11")], token="off/0")
        assert counts() == [0, 0]  # loaded while off: no bitmap work
    finally:
        assert keep_bitmaps(wh, True) is True
    assert views() == {"bitmaps_mv", "bitmap_flags_mv"}
    assert counts() == [1, 1]  # backfilled
    wh.insert("events", [event(1, "12")], token="off/1")
    assert counts() == [2, 2] and keep_bitmaps(wh, True) is False  # kept live again, backfilled once


@pytest.mark.parametrize(
    "value",
    [
        "it's",
        "a\\b",
        "tab\tnew\nline\r",
        "\\n",
        "nul\x00byte",
        "'; DROP TABLE events; --",
        "ü✓" * 500,
        "x" * 100_000,
    ],
)
def test_values_are_bound_never_spliced(wh: Warehouse, value: str) -> None:
    assert wh.query("SELECT {v:String} AS v", {"v": value}) == [{"v": value}]


def test_bad_names_and_urls_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="warehouse database 'x; DROP'"):
        ChdbWarehouse(tmp_path, "x; DROP")
    with pytest.raises(
        WarehouseUnavailable, match="cannot reach the ClickHouse server at http://127.0.0.1"
    ) as info:
        open_warehouse(f"http://user:secret@127.0.0.1:{free_port()}")
    assert "secret" not in str(info.value)  # the password is not in the message
    with pytest.raises(ConfigError, match="use chdb:///path"):
        open_warehouse("ftp://x")


def test_cached_bitmaps_are_used_only_while_their_month_is_unchanged(wh: Warehouse) -> None:
    from cardflow import bitmaps

    migrate(wh)

    def event(n: int, uid: str, ts: str, name: str = "bm-cache") -> dict[str, object]:
        return {
            "event_id": f"c{n}",
            "uid": uid,
            "event": name,
            "ts": ts,
            "properties": "{}",
            "set_properties": "{}",
            "source": "test",
            "kafka_topic": "events",
            "kafka_partition": 2,
            "kafka_offset": n,
            "ingested_at": "2026-12-01 10:00:01.000",
        }

    wh.insert(
        "events",
        [event(1, "1", "2021-03-05 10:00:00.000"), event(2, "2", "2021-04-05 10:00:00.000")],
        token="events/2/1-2",
    )
    cache, limits = bitmaps.Cache(1 << 20), bitmaps.Limits()
    march = {"event": "bm-cache", "period": "month", "year": 2021, "month": 3}
    april = {"event": "bm-cache", "period": "month", "year": 2021, "month": 4}

    def counts() -> list[int]:
        got = bitmaps.run(wh, {"queries": [{"expr": march}, {"expr": april}]}, limits, cache)["results"]
        return [r["count"] for r in got]

    assert counts() == [1, 1] and (cache.hits, cache.misses) == (0, 2)
    assert counts() == [1, 1] and cache.hits == 2  # unchanged: both from the cache
    wh.insert("events", [event(3, "3", "2021-04-06 10:00:00.000")], token="events/2/3-3")
    assert counts() == [1, 2] and (cache.hits, cache.misses) == (3, 3)  # April read again, March kept
    wh.command(f"OPTIMIZE TABLE {wh.database}.bitmaps FINAL")  # a merge changes nothing it holds
    assert counts() == [1, 2]
    bitmaps.delete(wh, {"expr": april}, limits)
    assert counts() == [1, 0]  # a delete is a new state of April's part
    wh.command(f"TRUNCATE TABLE {wh.database}.bitmaps")
    assert counts() == [0, 0]
    tiny = bitmaps.Cache(10)  # smaller than any bitmap: nothing kept, answers the same
    wh.insert("events", [event(4, "4", "2021-03-07 10:00:00.000")], token="events/2/4-4")
    assert [r["count"] for r in bitmaps.run(wh, {"queries": [{"expr": march}]}, limits, tiny)["results"]] == [
        1
    ]


VIEWS = ["user_days_mv", "user_first_mv", "bitmaps_mv", "bitmap_flags_mv"]


def derived(wh: Warehouse, event: str) -> dict[str, object]:
    """What each view keeps of ``event``: user_days' and user_first's uids, its day bitmap's count."""
    from cardflow import bitmaps

    db = wh.database
    days = wh.query(f"SELECT DISTINCT uid FROM {db}.user_days WHERE event = {{e:String}} ORDER BY uid",
                    {"e": event})
    first = wh.query(f"SELECT DISTINCT uid FROM {db}.user_first WHERE event = {{e:String}} ORDER BY uid",
                     {"e": event})
    day = {"event": event, "period": "day", "year": 2021, "month": 4, "day": 5}
    counted = bitmaps.run(wh, {"queries": [{"expr": day}]}, bitmaps.Limits())["results"][0]["count"]
    return {"user_days": [r["uid"] for r in days], "user_first": [r["uid"] for r in first], "bitmap": counted}


def test_a_retried_insert_reaches_the_views_its_first_attempt_missed(wh: Warehouse) -> None:
    migrate(wh)
    rows = [
        {"event_id": f"retry{i}", "uid": str(60 + i), "event": "retried", "ts": "2021-04-05 10:00:00.000",
         "properties": "{}", "set_properties": "{}", "source": "test", "kafka_topic": "events",
         "kafka_partition": 4, "kafka_offset": 900 + i, "ingested_at": "2026-12-01 10:00:01.000"}
        for i in range(3)
    ]
    for view in VIEWS:  # the first attempt: stored in events, failed before the views
        wh.command(f"DETACH TABLE {wh.database}.{view}")
    try:
        wh.insert("events", rows, token="retry/4/900-902")
    finally:
        for view in VIEWS:
            wh.command(f"ATTACH TABLE {wh.database}.{view}")
    assert derived(wh, "retried") == {"user_days": [], "user_first": [], "bitmap": 0}
    wh.insert("events", rows, token="retry/4/900-902")  # the retry: events has the block already
    got = wh.query(f"SELECT count() AS n FROM {wh.database}.events WHERE event = 'retried'")
    assert int(got[0]["n"]) == 3  # stored once
    assert derived(wh, "retried") == {"user_days": ["60", "61", "62"], "user_first": ["60", "61", "62"],
                                      "bitmap": 3}


def test_the_next_run_puts_an_insert_cut_by_a_crash_through_the_views(wh: Warehouse) -> None:
    from types import SimpleNamespace

    import orjson
    from prometheus_client import CollectorRegistry

    from cardflow.agents.warehouse import EventLoader, WarehouseMetrics
    from cardflow.config import load_settings

    migrate(wh)

    def loader() -> EventLoader:
        return EventLoader(wh, load_settings(env={}).decoder(), WarehouseMetrics(CollectorRegistry()))

    def record(partition: int, offset: int) -> SimpleNamespace:
        return SimpleNamespace(offset=offset, value=orjson.dumps({
            "event_id": f"cut{partition}-{offset}", "uid": str(10 * partition + offset), "event": "cut",
            "ts": 1617616800000}))

    first = loader()
    first.load({("cut-events", 5): [record(5, 0), record(5, 1)]})  # a whole insert
    time.sleep(0.01)  # the next batch's ingested_at is later
    for view in VIEWS:  # a run killed inside its last inserts: the blocks in events, not in the views
        wh.command(f"DETACH TABLE {wh.database}.{view}")
    try:
        first.load({("cut-events", 3): [record(3, 0), record(3, 1)], ("cut-events", 5): [record(5, 2)]})
    finally:
        for view in VIEWS:
            wh.command(f"ATTACH TABLE {wh.database}.{view}")
    assert derived(wh, "cut") == {"user_days": ["50", "51"], "user_first": ["50", "51"], "bitmap": 2}
    again = loader()  # the next run reads the batches again: skips what events holds, repairs the views
    again.load({("cut-events", 3): [record(3, 0), record(3, 1), record(3, 2)],
                ("cut-events", 5): [record(5, 0), record(5, 1), record(5, 2)]})
    assert again.metrics.already._value.get() == 5  # noqa: SLF001 - prometheus_client's counter value
    want = ["30", "31", "32", "50", "51", "52"]
    assert derived(wh, "cut") == {"user_days": want, "user_first": want, "bitmap": 6}
