"""The insights query builder: a JSON query (trend, retention, funnel) → parameterised SQL → an answer.

Every user value (event names, property names, filter values) reaches SQL as a bound query
parameter (``{p3:String}``); the only words spliced into the SQL text are the database name (a
validated identifier) and fragments chosen from the fixed tables below. A query is validated
whole before any SQL runs; a mistake is a :class:`QueryError` naming the field and what is allowed.

Properties are schemaless JSON, so a filter compares values of the same JSON type only: a string
value matches string properties, a number matches numbers (compared as Float64), a boolean matches
booleans. ``neq`` is ``not eq`` (events without the property match it), as in product-analytics tools.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from cardflow.builtin_cards import Periods, Retention
from cardflow.connectors.warehouse import Warehouse, identifier
from cardflow.errors import CardError, QueryError

KINDS = ("trend", "retention", "funnel")
AGGREGATIONS = ("count", "unique_users", "sum", "avg", "min", "max", "median", "p90")
OF_PROPERTY = AGGREGATIONS[2:]
PERIODS = ("hour", "day", "week", "month")
OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "contains", "in", "is_set", "is_not_set")
ON = ("event", "user")
NUMERIC = "('Int64', 'UInt64', 'Double')"
TS = "DateTime64(3, 'UTC')"

BUCKET = {
    "hour": "toStartOfHour(ts)",
    "day": "toStartOfDay(ts)",
    "week": "toDateTime(toMonday(ts), 'UTC')",
    "month": "toDateTime(toStartOfMonth(ts), 'UTC')",
}
DAILY_BUCKET = {
    "day": "toDateTime(day, 'UTC')",
    "week": "toDateTime(toMonday(day), 'UTC')",
    "month": "toDateTime(toStartOfMonth(day), 'UTC')",
}
PERIOD_START = {"day": "toDate({x})", "week": "toMonday({x})", "month": "toStartOfMonth({x})"}
AGGREGATE = {
    "count": "count()",
    "unique_users": "uniqExact(uid)",
    "sum": "ifNull(sum({x}), 0)",
    "avg": "avg({x})",
    "min": "min({x})",
    "max": "max({x})",
    "median": "quantileExactInclusive(0.5)({x})",
    "p90": "quantileExactInclusive(0.9)({x})",
}


@dataclass(frozen=True)
class Limits:
    """What one query may ask for (settings ``query_*``)."""

    max_filters: int = 20
    max_in_values: int = 1000
    max_string_chars: int = 1024
    max_points: int = 10_000  # time buckets of a trend, cells of a retention table
    max_breakdown: int = 100
    max_steps: int = 20


@dataclass(frozen=True)
class Filter:
    property: str
    op: str
    value: Any
    on: str = "event"


@dataclass(frozen=True)
class Breakdown:
    property: str
    on: str = "event"


@dataclass
class Sql:
    """SQL under construction: ``bind`` turns a value into a parameter placeholder."""

    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, kind: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{kind}}}"


def _time(value: Any, name: str, end: bool) -> datetime:
    """An ISO date or UTC datetime; a date as ``to`` means the end of that day."""
    if not isinstance(value, str):
        raise QueryError(
            name, f"must be an ISO date (2026-11-01) or UTC datetime (2026-11-01T10:00:00Z), got {value!r}"
        )
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            at = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return at + timedelta(days=1) if end else at
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            name, f"must be an ISO date (2026-11-01) or UTC datetime (2026-11-01T10:00:00Z), got {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _midnight(at: datetime) -> bool:
    return at == at.replace(hour=0, minute=0, second=0, microsecond=0)


def _ms(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def bucket_start(at: datetime, period: str) -> datetime:
    if period == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1) if period == "month" else day


def next_bucket(at: datetime, period: str) -> datetime:
    if period == "month":
        return at.replace(year=at.year + at.month // 12, month=at.month % 12 + 1)
    return at + {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}[period]


class _Reader:
    """Validates one query's JSON, field by field, with messages naming the field."""

    def __init__(self, body: Any, limits: Limits) -> None:
        if not isinstance(body, dict):
            raise QueryError("query", 'must be a JSON object such as {"kind": "trend", "event": "signup"}')
        self.body, self.limits = body, limits

    def get(self, name: str, default: Any = None) -> Any:
        return self.body.get(name, default)

    def text(self, value: Any, name: str, optional: bool = False, empty: bool = False) -> str | None:
        """A name (non-empty) or, with ``empty``, a value (may be "")."""
        if value is None and optional:
            return None
        if not isinstance(value, str) or not (value or empty):
            raise QueryError(name, f"must be a non-empty string, got {value!r}")
        if len(value) > self.limits.max_string_chars:
            raise QueryError(
                name,
                f"is {len(value)} characters; the limit is {self.limits.max_string_chars} "
                "(query_max_string_chars)",
            )
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        value = self.get(name, default)
        if value not in allowed:
            raise QueryError(name, f"must be one of {', '.join(allowed)}; got {value!r}")
        return str(value)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise QueryError(name, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    def scalar(self, value: Any, name: str) -> Any:
        if isinstance(value, str):
            return self.text(value, name, empty=True)
        if isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value)):
            return value
        raise QueryError(name, f"must be a string, a finite number or a boolean, got {value!r}")

    def filters(self) -> tuple[Filter, ...]:
        raw = self.get("filters", [])
        if not isinstance(raw, list):
            raise QueryError("filters", "must be a list of {property, op, value[, on]}")
        if len(raw) > self.limits.max_filters:
            raise QueryError(
                "filters",
                f"has {len(raw)} filters; the limit is {self.limits.max_filters} (query_max_filters)",
            )
        out = []
        for n, item in enumerate(raw):
            where = f"filters[{n}]"
            if not isinstance(item, dict):
                raise QueryError(where, "must be an object {property, op, value[, on]}")
            extra = set(item) - {"property", "op", "value", "on"}
            if extra:
                raise QueryError(where, f"unknown keys {sorted(extra)}; allowed: property, op, value, on")
            prop = self.text(item.get("property"), f"{where}.property")
            op = item.get("op")
            if op not in OPS:
                raise QueryError(f"{where}.op", f"must be one of {', '.join(OPS)}; got {op!r}")
            on = item.get("on", "event")
            if on not in ON:
                raise QueryError(f"{where}.on", f"must be one of {', '.join(ON)}; got {on!r}")
            value = item.get("value")
            if op in ("is_set", "is_not_set"):
                if value is not None:
                    raise QueryError(f"{where}.value", f"{op} takes no value")
            elif op == "in":
                if not isinstance(value, list) or not value:
                    raise QueryError(f"{where}.value", "in takes a non-empty list of values")
                if len(value) > self.limits.max_in_values:
                    raise QueryError(
                        f"{where}.value",
                        f"has {len(value)} values; the limit is "
                        f"{self.limits.max_in_values} (query_max_in_values)",
                    )
                value = tuple(self.scalar(v, f"{where}.value[{i}]") for i, v in enumerate(value))
            elif op == "contains":
                value = self.text(value, f"{where}.value", empty=True)
            else:
                value = self.scalar(value, f"{where}.value")
                if op in ("gt", "gte", "lt", "lte") and isinstance(value, bool):
                    raise QueryError(f"{where}.value", f"{op} compares numbers or strings, got {value!r}")
            assert isinstance(prop, str)
            out.append(Filter(prop, op, value, on))
        return tuple(out)

    def breakdown(self) -> Breakdown | None:
        raw = self.get("breakdown")
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = {"property": raw}
        if not isinstance(raw, dict) or set(raw) - {"property", "on"}:
            raise QueryError("breakdown", "must be a property name or {property, on: event | user}")
        on = raw.get("on", "event")
        if on not in ON:
            raise QueryError("breakdown.on", f"must be one of {', '.join(ON)}; got {on!r}")
        prop = self.text(raw.get("property"), "breakdown.property")
        assert prop is not None
        return Breakdown(prop, on)

    def span(self, default_days: int = 30) -> tuple[datetime, datetime]:
        to = _time(self.get("to"), "to", end=True) if self.get("to") is not None else datetime.now(UTC)
        start = (
            _time(self.get("from"), "from", end=False)
            if self.get("from") is not None
            else to - timedelta(days=default_days)
        )
        if start >= to:
            raise QueryError(
                "from", f"must be before to ({start.isoformat()} is not before {to.isoformat()})"
            )
        return start, to


