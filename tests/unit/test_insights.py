"""The insights query builder on both backends (embedded chDB, and clickhouse-connect against a
ClickHouse HTTP endpoint): every query kind, aggregation, period, filter op and breakdown equals
a reference computed in plain Python; hostile names and values never reach SQL as text."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardflow.connectors.warehouse import ChdbWarehouse, ClickhouseWarehouse, Warehouse, migrate
from cardflow.errors import QueryError
from cardflow.insights import AGGREGATIONS, OPS, Answers, Limits, compile_query, run_query
from cardflow.sql_policy import SqlLimits, run_sql
from tests import insights_truth as truth

pytestmark = pytest.mark.unit

END = date(2026, 11, 30)
EVENTS, USERS = truth.generate(400, 45, seed=16, end=END)
HOSTILE = [
    "it's",
    'quote"d',
    "back\\slash",
    "\\",
    "nul\x00byte",
    "'; DROP TABLE events; --",
    "{p0:String}",
    "ü✓🙂",
    "tab\tnew\nline",
    ") OR 1=1 --",
    "x" * 1024,
]


def _dt(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def load(wh: Warehouse) -> None:
    wh.command(f"DROP DATABASE IF EXISTS {wh.database}")
    wh.command(f"CREATE DATABASE {wh.database}")
    migrate(wh)
    rows = [
        {
            "event_id": f"e{n}",
            "uid": e["uid"],
            "event": e["event"],
            "ts": _dt(e["ts"]),
            "properties": orjson.dumps(e["properties"]).decode(),
            "set_properties": "{}",
            "source": "test",
            "kafka_topic": "events",
            "kafka_partition": 0,
            "kafka_offset": n,
            "ingested_at": _dt(e["ts"]),
        }
        for n, e in enumerate(EVENTS)
    ]
    wh.insert("events", rows, "events/0/all")
    wh.insert("events", rows[:50], "events/0/again")  # the same events twice: FINAL keeps one of each
    users = [
        {
            "uid": uid,
            "properties": orjson.dumps(p).decode(),
            "properties_once": "{}",
            "first_seen": _dt(0),
            "last_seen": _dt(0),
            "events": 1,
            "version": v,
            "updated_at": _dt(0),
        }
        for uid, p in USERS.items()
        for v in (1, 2)
    ]
    for row in users:
        if row["version"] == 1:
            row["properties"] = '{"country": "stale"}'  # an older version: the latest wins
    wh.insert("users", users, "users/0/all")


@pytest.fixture(scope="module", params=["chdb", "clickhouse-http"])
def wh(request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    if request.param == "chdb":
        engine: ChdbWarehouse = request.getfixturevalue("chdb_engine")
        made = copy.copy(engine)  # the process's one engine, in a database of this module's
        made.database = "insights_test"
        load(made)
        yield made
        return
    server = ClickhouseWarehouse(request.getfixturevalue("clickhouse_url"), "insights_test")
    load(server)
    yield server
    server.close()


def same(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """Equal, floats to 1e-9 relative (sums and quantiles add in another order)."""
    a, b = _flat(got), _flat(want)
    return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))


def _flat(x: Any) -> list[Any]:
    if isinstance(x, dict):
        return [("k", k) for k in x] + [v for k in x for v in _flat(x[k])]
    if isinstance(x, list):
        return [v for item in x for v in _flat(item)]
    return [x]


def _close(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool or a is None or b is None:
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)


def trend(wh: Warehouse, q: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    got = run_query(wh, {"kind": "trend", **q})
    return {"buckets": got["buckets"], "series": got["series"]}, truth.trend(EVENTS, USERS, q)


def funnel(wh: Warehouse, q: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    got = run_query(wh, {"kind": "funnel", **q})
    return (
        {
            "series": [
                {"breakdown": s["breakdown"], "users": [x["users"] for x in s["steps"]]}
                for s in got["series"]
            ]
        },
        truth.funnel(EVENTS, USERS, q),
    )


SPAN = {"from": "2026-10-20", "to": "2026-11-30"}


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("period", ["hour", "day", "week", "month"])
def test_each_aggregation_and_period(wh: Warehouse, aggregation: str, period: str) -> None:
    span = {"from": "2026-11-28", "to": "2026-11-29"} if period == "hour" else SPAN
    q = {"event": "purchase", "aggregation": aggregation, "period": period, **span}
    if aggregation not in ("count", "unique_users"):
        q["property"] = "amount"
    got, want = trend(wh, q)
    assert same(got, want), (got, want)


FILTERS = [
    {"property": "browser", "op": "eq", "value": "firefox"},
    {"property": "browser", "op": "neq", "value": "firefox"},
    {"property": "amount", "op": "gt", "value": 250},
    {"property": "amount", "op": "gte", "value": 250.25},
    {"property": "amount", "op": "lt", "value": 10},
    {"property": "amount", "op": "lte", "value": 10},
    {"property": "amount_text", "op": "gt", "value": "5"},  # strings compare as strings
    {"property": "amount", "op": "eq", "value": "7"},  # a string never equals a number
    {"property": "browser", "op": "contains", "value": "fire"},
    {"property": "browser", "op": "in", "value": ["safari", "chrome", 3]},
    {"property": "flag", "op": "eq", "value": True},
    {"property": "flag", "op": "in", "value": [False]},
    {"property": "flag", "op": "is_set"},
    {"property": "flag", "op": "is_not_set"},
    {"property": "country", "op": "eq", "value": "DE", "on": "user"},
    {"property": "plan", "op": "in", "value": ["pro", 3, True], "on": "user"},
    {"property": "plan", "op": "is_not_set", "on": "user"},
    {"property": "country", "op": "contains", "value": "'\"\\;", "on": "user"},
]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: f"{f.get('on', 'event')}-{f['op']}-{f['property']}")
def test_each_filter_op(wh: Warehouse, f: dict[str, Any]) -> None:
    got, want = trend(wh, {"aggregation": "unique_users", "period": "week", **SPAN, "filters": [f]})
    assert same(got, want), (got, want)
    assert sum(want["series"][0]["values"]) > 0 or f["op"] in ("eq",)  # the filter selects something


@pytest.mark.parametrize(
    "breakdown",
    [
        "browser",
        "amount",
        "flag",
        {"property": "country", "on": "user"},
        {"property": "plan", "on": "user"},
        {"property": "missing"},
    ],
)
def test_breakdowns_with_filters(wh: Warehouse, breakdown: Any) -> None:
    q = {
        "aggregation": "count",
        "period": "week",
        **SPAN,
        "breakdown": breakdown,
        "limit": 4,
        "filters": [{"property": "amount", "op": "gte", "value": 20}],
    }
    got, want = trend(wh, q)
    assert same(got, want), (got, want)
    assert len(want["series"]) >= 1


@pytest.mark.parametrize(
    "q",
    [
        {"steps": ["signup", "page_view", "purchase"], **SPAN},
        {"steps": ["page_view", "purchase"], "window_seconds": 3600 * 6, **SPAN},
        {"steps": ["signup", "page_view", "signup"], **SPAN},  # a step repeated
        {"steps": ["search", "purchase"], **SPAN, "breakdown": "browser"},
        {
            "steps": ["search", "share"],
            **SPAN,
            "breakdown": {"property": "country", "on": "user"},
            "filters": [{"property": "browser", "op": "neq", "value": "safari"}],
        },
        {"steps": ["nothing-like-it", "purchase"], **SPAN},
    ],
)
def test_funnels(wh: Warehouse, q: dict[str, Any]) -> None:
    got, want = funnel(wh, q)
    assert got == want


def test_retention_cells_follow_the_cards_rules(wh: Warehouse) -> None:
    got = run_query(
        wh, {"kind": "retention", "period": "day", "periods": 10, "after": 5, "as_of": "2026-11-30"}
    )
    first: dict[str, int] = {}
    days: dict[str, set[date]] = {}
    for e in EVENTS:
        d = datetime.fromtimestamp(e["ts"] / 1000, UTC).date()
        first[e["uid"]] = min(first.get(e["uid"], e["ts"]), e["ts"])
        days.setdefault(e["uid"], set()).add(d)
    rows = got["rows"]
    assert [r["date"] for r in rows] == [f"2026-11-{d:02}" for d in range(21, 31)]
    for r in rows:
        day = date.fromisoformat(r["date"])
        cohort = [u for u, ms in first.items() if datetime.fromtimestamp(ms / 1000, UTC).date() == day]
        assert r["size"] == len(cohort)
        for k, cell in enumerate(r["counts"]):
            later = date.fromordinal(day.toordinal() + k)
            anyone = any(later in ds for ds in days.values())
            assert cell == (sum(later in days[u] for u in cohort) if cohort and anyone else None)


BAD = [
    ({"kind": "pie"}, "kind"),
    ([], "query"),
    ({"aggregation": "total"}, "aggregation"),
    ({"aggregation": "sum"}, "property"),
    ({"aggregation": "count", "property": "x"}, "property"),
    ({"period": "minute"}, "period"),
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-11-02", "to": "2026-11-01"}, "from"),
    ({"filters": {"property": "x"}}, "filters"),
    ({"filters": [{"property": "x", "op": "like", "value": 1}]}, "filters[0].op"),
    ({"filters": [{"property": "", "op": "eq", "value": 1}]}, "filters[0].property"),
    ({"filters": [{"property": "x", "op": "eq", "value": None}]}, "filters[0].value"),
    ({"filters": [{"property": "x", "op": "eq", "value": {"a": 1}}]}, "filters[0].value"),
    ({"filters": [{"property": "x", "op": "gt", "value": True}]}, "filters[0].value"),
    ({"filters": [{"property": "x", "op": "in", "value": []}]}, "filters[0].value"),
    ({"filters": [{"property": "x", "op": "is_set", "value": 3}]}, "filters[0].value"),
    ({"filters": [{"property": "x", "op": "eq", "value": 1, "on": "group"}]}, "filters[0].on"),
    ({"filters": [{"property": "x", "op": "eq", "value": float("inf")}]}, "filters[0].value"),
    ({"filters": [{"property": "x" * 1025, "op": "eq", "value": 1}]}, "filters[0].property"),
    (
        {"filters": [{"property": "x", "op": "eq", "value": 1}]}
        | {"filters": [{"property": "x", "op": "eq", "value": 1}] * 21},
        "filters",
    ),
    ({"breakdown": 3}, "breakdown"),
    ({"limit": 0}, "limit"),
    ({"limit": "5"}, "limit"),
    ({"period": "hour", "from": "2020-01-01", "to": "2026-01-01"}, "period"),
    ({"select": "*"}, "select"),
    ({"kind": "funnel", "steps": []}, "steps"),
    ({"kind": "funnel", "steps": ["a", 3]}, "steps[1]"),
    ({"kind": "retention", "periods": 0}, "periods"),
    ({"kind": "retention", "as_of": "soon"}, "as_of"),
    ({"kind": "retention", "form": "last"}, "form"),
    ({"kind": "retention", "periods": 400, "after": 400}, "periods"),
]


@pytest.mark.parametrize(("body", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_queries_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(QueryError) as info:
        compile_query(body, "cardflow", Limits())
    assert info.value.field == field, str(info.value)


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_and_values_are_data(wh: Warehouse, text: str) -> None:
    """As event name, property name, filter value and breakdown: correct (empty) answers, no error."""
    for q in (
        {"event": text, **SPAN},
        {**SPAN, "filters": [{"property": text, "op": "is_set"}]},
        {**SPAN, "filters": [{"property": "browser", "op": "in", "value": [text, "firefox"]}]},
        {**SPAN, "filters": [{"property": text, "op": "eq", "value": text, "on": "user"}]},
        {**SPAN, "breakdown": {"property": text, "on": "user"}, "event": "share"},
    ):
        got, want = trend(wh, {"period": "week", **q})
        assert same(got, want), (q, got, want)
    got, want = funnel(wh, {"steps": [text, "purchase"], **SPAN, "breakdown": text})
    assert got == want


values = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 600),
    st.sampled_from(["firefox", "DE", "pro", "5"]),
    st.booleans(),
    st.floats(-10, 600, allow_nan=False),
)
filters = st.fixed_dictionaries(
    {
        "property": st.sampled_from(["browser", "amount", "flag", "amount_text", "nope", "country", "plan"]),
        "op": st.sampled_from(OPS),
        "on": st.sampled_from(["event", "user"]),
    },
).flatmap(
    lambda f: (
        st.just(f)
        if f["op"] in ("is_set", "is_not_set")
        else (
            st.lists(values, min_size=1, max_size=4)
            if f["op"] == "in"
            else st.text(min_size=1, max_size=6)
            if f["op"] == "contains"
            else values.filter(lambda v: not (isinstance(v, bool) and f["op"] in ("gt", "gte", "lt", "lte")))
        ).map(lambda v: {**f, "value": v})
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fs=st.lists(filters, max_size=3), aggregation=st.sampled_from(["count", "unique_users", "max"]))
def test_generated_filters_equal_the_reference(
    wh: Warehouse, fs: list[dict[str, Any]], aggregation: str
) -> None:
    q = {"aggregation": aggregation, "period": "month", **SPAN, "filters": fs}
    if aggregation == "max":
        q["property"] = "amount"
    got, want = trend(wh, q)
    assert same(got, want), (q, got, want)


def test_answers_are_cached_until_the_warehouse_changes(wh: Warehouse) -> None:
    answers = Answers(wh, Limits(), SqlLimits(), entries=8)
    q = {"kind": "trend", "event": "purchase", **SPAN}
    first, hit = answers.query(q)
    assert not hit
    again, hit = answers.query(dict(reversed(list(q.items()))))  # the same query, keys in another order
    assert hit and again == first
    wh.insert(
        "events",
        [
            {
                "event_id": "cache-1",
                "uid": "cache-user",
                "event": "purchase",
                "ts": "2026-11-29 10:00:00.000",
                "properties": "{}",
                "set_properties": "{}",
                "source": "test",
                "kafka_topic": "events",
                "kafka_partition": 9,
                "kafka_offset": 0,
                "ingested_at": "2026-11-29 10:00:00.000",
            }
        ],
        "cache-test",
    )
    fresh, hit = answers.query(q)
    assert not hit and sum(fresh["series"][0]["values"]) == sum(first["series"][0]["values"]) + 1
    for table in ("events", "user_days", "user_first"):  # leave the data as the other tests expect it
        wh.command(
            f"ALTER TABLE {wh.database}.{table} DELETE WHERE uid = 'cache-user' SETTINGS mutations_sync = 1"
        )


REFUSED = [
    "INSERT INTO insights_test.events (uid) VALUES ('x')",
    "DROP TABLE insights_test.events",
    "SET readonly = 0",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1; DROP TABLE insights_test.events",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT * FROM url('http://127.0.0.1:1/', CSV)",
    "SELECT * FROM system.users",
    "SELECT 1 INTO OUTFILE '/tmp/x'",
    "SELECT 1 FORMAT CSV",
    "ALTER TABLE insights_test.events DELETE WHERE 1",
    "SELECT * FROM (SELECT * FROM s3('http://x/y'))",
    "CREATE TABLE t (a Int8) ENGINE = Memory",
    "SELECT ')",
    "SELECT * FROM insights_test.nope",
    "",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "select 1 /* SETTINGS */ settings max_threads = 1",
    "KILL QUERY WHERE 1",
]


@pytest.mark.parametrize("text", REFUSED)
def test_sql_refuses_anything_but_one_read(wh: Warehouse, text: str) -> None:
    before = wh.query(f"SELECT count() AS n FROM {wh.database}.events")
    with pytest.raises(QueryError) as info:
        run_sql(wh, text, SqlLimits(max_seconds=5))
    assert info.value.field == "sql"
    assert wh.query(f"SELECT count() AS n FROM {wh.database}.events") == before


def test_sql_answers_reads_within_its_limits(wh: Warehouse) -> None:
    got = run_sql(
        wh,
        f"-- a comment\nSELECT event, count(), count() FROM {wh.database}.events FINAL "
        "GROUP BY event ORDER BY event",
        SqlLimits(),
    )
    assert got["columns"] == ["event", "count()", "count()"]  # a name twice stays twice
    assert got["rows"] == [
        [e, n, n] for e in sorted(truth.EVENTS) for n in [sum(x["event"] == e for x in EVENTS)]
    ]
    with pytest.raises(QueryError, match="more than 10 rows"):
        run_sql(wh, "SELECT number FROM numbers(100)", SqlLimits(max_rows=10))
    with pytest.raises(QueryError, match="(?i)timeout|time limit|elapsed"):
        run_sql(wh, "SELECT count() FROM numbers(100000000000)", SqlLimits(max_seconds=1))
    assert run_sql(wh, "SELECT 1 AS one", SqlLimits())["rows"] == [[1]]  # the engine is fine after a failure


@pytest.mark.parametrize(
    "params",
    [
        {"period": "day", "periods": 10, "after": 5},
        {"period": "day", "periods": 12, "after": 8, "cohort_event": "signup", "return_event": "purchase"},
        {"period": "day", "periods": 12, "after": 8, "cohort_event": "search", "form": "every"},
        {"period": "week", "periods": 5, "after": 3, "return_event": "share"},
        {"period": "week", "periods": 4, "after": 2, "cohort_event": "page_view", "form": "every"},
        {"period": "month", "periods": 2, "after": 1, "cohort_event": "signup"},
        {"period": "day", "periods": 5, "after": 3, "start_date": "2026-11-03"},
    ],
)
def test_retention_equals_the_cards_map(wh: Warehouse, params: dict[str, Any]) -> None:
    got = run_query(wh, {"kind": "retention", "as_of": END.isoformat(), **params})
    card = {**params, "period": params["period"] + "s", "as_of": END.isoformat()}
    want = truth.retention(EVENTS, card)
    assert [[r["date"], r["size"], r["counts"]] for r in got["rows"]] == want
    assert sum(r[1] for r in want) > 0


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_unique_users_over_whole_days_read_the_user_days_aggregate(wh: Warehouse, period: str) -> None:
    q = {
        "kind": "trend",
        "aggregation": "unique_users",
        "period": period,
        **SPAN,
        "filters": [{"property": "country", "op": "in", "value": ["DE", "FR"], "on": "user"}],
    }
    assert "user_days" in compile_query(q, wh.database).sql
    for other in (
        {**q, "filters": [{"property": "browser", "op": "eq", "value": "firefox"}]},
        {**q, "from": "2026-10-20T06:00:00Z"},
        {**q, "breakdown": "browser"},
    ):
        assert "user_days" not in compile_query(other, wh.database).sql  # these need the events
    for query in (q, {**q, "event": "share"}, {**q, "filters": []}):
        got, want = trend(wh, {k: v for k, v in query.items() if k != "kind"})
        assert same(got, want), (query, got, want)
