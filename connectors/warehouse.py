"""The warehouse: events and users in ClickHouse's dialect, on embedded chDB.

``Warehouse`` runs parameterised SQL (every user value is bound as a ClickHouse
query parameter, ``{name:Type}``, never spliced into the text) and inserts rows
with a deduplication token, so a retried batch is stored once.
``migrate`` applies the versioned schema at start: idempotent, recorded in
``cardflow_schema``, refusing a database whose schema is newer than this cardflow.

Status: the chDB backend and the schema; the ClickHouse-server backend
(clickhouse-connect), the warehouse topology and the query API are still to come
(issue 16).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

from cardflow.errors import ConfigError, WarehouseError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

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
]


def identifier(name: str, what: str) -> str:
    """``name`` if it is a plain SQL identifier; a ConfigError naming ``what`` otherwise."""
    if not IDENTIFIER.match(name):
        raise ConfigError(f"{what} {name!r} must be letters, digits and _ (not starting with a digit)")
    return name


class Warehouse:
    """SQL in ClickHouse's dialect. Blocking: call from a thread, never the event loop."""

    database: str

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
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

    def _run(self, sql: str, fmt: str, params: dict[str, Any] | None) -> bytes:
        bound = {k: _escaped(v) for k, v in (params or {}).items()}
        with self._lock:
            try:
                result = self._session.query(sql, fmt, params=bound)
            except Exception as exc:  # noqa: BLE001 - see __init__
                raise WarehouseError(str(exc).strip()) from exc
        data: bytes = result.bytes() if result is not None else b""
        return data

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        out = self._run(sql, "JSONEachRow", params)
        return [orjson.loads(line) for line in out.splitlines() if line]

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._run(sql, "CSV", params)

    def insert(self, table: str, rows: list[dict[str, Any]], token: str) -> None:
        if not rows:
            return
        name = identifier(table, "table")
        body = b"\n".join(orjson.dumps(row) for row in rows).decode()
        self._run(f"INSERT INTO {self.database}.{name} SETTINGS insert_deduplication_token = "
                  f"{{token:String}} FORMAT JSONEachRow {body}", "CSV", {"token": token})

    def close(self) -> None:
        with self._lock:
            self._session.close()


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _escaped(value: Any) -> Any:
    """A parameter as ClickHouse parses it: in its escaped text format, where a backslash starts an
    escape sequence (``a\\b`` would arrive as ``a`` and a backspace)."""
    return value.translate(_ESCAPES) if isinstance(value, str) else value


def open_warehouse(url: str, database: str = "cardflow") -> Warehouse:
    """The warehouse at ``url``: ``chdb:///path`` (embedded)."""
    parsed = urlparse(url)
    if parsed.scheme == "chdb":
        return ChdbWarehouse(Path(unquote(parsed.path)), database)
    if parsed.scheme in ("http", "https"):
        raise ConfigError(f"warehouse_url {url!r}: a ClickHouse server is not supported yet; use "
                          "chdb:///path (embedded)")
    raise ConfigError(f"warehouse_url {url!r}: use chdb:///path")


def schema_version(wh: Warehouse) -> int:
    wh.command(f"CREATE TABLE IF NOT EXISTS {wh.database}.cardflow_schema (version UInt32, name String, "
               "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version")
    rows = wh.query(f"SELECT max(version) AS v FROM {wh.database}.cardflow_schema")
    return int(rows[0]["v"]) if rows else 0


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