# -- SQL fragments over a JSON column (``properties`` of events or users) ---------------------------


def _typed(sql: Sql, column: str, key: str, value: Any) -> tuple[str, str]:
    """(type guard, typed extraction, with the value bound) for comparing ``column[key]`` to ``value``."""
    k = sql.bind(key, "String")
    if isinstance(value, bool):
        return f"JSONType({column}, {k}) = 'Bool'", f"JSONExtractBool({column}, {k})"
    if isinstance(value, int | float):
        return f"JSONType({column}, {k}) IN {NUMERIC}", f"JSONExtractFloat({column}, {k})"
    return f"JSONType({column}, {k}) = 'String'", f"JSONExtractString({column}, {k})"


def _bind_scalar(sql: Sql, value: Any) -> str:
    if isinstance(value, bool):
        return sql.bind(int(value), "UInt8")
    if isinstance(value, int | float):
        return sql.bind(float(value), "Float64")
    return sql.bind(value, "String")


def condition(sql: Sql, column: str, f: Filter) -> str:
    if f.op in ("is_set", "is_not_set"):
        has = f"JSONHas({column}, {sql.bind(f.property, 'String')})"
        return has if f.op == "is_set" else f"NOT {has}"
    if f.op == "in":
        groups: dict[type, list[Any]] = {}
        for v in f.value:
            groups.setdefault(
                bool if isinstance(v, bool) else float if isinstance(v, int | float) else str, []
            ).append(v)
        parts = []
        for kind, values in groups.items():
            guard, x = _typed(sql, column, f.property, values[0])
            if kind is bool:
                items = sql.bind([int(v) for v in values], "Array(UInt8)")
            elif kind is float:
                items = sql.bind([float(v) for v in values], "Array(Float64)")
            else:
                items = sql.bind(values, "Array(String)")
            parts.append(f"({guard} AND has({items}, {x}))")
        return "(" + " OR ".join(parts) + ")"
    if f.op == "contains":
        guard, x = _typed(sql, column, f.property, f.value)
        return f"({guard} AND position({x}, {sql.bind(f.value, 'String')}) > 0)"
    guard, x = _typed(sql, column, f.property, f.value)
    op = {"eq": "=", "neq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[f.op]
    test = f"({guard} AND {x} {op} {_bind_scalar(sql, f.value)})"
    return f"NOT {test}" if f.op == "neq" else test


def number(sql: Sql, column: str, key: str) -> str:
    k = sql.bind(key, "String")
    return f"if(JSONType({column}, {k}) IN {NUMERIC}, JSONExtractFloat({column}, {k}), NULL)"


def label(sql: Sql, column: str, key: str) -> str:
    """A breakdown value: the string itself, other JSON values as their JSON text, NULL when not set."""
    k = sql.bind(key, "String")
    return (
        f"if(JSONType({column}, {k}) = 'String', JSONExtractString({column}, {k}), "
        f"if(JSONHas({column}, {k}), JSONExtractRaw({column}, {k}), NULL))"
    )


def where(sql: Sql, db: str, filters: tuple[Filter, ...]) -> list[str]:
    clauses = [condition(sql, "properties", f) for f in filters if f.on == "event"]
    users = [condition(sql, "properties", f) for f in filters if f.on == "user"]
    if users:
        clauses.append(f"uid IN (SELECT uid FROM {db}.users FINAL WHERE {' AND '.join(users)})")
    return clauses


def _source(db: str, breakdown: Breakdown | None, sql: Sql) -> tuple[str, str]:
    """(FROM clause, breakdown expression) — users joined when the breakdown is a user property."""
    if breakdown is None:
        return f"{db}.events FINAL", "NULL"
    if breakdown.on == "user":
        return (
            f"{db}.events FINAL LEFT JOIN (SELECT uid, properties AS user_properties FROM "
            f"{db}.users FINAL) AS u USING uid",
            label(sql, "u.user_properties", breakdown.property),
        )
    return f"{db}.events FINAL", label(sql, "properties", breakdown.property)


# -- the three kinds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    sql: str
    params: dict[str, Any]
    shape: Callable[[list[dict[str, Any]]], dict[str, Any]]


def compile_query(body: Any, database: str, limits: Limits = Limits()) -> Compiled:
    """Validate ``body`` and build its SQL; raises QueryError naming the first wrong field."""
    db = identifier(database, "warehouse database")
    reader = _Reader(body, limits)
    kind = reader.choice("kind", KINDS, "trend")
    allowed = {
        "trend": {
            "event",
            "aggregation",
            "property",
            "period",
            "from",
            "to",
            "filters",
            "breakdown",
            "limit",
        },
        "retention": {
            "cohort_event",
            "return_event",
            "period",
            "periods",
            "after",
            "form",
            "start_date",
            "as_of",
        },
        "funnel": {"steps", "window_seconds", "from", "to", "filters", "breakdown", "limit"},
    }[kind]
    extra = set(reader.body) - allowed - {"kind"}
    if extra:
        raise QueryError(sorted(extra)[0], f"is not a {kind} field; allowed: {', '.join(sorted(allowed))}")
    return {"trend": _trend, "retention": _retention, "funnel": _funnel}[kind](reader, db)


def _trend(r: _Reader, db: str) -> Compiled:
    sql = Sql()
    event = r.text(r.get("event"), "event", optional=True)
    aggregation = r.choice("aggregation", AGGREGATIONS, "count")
    prop = r.text(r.get("property"), "property", optional=aggregation not in OF_PROPERTY)
    if aggregation not in OF_PROPERTY and prop is not None:
        raise QueryError("property", f"only {', '.join(OF_PROPERTY)} aggregate a property")
    period = r.choice("period", PERIODS, "day")
    start, to = r.span()
    buckets = []
    at = bucket_start(start, period)
    while at < to:
        buckets.append(at)
        if len(buckets) > r.limits.max_points:
            raise QueryError(
                "period",
                f"{period} buckets from {start:%Y-%m-%d} to {to:%Y-%m-%d} are more than "
                f"{r.limits.max_points} (query_max_points): use a longer period",
            )
        at = next_bucket(at, period)
    filters, breakdown = r.filters(), r.breakdown()
    limit = r.integer("limit", 10, 1, r.limits.max_breakdown)
    # Unique users by day, week or month over whole days, without event-property filters or a
    # breakdown, read the user_days aggregate (a row per user and active day) instead of the events.
    daily = (
        aggregation == "unique_users"
        and period != "hour"
        and breakdown is None
        and not any(f.on == "event" for f in filters)
        and _midnight(start)
        and _midnight(to)
    )
    x = number(sql, "properties", prop) if prop is not None else ""
    if daily:
        source, split, bucket = f"{db}.user_days", "NULL", DAILY_BUCKET[period]
        clauses = [
            f"day >= {sql.bind(start.date().isoformat(), 'Date')}",
            f"day < {sql.bind(to.date().isoformat(), 'Date')}",
            f"event = {sql.bind(event or '', 'String')}",
        ]
    else:
        source, split = _source(db, breakdown, sql)
        bucket = BUCKET[period]
        clauses = [f"ts >= {sql.bind(_ms(start), TS)}", f"ts < {sql.bind(_ms(to), TS)}"]
        if event is not None:
            clauses.append(f"event = {sql.bind(event, 'String')}")
    clauses += where(sql, db, filters)
    inner = (
        f"SELECT toUnixTimestamp({bucket}) AS t, {split} AS b, "
        f"{AGGREGATE[aggregation].format(x=x)} AS v, count() AS n "
        f"FROM {source} WHERE {' AND '.join(clauses)} GROUP BY t, b"
    )
    text = (
        f"SELECT t, b, v FROM (SELECT t, b, v, dense_rank() OVER (ORDER BY total DESC, b ASC NULLS LAST) "
        f"AS r FROM (SELECT t, b, v, sum(n) OVER (PARTITION BY b) AS total FROM ({inner}))) "
        f"WHERE r <= {sql.bind(limit, 'UInt32')} ORDER BY r, t"
    )
    zero: Any = 0 if aggregation in ("count", "unique_users", "sum") else None

    def shape(rows: list[dict[str, Any]]) -> dict[str, Any]:
        series: dict[Any, dict[int, Any]] = {}
        for row in rows:
            series.setdefault(row["b"], {})[int(row["t"])] = _value(row["v"])
        stamps = [int(b.timestamp()) for b in buckets]
        return {
            "kind": "trend",
            "aggregation": aggregation,
            "period": period,
            "buckets": [b.strftime("%Y-%m-%dT%H:%M:%SZ") for b in buckets],
            "series": [
                {"breakdown": b, "values": [points.get(s, zero) for s in stamps]}
                for b, points in series.items()
            ]
            if series or breakdown
            else [{"breakdown": None, "values": [zero] * len(stamps)}],
        }

    return Compiled(text, sql.params, shape)


def _value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, str):  # 64-bit integers come quoted in JSONEachRow
        return int(v)
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v


