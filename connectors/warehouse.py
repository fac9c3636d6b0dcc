"""The warehouse: events and users in ClickHouse's dialect, on embedded chDB.

``Warehouse`` runs parameterised SQL (every user value is bound as a ClickHouse
query parameter, ``{name:Type}``, never spliced into the text) and inserts rows
with a deduplication token, so a retried batch is stored once.
``migrate`` applies the versioned schema at start: idempotent, recorded in
``cardflow_schema``, refusing a database whose schema is newer than this cardflow.

Two backends, one dialect: :class:`ChdbWarehouse` (embedded, the default; chDB opens a directory
from one process only, so the warehouse worker owns it and answers the API's queries on its web
server) and :class:`ClickhouseWarehouse` (a ClickHouse server, through clickhouse-connect).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

from cardflow.errors import ConfigError, WarehouseError, WarehouseUnavailable

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

# What migration 2's materialized views keep, from the rows of events (event "" is any event).
_USER_DAYS = "SELECT arrayJoin([event, '']) AS event, toDate(ts) AS day, uid FROM {db}.events"
_USER_FIRST = ("SELECT arrayJoin([event, '']) AS event, uid, min(ts) AS first_ts FROM {db}.events "
               "GROUP BY event, uid")

# Migration 3: bitmapist's period bitmaps, kept from the rows of events. A uid counts when it is
# an integer in bitmapist's range, written as one ([0, 2^32), no sign, no leading zero). Periods
# are UTC: day, ISO week (from its Monday), month, and the hour when the event asks for it
# ("$hourly": true, what bitmapist's track_hourly does). Roaring bitmaps merge by OR, so a late,
# replayed or duplicate event lands in its own period and changes nothing twice.
_BITMAP_UID = "match(uid, '^(0|[1-9][0-9]{{0,9}})$') AND toUInt64OrZero(uid) < 4294967296"
_BITMAPS = (
    "SELECT event, p.1 AS kind, p.2 AS start, groupBitmapState(toUInt32(toUInt64OrZero(uid))) AS users "
    "FROM (SELECT event, uid, arrayJoin(arrayConcat("
    "[('D', toStartOfDay(ts)), ('W', toDateTime(toMonday(ts), 'UTC')), "
    "('M', toDateTime(toStartOfMonth(ts), 'UTC'))], "
    "if(JSONExtractBool(properties, '$hourly'), [('H', toStartOfHour(ts))], []))) AS p "
    f"FROM {{db}}.events WHERE {_BITMAP_UID} AND event != '$bitmapist_unique') "
    "GROUP BY event, kind, start"
)
# bitmapist's unique ("user flag") bitmaps: set by mark_unique / unmark_unique (an event
# "$bitmapist_unique" with properties {"event", "value"}) or by an event marked "$unique": true;
# the latest write of a (flag, uid) wins (offsets order one uid's events: they share a partition).
_FLAGS = (
    "SELECT flag AS event, id AS uid, set AS value, ver AS version FROM ("
    "SELECT if(event = '$bitmapist_unique', JSONExtractString(properties, 'event'), event) AS flag, "
    "toUInt32(toUInt64OrZero(uid)) AS id, "
    "toUInt8(if(event = '$bitmapist_unique', JSONExtractUInt(properties, 'value') = 1, 1)) AS set, "
    "kafka_offset + 1 AS ver "
    f"FROM {{db}}.events WHERE {_BITMAP_UID} AND (event = '$bitmapist_unique' "
    "OR JSONExtractBool(properties, '$unique')))"
)
# (view, its creation, its backfill): what keeps the bitmaps, and what it would have made so far.
_BITMAP_VIEWS = [
    ("bitmaps_mv",
     f"CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.bitmaps_mv TO {{db}}.bitmaps AS {_BITMAPS}",
     f"INSERT INTO {{db}}.bitmaps {_BITMAPS}"),
    ("bitmap_flags_mv",
     f"CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.bitmap_flags_mv TO {{db}}.bitmap_flags AS {_FLAGS}",
     f"INSERT INTO {{db}}.bitmap_flags {_FLAGS}"),
]

# A retried insert whose block the table already holds (deduplicated by its token) still goes
# through the materialized views: had the first attempt stored the block but failed in a view, the
# view's rows would be lost for good. Every view's table is a set or an aggregate that a row twice
# does not change, so a view given a block again is harmless.
_VIEWS_ON_RETRY: dict[str, int | str] = {"deduplicate_blocks_in_dependent_materialized_views": 1}

# What each materialized view adds to its table from rows of events: the backfill at its migration,
# and the repair of the last insert of a partition after a crash (``rederive_last_inserts``).
_USER_DAYS_FILL = f"INSERT INTO {{db}}.user_days {_USER_DAYS}"
_USER_FIRST_FILL = f"INSERT INTO {{db}}.user_first {_USER_FIRST}"

# Every materialized view on events, with what it adds to its table from rows of events.
_VIEW_FILLS = [("user_days_mv", _USER_DAYS_FILL), ("user_first_mv", _USER_FIRST_FILL),
               *((view, fill) for view, _, fill in _BITMAP_VIEWS)]

# (version, name, statements); ``{db}`` is the validated database name. Append, never edit.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "events and users", [
        """CREATE TABLE IF NOT EXISTS {db}.events (
            event_id String,
            uid String,
            event LowCardinality(String),
            ts DateTime64(3, 'UTC'),
            properties String,
            set_properties String,
            source LowCardinality(String),
            kafka_topic LowCardinality(String),
            kafka_partition UInt32,
            kafka_offset UInt64,
            ingested_at DateTime64(3, 'UTC')
        ) ENGINE = ReplacingMergeTree(ingested_at)
        PARTITION BY toYYYYMM(ts)
        ORDER BY (event, toDate(ts), uid, event_id)
        SETTINGS non_replicated_deduplication_window = 10000""",
        """CREATE TABLE IF NOT EXISTS {db}.users (
            uid String,
            properties String,
            properties_once String,
            first_seen DateTime64(3, 'UTC'),
            last_seen DateTime64(3, 'UTC'),
            events UInt64,
            version UInt64,
            updated_at DateTime64(3, 'UTC')
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY uid
        SETTINGS non_replicated_deduplication_window = 10000""",
    ]),
    # Who was active on which day, and when each user first did each event: what retention and
    # unique-user trends read instead of every event. Both are sets (a row twice is the same
    # fact), so a duplicate insert cannot change an answer. Event "" stands for any event (event
    # names are never empty). Filled by materialized views on every insert into events, and
    # backfilled here from the events already loaded.
    (2, "user days and first times", [
        """CREATE TABLE IF NOT EXISTS {db}.user_days (
            event LowCardinality(String),
            day Date,
            uid String
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(day)
        ORDER BY (event, day, uid)""",
        """CREATE TABLE IF NOT EXISTS {db}.user_first (
            event LowCardinality(String),
            uid String,
            first_ts SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
        ) ENGINE = AggregatingMergeTree
        ORDER BY (event, uid)""",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.user_days_mv TO {{db}}.user_days AS {_USER_DAYS}",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.user_first_mv TO {{db}}.user_first AS {_USER_FIRST}",
        _USER_DAYS_FILL,  # the backfill: what the views would have made
        _USER_FIRST_FILL,
    ]),
    (3, "bitmapist bitmaps", [
        """CREATE TABLE IF NOT EXISTS {db}.bitmaps (
            event LowCardinality(String),
            kind LowCardinality(String),
            start DateTime('UTC'),
            users AggregateFunction(groupBitmap, UInt32)
        ) ENGINE = AggregatingMergeTree
        PARTITION BY toYYYYMM(start)
        ORDER BY (event, kind, start)""",
        """CREATE TABLE IF NOT EXISTS {db}.bitmap_flags (
            event LowCardinality(String),
            uid UInt32,
            value UInt8,
            version UInt64
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (event, uid)""",
        *(statement for view in _BITMAP_VIEWS for statement in view[1:]),
    ]),
]


def identifier(name: str, what: str) -> str:
    """``name`` if it is a plain SQL identifier; a ConfigError naming ``what`` otherwise."""
    if not IDENTIFIER.match(name):
        raise ConfigError(f"{what} {name!r} must be letters, digits and _ (not starting with a digit)")
    return name


class Warehouse:
    """SQL in ClickHouse's dialect. Blocking: call from a thread, never the event loop."""

    database: str

    def query(self, sql: str, params: dict[str, Any] | None = None,
              settings: dict[str, int | str] | None = None) -> list[dict[str, Any]]:
        """Rows of a SELECT as dicts (64-bit integers as strings, as ClickHouse's JSON has them)."""
        columns, rows = self.select(sql, params, settings)
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def select(self, sql: str, params: dict[str, Any] | None = None,
               settings: dict[str, int | str] | None = None) -> tuple[list[str], list[list[Any]]]:
        """Column names and rows (lists) of a SELECT: names may repeat, unlike ``query``'s dicts."""
        raise NotImplementedError

    def select_binary(self, sql: str, params: dict[str, Any] | None = None) -> bytes:
        """A SELECT's rows in ClickHouse's RowBinary format (what large arrays come back in)."""
        raise NotImplementedError

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def insert(self, table: str, rows: list[dict[str, Any]], token: str) -> None:
        """Insert ``rows`` (JSON-able dicts) into ``table``; a repeat with the same ``token`` is
        not stored again (``insert_deduplication_token``)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ChdbWarehouse(Warehouse):
    """Embedded ClickHouse (chDB) on a directory. chDB opens a path from one process only: the
    process that owns it serves the others."""

    def __init__(self, path: Path, database: str = "cardflow") -> None:
        from chdb import session

        self.database = identifier(database, "warehouse database")
        path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one query at a time on the session
        try:
            self._session = session.Session(str(path))
        except Exception as exc:  # noqa: BLE001 - chDB's errors are RuntimeErrors with its message
            raise WarehouseError(f"cannot open the chDB warehouse at {path}: {exc} (is another process "
                                 "using it?)") from exc
        self.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")

    def _run(self, sql: str, fmt: str, params: dict[str, Any] | None,
             settings: dict[str, int | str] | None = None) -> bytes:
        bound = {k: param_text(v) for k, v in (params or {}).items()}
        if settings:
            sql = f"{sql} SETTINGS {settings_clause(settings)}"
        with self._lock:
            try:
                result = self._session.query(sql, fmt, params=bound)
            except Exception as exc:  # noqa: BLE001 - see __init__
                # chDB 4.4 prepends what a query that failed mid-stream had written (a timeout's
                # partial JSON) to the next result: a throwaway query takes it.
                self._session.query("SELECT 1", "CSV")
                raise WarehouseError(str(exc).strip()) from exc
        data: bytes = result.bytes() if result is not None else b""
        return data

    def select(self, sql: str, params: dict[str, Any] | None = None,
               settings: dict[str, int | str] | None = None) -> tuple[list[str], list[list[Any]]]:
        out = orjson.loads(self._run(sql, "JSONCompact", params, settings))
        return [c["name"] for c in out["meta"]], out["data"]

    def select_binary(self, sql: str, params: dict[str, Any] | None = None) -> bytes:
        return self._run(sql, "RowBinary", params)

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._run(sql, "CSV", params)

    def insert(self, table: str, rows: list[dict[str, Any]], token: str) -> None:
        if not rows:
            return
        name = identifier(table, "table")
        body = b"\n".join(orjson.dumps(row) for row in rows).decode()
        self._run(f"INSERT INTO {self.database}.{name} SETTINGS insert_deduplication_token = "
                  f"{{token:String}}, {settings_clause(_VIEWS_ON_RETRY)} FORMAT JSONEachRow {body}",
                  "CSV", {"token": token})

    def close(self) -> None:
        with self._lock:
            self._session.close()


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def param_text(value: Any) -> str:
    """A parameter as ClickHouse parses it: in its escaped text format, where a backslash starts an
    escape sequence (``a\\b`` would arrive as ``a`` and a backspace); an array as a literal."""
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_quoted(v) if isinstance(v, str) else _number(v) for v in value) + "]"
    return _number(value)


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"cannot bind {type(value).__name__} as a ClickHouse parameter")


def settings_clause(settings: dict[str, int | str]) -> str:
    """``k = v, ...`` from names that are identifiers and values that are numbers or quoted text."""
    return ", ".join(f"{identifier(k, 'setting')} = {_number(v) if not isinstance(v, str) else _quoted(v)}"
                     for k, v in settings.items())


class ClickhouseWarehouse(Warehouse):
    """A ClickHouse server over HTTP(S) (clickhouse-connect); the same SQL as on chDB."""

    def __init__(self, url: str, database: str = "cardflow", user: str = "default", password: str = "",
                 verify: bool = True, timeout_s: float = 30.0) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        self.database = identifier(database, "warehouse database")
        parsed = urlparse(url)
        self._errors: tuple[type[Exception], ...] = (ClickHouseError,)
        try:
            self._client = clickhouse_connect.get_client(
                host=parsed.hostname or "localhost",
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                username=parsed.username or user, password=unquote(parsed.password or "") or password,
                secure=parsed.scheme == "https", verify=verify, connect_timeout=10,
                send_receive_timeout=timeout_s, autogenerate_session_id=False)
        except ClickHouseError as exc:
            raise WarehouseUnavailable(f"cannot reach the ClickHouse server at {_safe(url)}: {exc}") from exc
        self._client_lock = threading.Lock()  # the HTTP client is not safe for concurrent use
        self.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")

    def _call(self, what: Any) -> Any:
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        with self._client_lock:
            try:
                return what()
            except OperationalError as exc:  # connection refused, reset, timed out
                raise WarehouseUnavailable(str(exc).strip()) from exc
            except DatabaseError as exc:  # the server's own message, without the client's wrapping
                text = str(exc).strip().split("server response: ", 1)[-1]
                raise WarehouseError(re.sub(r"\s*\(for url [^)]*\)$", "", text)) from exc

    def select(self, sql: str, params: dict[str, Any] | None = None,
               settings: dict[str, int | str] | None = None) -> tuple[list[str], list[list[Any]]]:
        # JSONCompact, as chDB: the same values (64-bit integers as strings) from both backends.
        raw = self._call(lambda: self._client.raw_query(sql, parameters=params, settings=settings,
                                                        fmt="JSONCompact"))
        out = orjson.loads(raw)
        return [c["name"] for c in out["meta"]], out["data"]

    def select_binary(self, sql: str, params: dict[str, Any] | None = None) -> bytes:
        data: bytes = self._call(lambda: self._client.raw_query(sql, parameters=params, fmt="RowBinary"))
        return data

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._call(lambda: self._client.command(sql, parameters=params))

    def insert(self, table: str, rows: list[dict[str, Any]], token: str) -> None:
        if not rows:
            return
        name = identifier(table, "table")
        body = b"\n".join(orjson.dumps(row) for row in rows)
        self._call(lambda: self._client.raw_insert(
            f"{self.database}.{name}", insert_block=body, fmt="JSONEachRow",
            settings={"insert_deduplication_token": token, **_VIEWS_ON_RETRY}))

    def close(self) -> None:
        self._client.close()


def _safe(url: str) -> str:
    parsed = urlparse(url)
    return parsed._replace(netloc=parsed.hostname or "").geturl() if parsed.password else url


def warehouse_of(settings: Any) -> Warehouse:
    """The warehouse the settings name (``warehouse_url``, ``warehouse_*``)."""
    return open_warehouse(settings.effective_warehouse_url, settings.warehouse_database,
                          settings.warehouse_user, settings.warehouse_password, settings.warehouse_verify_tls)


def open_warehouse(url: str, database: str = "cardflow", user: str = "default", password: str = "",
                   verify: bool = True) -> Warehouse:
    """The warehouse at ``url``: ``chdb:///path`` (embedded) or ``http(s)://host:port`` (a server)."""
    parsed = urlparse(url)
    if parsed.scheme == "chdb":
        return ChdbWarehouse(Path(unquote(parsed.path)), database)
    if parsed.scheme in ("http", "https"):
        return ClickhouseWarehouse(url, database, user, password, verify)
    raise ConfigError(f"warehouse_url {url!r}: use chdb:///path (embedded) or http(s)://host:8123 (a server)")


def schema_version(wh: Warehouse) -> int:
    wh.command(f"CREATE TABLE IF NOT EXISTS {wh.database}.cardflow_schema (version UInt32, name String, "
               "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version")
    rows = wh.query(f"SELECT max(version) AS v FROM {wh.database}.cardflow_schema")
    return int(rows[0]["v"]) if rows else 0


def _tables(wh: Warehouse) -> set[str]:
    """The names of the database's tables and views."""
    rows = wh.query("SELECT name FROM system.tables WHERE database = {db:String}", {"db": wh.database})
    return {r["name"] for r in rows}


def rederive_last_inserts(wh: Warehouse, topic: str, partitions: list[int]) -> None:
    """Run the materialized views again over the last insert into events of each partition.

    A worker killed inside an insert may leave the block stored in events but not yet in every
    view (the table commits first); the next run skips the rows events holds, so nothing else would
    ever put them in the views. Rows a view already has are not changed by a second pass (sets and
    aggregates), so this is safe whether or not the insert was cut."""
    if not partitions:
        return
    db = wh.database
    have = _tables(wh)
    # A partition's inserts are one loader batch each, stamped with one ingested_at.
    last = (f"(SELECT * FROM {db}.events WHERE kafka_topic = {{t:String}} AND (kafka_partition, ingested_at) "
            f"IN (SELECT kafka_partition, max(ingested_at) FROM {db}.events WHERE kafka_topic = {{t:String}} "
            "AND kafka_partition IN {ps:Array(UInt32)} GROUP BY kafka_partition))")
    for view, fill in _VIEW_FILLS:
        if view in have:
            wh.command(fill.format(db=db).replace(f"{db}.events", last), {"t": topic, "ps": partitions})


def keep_bitmaps(wh: Warehouse, on: bool) -> bool:
    """Setting ``warehouse_bitmaps``: off drops the views that keep bitmapist's bitmaps (the load
    no longer pays for them; the stored bitmaps stay, unread); on puts back a missing view and
    backfills from every loaded event, the ones loaded while off included (bitmaps are ORed and
    flags versioned by offset, so what is there twice counts once). Returns whether it changed
    anything."""
    db = wh.database
    have = _tables(wh)
    changed = False
    for view, create, backfill in _BITMAP_VIEWS:
        if on and view not in have:
            wh.command(create.format(db=db))
            wh.command(backfill.format(db=db))  # after the view: an event loaded between is in both
            changed = True
        elif not on and view in have:
            wh.command(f"DROP VIEW IF EXISTS {db}.{view}")
            changed = True
    return changed


def migrate(wh: Warehouse) -> list[int]:
    """Apply the migrations the database lacks, in order; returns their versions."""
    known = MIGRATIONS[-1][0]
    have = schema_version(wh)
    if have > known:
        raise WarehouseError(f"the warehouse {wh.database!r} has schema version {have}, newer than this "
                             f"cardflow knows ({known}): upgrade cardflow, or point warehouse_url elsewhere")
    applied = []
    for version, name, statements in MIGRATIONS:
        if version <= have:
            continue
        for statement in statements:
            wh.command(statement.format(db=wh.database))
        wh.command(f"INSERT INTO {wh.database}.cardflow_schema (version, name) VALUES "
                   "({version:UInt32}, {name:String})", {"version": version, "name": name})
        applied.append(version)
    return applied