def _retention(r: _Reader, db: str) -> Compiled:
    sql = Sql()
    names = {"day": "days", "week": "weeks", "month": "months"}
    period = r.choice("period", tuple(names), "day")
    rows = r.integer("periods", 14, 1, 400)
    after = r.integer("after", 12, 0, 400)
    if rows * (after + 1) > r.limits.max_points:
        raise QueryError(
            "periods",
            f"{rows} rows × {after + 1} cells are more than {r.limits.max_points} (query_max_points)",
        )
    params = {
        "cohort_event": r.text(r.get("cohort_event"), "cohort_event", optional=True),
        "return_event": r.text(r.get("return_event"), "return_event", optional=True),
        "period": names[period],
        "form": r.choice("form", ("first", "every"), "first"),
        "periods": rows,
        "after": after,
        "start_date": r.get("start_date"),
        "as_of": r.get("as_of"),
    }
    for name in ("start_date", "as_of"):
        if params[name] is not None:
            try:
                date.fromisoformat(params[name])
            except (TypeError, ValueError):
                raise QueryError(
                    name, f"must be an ISO date such as 2026-11-25, got {params[name]!r}"
                ) from None
    card = Retention(**params)
    try:
        periods = card.calendar()
    except CardError as exc:
        raise QueryError("retention", str(exc)) from None
    lo = datetime.combine(periods.dates[0], datetime.min.time(), UTC)
    lo = bucket_start(lo, period)
    hi = next_bucket(
        bucket_start(datetime.combine(periods.dates[-1], datetime.min.time(), UTC), period), period
    )
    # From the user_days / user_first aggregates (migration 2): a row per user and active day, and
    # per user and first time, instead of every event. Event "" there means any event.
    start = PERIOD_START[period]
    each = start.format(x="day")
    low, high = sql.bind(lo.date().isoformat(), "Date"), sql.bind(hi.date().isoformat(), "Date")
    span = f"day >= {low} AND day < {high}"
    cohort_event, return_event = params["cohort_event"], params["return_event"]
    if cohort_event is None or params["form"] == "first":  # first seen (any event), or first of one
        cohort = (
            f"SELECT uid, {start.format(x='min(first_ts)')} AS p FROM {db}.user_first "
            f"WHERE event = {sql.bind(cohort_event or '', 'String')} "
            f"GROUP BY uid HAVING p >= {low} AND p < {high}"
        )
    else:
        cohort = (
            f"SELECT DISTINCT uid, {each} AS p FROM {db}.user_days "
            f"WHERE event = {sql.bind(cohort_event, 'String')} AND {span}"
        )
    back = f"FROM {db}.user_days WHERE event = {sql.bind(return_event or '', 'String')} AND {span}"
    # "returned" only tells whether anyone came back in a period (the card's blank cells): rows, not
    # users, so it needs no DISTINCT; "both" reads the cohort's users only, and counts each once.
    text = (
        f"WITH cohort AS ({cohort}) "
        "SELECT 'size' AS kind, p, p AS q, count() AS n FROM cohort GROUP BY p "
        "UNION ALL SELECT 'returned' AS kind, q AS p, q, count() AS n "
        f"FROM (SELECT {each} AS q {back}) GROUP BY q "
        "UNION ALL SELECT 'both' AS kind, p, q, uniqExact(uid) AS n FROM cohort INNER JOIN "
        f"(SELECT uid, {each} AS q {back} AND uid IN (SELECT uid FROM cohort)) AS back USING uid "
        "WHERE q >= p GROUP BY p, q"
    )

    def shape(found: list[dict[str, Any]]) -> dict[str, Any]:
        size: Counter[int] = Counter()
        both: Counter[tuple[int, int]] = Counter()
        returned: Counter[int] = Counter()
        for row in found:
            i, j = _index(periods, row["p"]), _index(periods, row["q"])
            n = int(row["n"])
            if row["kind"] == "size" and i is not None and i < rows:
                size[i] += n
            elif row["kind"] == "returned" and j is not None:
                returned[j] += n
            elif (
                row["kind"] == "both" and i is not None and j is not None and i < rows and 0 <= j - i <= after
            ):
                both[(i, j - i)] += n
        cells = card.cells({"size": size, "both": both, "returned": returned})
        return {
            "kind": "retention",
            "period": period,
            "rows": [{"date": d, "size": n, "counts": counts} for d, n, counts in cells],
        }

    return Compiled(text, sql.params, shape)


def _index(periods: Periods, day: str) -> int | None:
    return periods.index.get(periods.key(date.fromisoformat(day)))


def _funnel(r: _Reader, db: str) -> Compiled:
    sql = Sql()
    raw = r.get("steps")
    if not isinstance(raw, list) or not raw:
        raise QueryError("steps", "must be a non-empty list of event names, in order")
    if len(raw) > r.limits.max_steps:
        raise QueryError("steps", f"has {len(raw)} steps; the limit is {r.limits.max_steps}")
    steps = [r.text(s, f"steps[{n}]") for n, s in enumerate(raw)]
    window = r.integer("window_seconds", 7 * 86_400, 1, 366 * 86_400)
    start, to = r.span()
    filters, breakdown = r.filters(), r.breakdown()
    limit = r.integer("limit", 10, 1, r.limits.max_breakdown)
    source, split = _source(db, breakdown, sql)
    marks = ", ".join(f"event = {sql.bind(s, 'String')}" for s in steps)
    first = sql.bind(steps[0], "String")
    clauses = [
        f"ts >= {sql.bind(_ms(start), TS)}",
        f"ts < {sql.bind(_ms(to), TS)}",
        f"event IN {sql.bind(sorted(set(steps)), 'Array(String)')}",
        *where(sql, db, filters),
    ]
    # The breakdown value of a user is the one on their first first-step event in the range.
    per_user = (
        f"SELECT uid, windowFunnel({sql.bind(window * 1000, 'UInt64')})"
        f"(toUInt64(toUnixTimestamp64Milli(ts)), {marks}) AS level, "
        f"argMinIf({split}, ts, event = {first}) AS b "
        f"FROM {source} WHERE {' AND '.join(clauses)} GROUP BY uid"
    )
    text = (
        f"SELECT level, b, n FROM (SELECT level, b, n, dense_rank() OVER (ORDER BY total DESC, "
        f"b ASC NULLS LAST) AS r FROM (SELECT level, b, n, sum(n) OVER (PARTITION BY b) AS total FROM "
        f"(SELECT level, b, count() AS n FROM ({per_user}) WHERE level > 0 GROUP BY level, b))) "
        f"WHERE r <= {sql.bind(limit, 'UInt32')} ORDER BY r, level"
    )

    def shape(rows: list[dict[str, Any]]) -> dict[str, Any]:
        levels: dict[Any, Counter[int]] = {}
        for row in rows:
            levels.setdefault(row["b"], Counter())[int(row["level"])] += int(row["n"])
        if not levels and breakdown is None:
            levels[None] = Counter()
        series = []
        for b, at in levels.items():
            reached = [sum(n for level, n in at.items() if level > k) for k in range(len(steps))]
            series.append(
                {
                    "breakdown": b,
                    "steps": [
                        {"event": s, "users": n, "conversion": n / reached[0] if reached[0] else None}
                        for s, n in zip(steps, reached, strict=True)
                    ],
                }
            )
        return {"kind": "funnel", "window_seconds": window, "series": series}

    return Compiled(text, sql.params, shape)


def run_query(wh: Warehouse, body: Any, limits: Limits = Limits()) -> dict[str, Any]:
    """Answer one insights query (blocking; uncached: see :class:`Answers`)."""
    return answer(wh, compile_query(body, wh.database, limits))


def answer(wh: Warehouse, compiled: Compiled) -> dict[str, Any]:
    """Run a compiled query and shape its rows (NULL breakdown values match in IN lists)."""
    return compiled.shape(wh.query(compiled.sql, compiled.params, settings={"transform_null_in": 1}))


class Answers:
    """Insights, SQL and the warehouse's vocabulary, with answers cached until the data changes.

    The watermark is the active parts of ``events`` and ``users`` (count, rows, newest change) from
    ``system.parts``: every insert that stores rows makes a part, so an unchanged watermark means an
    unchanged answer. Queries whose range ends "now" key on their resolved times, so they refresh."""

    def __init__(self, wh: Warehouse, limits: Limits, sql_limits: Any, entries: int) -> None:
        self.wh, self.limits, self.sql_limits, self.entries = wh, limits, sql_limits, entries
        self._cache: dict[bytes, tuple[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def watermark(self) -> str:
        rows = self.wh.query(
            "SELECT count() AS parts, sum(rows) AS rows, toString(max(modification_time)) AS at "
            "FROM system.parts WHERE database = {db:String} AND table IN ('events', 'users') "
            "AND active",
            {"db": self.wh.database},
        )
        r = rows[0] if rows else {}
        return f"{r.get('parts')}/{r.get('rows')}/{r.get('at')}"

    def _cached(self, key: bytes, make: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        mark = self.watermark()
        with self._lock:
            held = self._cache.get(key)
        if held is not None and held[0] == mark:
            return held[1], True
        answer = {**make(), "watermark": mark}
        if self.entries:
            with self._lock:
                self._cache.pop(key, None)
                self._cache[key] = (mark, answer)
                while len(self._cache) > self.entries:  # the oldest entry goes first
                    del self._cache[next(iter(self._cache))]
        return answer, False

    def query(self, body: Any) -> tuple[dict[str, Any], bool]:
        compiled = compile_query(body, self.wh.database, self.limits)
        key = orjson.dumps([compiled.sql, compiled.params], option=orjson.OPT_SORT_KEYS)
        return self._cached(key, lambda: answer(self.wh, compiled))

    def schema(self) -> tuple[dict[str, Any], bool]:
        db = self.wh.database

        def make() -> dict[str, Any]:
            events = self.wh.query(
                f"SELECT event, count() AS n FROM {db}.events GROUP BY event "
                "ORDER BY n DESC, event LIMIT 1000"
            )
            keys = self.wh.query(
                f"SELECT arrayJoin(JSONExtractKeys(properties)) AS k, count() AS n FROM {db}.events "
                "GROUP BY k ORDER BY n DESC, k LIMIT 500"
            )
            user_keys = self.wh.query(
                f"SELECT arrayJoin(JSONExtractKeys(properties)) AS k, count() AS n FROM "
                f"{db}.users FINAL GROUP BY k ORDER BY n DESC, k LIMIT 500"
            )
            return {
                "events": [r["event"] for r in events],
                "event_properties": [r["k"] for r in keys],
                "user_properties": [r["k"] for r in user_keys],
            }

        return self._cached(b"schema", make)

    def sql(self, text: Any) -> dict[str, Any]:
        from cardflow.sql_policy import run_sql

        return run_sql(self.wh, text, self.sql_limits)
