"""bitmapist on cardflow, against bitmapist itself on a real Redis (Debian's redis-server).

One stack for the module: the session broker, a warehouse worker (chDB) and the API. The same
marks go to bitmapist (Redis) and to cardflow; every answer must be equal: bitmapist's README
examples (printed output), a generated event set across a year boundary and ISO week 53/1
(shuffled, partly duplicated; every period count, nested bit operations, cohort tables), and a
keyspace moved with ``cardflow import bitmapist``.
"""

from __future__ import annotations

import contextlib
import io
import operator
import os
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import pytest

import cardflow.bitmapist as cfb
from cardflow.bitmapist import cohort as cf_cohort
from cardflow.config import Settings, load_settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.local_kafka import free_port
from tests.helpers import Service, http, start_api, wait_until

bitmapist = pytest.importorskip("bitmapist")
from bitmapist import cohort as bm_cohort  # noqa: E402

pytestmark = pytest.mark.integration
TOKEN = "admin-token"


class Deployment(NamedTuple):
    settings: Settings
    base: str  # the API's URL
    restart_warehouse: Callable[[Settings], None]  # the warehouse worker again, with these settings


@pytest.fixture(scope="module")
def stack(deployment: Deployment) -> tuple[Settings, str]:
    return deployment.settings, deployment.base


@pytest.fixture(scope="module")
def deployment(kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("bitmapist")
    warehouse_port = free_port()
    s = load_settings(
        env={},
        broker=kafka.bootstrap,
        partitions=4,
        data_dir=tmp / "data",
        topic_prefix=f"bm-{os.getpid()}-{time.monotonic_ns()}-",
        worker_web_port=warehouse_port,
        api_port=free_port(),
        kafka_port=kafka.port,
        kafka_controller_port=kafka.controller_port,
        api_tokens=f"{TOKEN}:admin;reader:read",
        warehouse_worker_url=f"http://127.0.0.1:{warehouse_port}",
    )
    ensure_topics(s)
    started: list[Service] = []

    def service(args: list[str], settings: Settings) -> Service:
        started.append(Service(args, settings, tmp / f"{'-'.join(args)}.log"))
        return started[-1]

    worker = service(["worker", "warehouse"], s)
    base = start_api(service, s)

    def ready() -> bool:
        assert worker.proc.poll() is None, worker.output()[-3000:]
        status, _, _ = http(
            "POST",
            f"{base}/v1/bitmaps/ops",
            b'{"queries": [{"expr": {"event": "x", "period": "unique"}}]}',
            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        return status == 200

    wait_until(ready, timeout=120, interval=1, what="the warehouse worker to answer bitmap queries")

    def restart_warehouse(settings: Settings) -> None:
        nonlocal worker
        worker.stop()
        worker = service(["worker", "warehouse"], settings)
        stats = f"http://127.0.0.1:{warehouse_port}/warehouse/stats/"

        def up() -> bool:
            assert worker.proc.poll() is None, worker.output()[-3000:]
            with contextlib.suppress(OSError):
                return http("GET", stats, timeout=5)[0] == 200
            return False

        wait_until(up, timeout=120, interval=1, what="the warehouse worker to start again")

    try:
        yield Deployment(s, base, restart_warehouse)
    finally:
        for svc in started:
            svc.stop()


def use(port: int, db: int, base: str) -> Any:
    """Point bitmapist at Redis database ``db`` (emptied) and cardflow.bitmapist at the stack."""
    import redis

    bitmapist.setup_redis("default", "127.0.0.1", port, db=db)
    redis.Redis(port=port, db=db).flushdb()
    cfb.setup(base, TOKEN)
    return redis.Redis(port=port, db=db)


README = """
now = datetime.now(tz=timezone.utc)
last_month = now - timedelta(days=30)
delete_all_events()

mark_event('active', 123)
mark_event('song:played', 123)

assert 123 in MonthEvents('active', now.year, now.month)
assert 123 in MonthEvents('song:played', now.year, now.month)
assert MonthEvents('active', now.year, now.month).has_events_marked() == True

print(len(WeekEvents('active', now.year, now.isocalendar()[1])))
for uid in WeekEvents('active'):
    print(uid)
print(MonthEvents('active') == MonthEvents('active', now.year, now.month))
print(MonthEvents('active').from_date(now) == MonthEvents('active', now.year, now.month))
print(list(WeekEvents('active', now.year, now.isocalendar()[1])))

current_month = MonthEvents('active')
prev_month = current_month.prev()
next_month = current_month.next()
year_ago = current_month.delta(-12)
print(prev_month.redis_key, next_month.redis_key, year_ago.redis_key, len(prev_month), len(year_ago))
ev = MonthEvents('active', now.year, now.month)
print(ev.period_start(), ev.period_end(), ev.period_end() < now)

bitmapist.TRACK_HOURLY = True
mark_event('active', 124)
mark_event('active', 125, track_hourly=False)
print(len(HourEvents('active')), 124 in HourEvents('active'), 125 in HourEvents('active'))
bitmapist.TRACK_HOURLY = False

active_today = DayEvents('active')
a = UniqueEvents('signup_form:classic')
b = UniqueEvents('signup_form:new')
mark_unique('signup_form:classic', 123)
mark_unique('signup_form:new', 124)
print("Active users, signed up with classic form", len(active_today & a))
print("Active users, signed up with new form", len(active_today & b))

def premium_up(uid):
    mark_unique('premium', uid)

def premium_down(uid):
    unmark_unique('premium', uid)

premium_up(123)
premium_up(124)
premium_down(123)
premium = UniqueEvents('premium')
for uid in premium & active_today:
    print('extra karma for', uid)
mark_event('premium', 125, track_unique=True)
print(sorted(UniqueEvents('premium')), len(DayEvents('premium')), len(~UniqueEvents('premium')))

mark_event('active', 123, now=last_month)
active_2_months = BitOpAnd(
    MonthEvents('active', last_month.year, last_month.month),
    MonthEvents('active', now.year, now.month)
)
print(len(active_2_months))
assert 123 in active_2_months

last_month_event = MonthEvents('active', last_month.year, last_month.month)
this_month_event = MonthEvents('active', now.year, now.month)
active_two_months = last_month_event & this_month_event
print(len(active_two_months), len(last_month_event | this_month_event),
      len(last_month_event ^ this_month_event), len(~this_month_event), list(~this_month_event)[:5])

active_2_months = BitOpAnd(
    BitOpAnd(
        MonthEvents('active', last_month.year, last_month.month),
        MonthEvents('active', now.year, now.month)
    ),
    MonthEvents('active', now.year, now.month)
)
print(len(active_2_months))
assert 123 in active_2_months
active_2_months.delete()

last_month_event = MonthEvents('active', last_month.year, last_month.month)
last_month_event.delete()
print(len(MonthEvents('active', last_month.year, last_month.month)), len(YearEvents('active')))
bitmapist.delete_runtime_bitop_keys()
bitmapist.delete_temporary_bitop_keys()

html_form = cohort.render_html_form(
    action_url='/_Cohort',
    selections1=[ ('Are Active', 'user:active'), ],
    selections2=[ ('Task completed', 'task:complete'), ]
)
print(html_form)
mark_event('user:active', 1)
mark_event('task:complete', 1)
mark_event('user:active', 2)
dates_data = cohort.get_dates_data(select1='user:active',
                                   select2='task:complete',
                                   time_group='days')
html_data = cohort.render_html_data(dates_data,
                                    time_group='days')
print(html_data)
bitmapist.delete_all_events()
print(len(MonthEvents('active')))
"""

HEADER = """
from datetime import datetime, timedelta, timezone
from {module} import delete_all_events, mark_event, mark_unique, unmark_unique,\\
                      MonthEvents, WeekEvents, DayEvents, HourEvents, YearEvents, UniqueEvents,\\
                      BitOpAnd, BitOpOr
import {module} as bitmapist
from {module} import cohort
"""


def run_readme(module: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(HEADER.format(module=module) + README, f"<README on {module}>", "exec"), {})  # noqa: S102
    return out.getvalue()


def test_readme_examples_print_what_bitmapist_prints(stack: tuple[Settings, str], redis_port: int) -> None:
    _, base = stack
    use(redis_port, 7, base)
    on_redis = run_readme("bitmapist")
    on_cardflow = run_readme("cardflow.bitmapist")
    assert "extra karma for 124" in on_redis and "<table" in on_redis  # the examples did run
    assert on_cardflow == on_redis


# A year boundary with ISO week 53 (2020-W53 runs from Mon 28 Dec 2020 to Sun 3 Jan 2021).
FIRST_DAY = datetime(2020, 12, 1, tzinfo=UTC)
DAYS = 50
NAMES = ("active", "song:played", "task:done")


def generated(seed: int) -> tuple[list[tuple[Any, ...]], list[tuple[str, int, int]]]:
    """Marks ``(name, uid, when, hourly, unique)`` (shuffled, 10 % sent twice) and flag writes."""
    rng = random.Random(seed)
    marks = []
    for uid in range(3000):
        uid = uid * 3 + rng.randrange(3)  # gaps, so NOT has holes to fill
        for _ in range(rng.randrange(1, 12)):
            when = FIRST_DAY + timedelta(
                days=rng.randrange(DAYS), hours=rng.randrange(24), minutes=rng.randrange(60)
            )
            marks.append((rng.choice(NAMES), uid, when, rng.random() < 0.3, rng.random() < 0.1))
    marks.append(("active", 20_000, FIRST_DAY + timedelta(days=40), False, False))  # a longer bitmap
    # Two disjoint groups: a cohort of one never does the other (0.0 cells beside blank ones).
    marks += [
        ("rare", u, FIRST_DAY + timedelta(days=d), False, False) for u in range(30) for d in range(0, 6, 2)
    ]
    marks += [
        ("late", 5000 + u, FIRST_DAY + timedelta(days=d), False, False)
        for u in range(20)
        for d in range(3, 40, 3)
    ]
    marks += rng.sample(marks, len(marks) // 10)
    rng.shuffle(marks)
    flags = [
        (rng.choice(("premium", "beta")), rng.randrange(9000), rng.choice((0, 1, 1))) for _ in range(3000)
    ]
    return marks, flags


def send_to_cardflow(base: str, marks: list[tuple[Any, ...]], flags: list[tuple[str, int, int]]) -> None:
    """The marks as events through the push API, in batches (other paths' events count too)."""
    events = []
    for name, uid, when, hourly, unique in marks:
        props = {**({"$hourly": True} if hourly else {}), **({"$unique": True} if unique else {})}
        events.append(
            {"uid": str(uid), "event": name, "ts": int(when.timestamp() * 1000), "properties": props}
        )
    for name, uid, value in flags:
        events.append(
            {
                "uid": str(uid),
                "event": "$bitmapist_unique",
                "ts": int(FIRST_DAY.timestamp() * 1000),
                "properties": {"event": name, "value": value},
            }
        )
    for i in range(0, len(events), 1000):
        cfb._connection.send(events[i : i + 1000])


def expressions(rng: random.Random, leaves: list[Any], depth: int, module: Any) -> Any:
    if depth == 0 or rng.random() < 0.3:
        return rng.choice(leaves)
    op = rng.choice(("and", "or", "xor", "not", "and3"))
    if op == "not":
        return ~expressions(rng, leaves, depth - 1, module)
    if op == "and3":
        return module.BitOpAnd(*(expressions(rng, leaves, depth - 1, module) for _ in range(3)))
    a, b = expressions(rng, leaves, depth - 1, module), expressions(rng, leaves, depth - 1, module)
    return {"and": a & b, "or": a | b, "xor": a ^ b}[op]


def periods(module: Any) -> list[Any]:
    out = []
    for name in NAMES:
        for d in range(-2, DAYS + 2):
            day = FIRST_DAY + timedelta(days=d)
            out.append(module.DayEvents(name, day.year, day.month, day.day))
        for year, week in (
            [(2020, w) for w in range(47, 54)] + [(2021, w) for w in range(1, 7)] + [(2020, 60)]
        ):
            out.append(module.WeekEvents(name, year, week))
        for year, month in ((2020, 11), (2020, 12), (2021, 1), (2021, 2), (2020, 13)):
            out.append(module.MonthEvents(name, year, month))
        out += [module.YearEvents(name, 2020), module.YearEvents(name, 2021)]
        for h in range(0, 48, 5):
            hour = FIRST_DAY + timedelta(days=30, hours=h)
            out.append(module.HourEvents(name, hour.year, hour.month, hour.day, hour.hour))
        out.append(module.UniqueEvents(name))
    out += [module.UniqueEvents("premium"), module.UniqueEvents("beta"), module.UniqueEvents("never")]
    return out


def test_generated_marks_answer_as_bitmapist_does(stack: tuple[Settings, str], redis_port: int) -> None:
    _, base = stack
    use(redis_port, 8, base)
    cfb.delete_all_events()
    marks, flags = generated(seed=21)
    for name, uid, when, hourly, unique in marks:
        bitmapist.mark_event(name, uid, now=when, track_hourly=hourly, track_unique=unique)
    for name, uid, value in flags:
        (bitmapist.mark_unique if value else bitmapist.unmark_unique)(name, uid)
    send_to_cardflow(base, marks, flags)

    # Every period count (one request for all on cardflow's side).
    theirs, ours = periods(bitmapist), periods(cfb)
    want = [len(p) for p in theirs]
    got = [r["count"] for r in cfb._connection.ops([{"expr": p.expr()} for p in ours])]
    assert sum(want) > 10_000 and want.count(0) > 5  # real counts, blank periods among them
    assert got == want

    # Nested bit operations: counts, membership, members.
    rng = random.Random(5)
    picks = [rng.randrange(len(theirs)) for _ in range(40)]
    for n in range(150):
        seed = rng.randrange(10**9)
        a = expressions(random.Random(seed), [theirs[i] for i in picks], 4, bitmapist)
        b = expressions(random.Random(seed), [ours[i] for i in picks], 4, cfb)
        assert b.redis_key == a.redis_key
        assert len(b) == len(a), a.redis_key
        probe = [0, 1, 2, 3, 299, 8999, 20_000, 20_001]
        assert [u in b for u in probe] == [u in a for u in probe]
        if n % 15 == 0:
            assert list(b) == list(a)
    # Chains built in loops, as bitmapist code does (acc = acc | day): 90 deep, past
    # bitmaps_max_depth's 64, yet one flat operation each; a mixed chain nests within it.
    for ops, length in (((operator.or_,), 90), ((operator.xor,), 90), ((operator.and_, operator.or_), 40)):
        chains = []
        for module in (bitmapist, cfb):
            days = [module.DayEvents.from_date("active", FIRST_DAY + timedelta(d)) for d in range(length)]
            acc = days[0]
            for i, day in enumerate(days[1:]):
                acc = ops[i % len(ops)](acc, ~day if len(ops) > 1 and i % 2 == 0 else day)
            chains.append(acc)
        assert chains[1].redis_key == chains[0].redis_key
        assert len(chains[1]) == len(chains[0]) > 0
        assert list(chains[1]) == list(chains[0])

    # Cohort tables, blank and zero cells included.
    cells = []
    for time_group, start, rows in (
        ("days", "2020-12-03", 10),
        ("weeks", "2020-12-01", 6),
        ("months", "2020-12-01", 2),
    ):
        for s1, s2, s1b in (
            ("active", "song:played", None),
            ("task:done", "active", "song:played"),
            ("rare", "late", None),
        ):
            kw = {
                "select1": s1,
                "select2": s2,
                "select1b": s1b,
                "time_group": time_group,
                "num_results": 8 if time_group != "months" else 3,
                "num_of_rows": rows,
                "start_date": start,
            }
            for as_percent in (True, False):
                want_table = bm_cohort.get_dates_data(**kw, as_percent=as_percent)
                cells += [c for row in want_table for c in row[2:]]
                assert cf_cohort.get_dates_data(**kw, as_percent=as_percent) == want_table
                if time_group == "days":  # a table too big for one request: whole rows in several
                    with pytest.MonkeyPatch.context() as patch:
                        patch.setattr(cf_cohort, "MAX_QUERIES", 2 * rows + 5)
                        assert cf_cohort.get_dates_data(**kw, as_percent=as_percent) == want_table
                shown = {"as_percent": as_percent, "time_group": time_group, "num_of_rows": rows}
                csv = cf_cohort.render_csv_data(want_table, **shown)
                assert csv == bm_cohort.render_csv_data(want_table, **shown) and csv.count("\n") > 2
    assert "" in cells and 0.0 in cells and len([c for c in cells if c not in ("", 0)]) > 100


def test_import_moves_a_bitmapist_keyspace(
    stack: tuple[Settings, str], redis_port: int, tmp_path: Any
) -> None:
    import subprocess
    import sys

    settings, base = stack
    client = use(redis_port, 9, base)
    rng = random.Random(3)
    for _ in range(4000):  # history only Redis has: names cardflow never saw
        when = FIRST_DAY + timedelta(days=rng.randrange(40), hours=rng.randrange(24))
        bitmapist.mark_event("legacy:login", rng.randrange(50_000), now=when, track_hourly=rng.random() < 0.2)
    for uid in range(0, 3000, 7):
        bitmapist.mark_unique("legacy:paid", uid)
    bitmapist.unmark_unique("legacy:paid", 70_000)  # grows the key past its last set bit
    bitmapist.mark_event("legacy:huge", 400_000_000, now=FIRST_DAY)  # a sparse 50 MB key
    bitop = bitmapist.BitOpAnd(
        bitmapist.MonthEvents("legacy:login", 2020, 12), bitmapist.UniqueEvents("legacy:paid")
    )  # a temporary key: skipped
    keys = len([k for k in client.keys("trackist_*") if not k.startswith(b"trackist_bitop_")])
    assert bitop.redis_key.encode() in client.keys("trackist_bitop_*")
    # Keys under bitmapist's names that cannot come across: each its own failure, the rest imported.
    client.hset("trackist_legacy:odd_2020-12", "a", "1")  # not a string
    client.setbit("trackist_legacy:login_2020-13", 5, 1)  # a month that never exists
    client.setbit(b"trackist_\xff_2020-12", 5, 1)  # not UTF-8: not bitmapist's, skipped
    client.setbit("trackist_other", 5, 1)  # no period: not bitmapist's, skipped

    env = {**os.environ, **settings.to_env()}
    url = f"redis://127.0.0.1:{redis_port}/9"
    dry = subprocess.run(
        [
            sys.executable,
            "-m",
            "cardflow",
            "import",
            "bitmapist",
            "--redis",
            url,
            "--token",
            TOKEN,
            "--dry-run",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 1, dry.stderr
    assert "trackist_bitop_" not in dry.stdout and "trackist_legacy:login_2020-13: 1 ids" in dry.stdout
    assert "NOT imported trackist_legacy:odd_2020-12: Redis: WRONGTYPE" in dry.stdout
    assert f"1 of {keys + 2} bitmapist keys could not be read (listed above); the other {keys + 1}" in (
        dry.stderr
    )
    assert "skipped b'trackist_\\xff_2020-12': not a bitmapist key (its name is not UTF-8)" in dry.stdout
    assert "skipped trackist_other: not a bitmapist key name" in dry.stdout
    assert len(cfb.MonthEvents("legacy:login", 2020, 12)) == 0  # the dry run sent nothing

    done = subprocess.run(
        [sys.executable, "-m", "cardflow", "import", "bitmapist", "--redis", url, "--token", TOKEN],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr + done.stdout
    assert "NOT imported trackist_legacy:login_2020-13: 400" in done.stdout and "never exists" in done.stdout
    assert f"2 of {keys + 2} bitmapist keys could not be imported (listed above); the other {keys}" in (
        done.stderr
    )

    def pairs(module: Any) -> list[Any]:
        out = []
        for d in range(42):
            day = FIRST_DAY + timedelta(days=d)
            out.append(module.DayEvents("legacy:login", day.year, day.month, day.day))
            out.append(module.HourEvents("legacy:login", day.year, day.month, day.day, 13))
        out += [module.WeekEvents("legacy:login", 2020, w) for w in range(48, 54)]
        out += [
            module.MonthEvents("legacy:login", 2020, 12),
            module.MonthEvents("legacy:login", 2021, 1),
            module.YearEvents("legacy:login", 2021),
            module.UniqueEvents("legacy:paid"),
            ~module.UniqueEvents("legacy:paid"),
            module.MonthEvents("legacy:huge", 2020, 12),
            module.MonthEvents("legacy:login", 2020, 12) & module.UniqueEvents("legacy:paid"),
        ]
        return out

    assert [len(p) for p in pairs(cfb)] == [len(p) for p in pairs(bitmapist)]
    assert 400_000_000 in cfb.MonthEvents("legacy:huge", 2020, 12)
    again = subprocess.run(
        [sys.executable, "-m", "cardflow", "import", "bitmapist", "--redis", url, "--token", TOKEN],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 1 and f"the other {keys} were" in again.stderr
    assert [len(p) for p in pairs(cfb)] == [len(p) for p in pairs(bitmapist)]  # twice is once


def test_bad_requests_are_clear_errors(stack: tuple[Settings, str]) -> None:
    _, base = stack
    headers = {"Authorization": "Bearer reader", "Content-Type": "application/json"}

    def ops(body: bytes, token: str = "reader") -> tuple[int, Any]:
        status, _, got = http(
            "POST", f"{base}/v1/bitmaps/ops", body, {**headers, "Authorization": f"Bearer {token}"}
        )
        return status, got

    for body, field in (
        (b'{"queries": []}', "queries"),
        (b'{"queries": [{"expr": {"op": "nand", "args": []}}]}', "queries[0].expr.op"),
        (
            b'{"queries": [{"expr": {"op": "not", "args": [{"event": "a", "period": "unique"}, '
            b'{"event": "b", "period": "unique"}]}}]}',
            "queries[0].expr.args",
        ),
        (b'{"queries": [{"expr": {"event": "a", "period": "day", "year": "2020"}}]}', "queries[0].expr.year"),
        (b'{"queries": [{"expr": {"ref": 0}}]}', "queries[0].expr.ref"),
        (
            b'{"queries": [{"expr": {"event": "a", "period": "unique"}, "contains": [-1]}]}',
            "queries[0].contains[0]",
        ),
        (b"not json", "body"),
    ):
        status, got = ops(body)
        assert status == 400 and got["field"] == field, (body, got)
    deep: Any = {"event": "a", "period": "unique"}
    for _ in range(100):
        deep = {"op": "not", "args": [deep]}
    import json

    status, got = ops(json.dumps({"queries": [{"expr": deep}]}).encode())
    assert status == 400 and "bitmaps_max_depth" in got["message"]
    status, _, got = http("POST", f"{base}/v1/bitmaps/delete", b'{"all": true}', headers)
    assert status == 403  # deleting needs the admin scope
    with pytest.raises(ValueError, match="integers from 0 to 4294967295"):
        cfb.mark_event("active", 2**32)
    with pytest.raises(ValueError):
        cfb.mark_event("active", "123")  # type: ignore[arg-type]


def test_bitmaps_left_off_cost_no_work_and_come_back_backfilled(deployment: Deployment) -> None:
    """Last in the module: it restarts the warehouse worker, with warehouse_bitmaps off, then on."""
    settings, base, restart = deployment
    cfb.setup(base, TOKEN)
    day = datetime(2021, 3, 4, 12, tzinfo=UTC)
    restart(settings.replace(warehouse_bitmaps=False))
    cfb.mark_event("while-off", 41, now=day)

    def loaded() -> bool:  # the event is in the warehouse, though no bitmap is kept of it
        status, _, got = http(
            "POST",
            f"{base}/v1/sql",
            b'{"sql": "SELECT count() AS n FROM cardflow.events WHERE event = \'while-off\'"}',
            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        return status == 200 and int(got["rows"][0][0]) == 1

    wait_until(loaded, timeout=60, interval=0.5, what="the mark made while off to be loaded")
    with pytest.raises(cfb.BitmapistError, match="warehouse_bitmaps is false"):
        len(cfb.DayEvents("while-off", 2021, 3, 4))
    # On again: the views back, the events loaded meanwhile backfilled. With pages of members
    # capped lower than the client's: iteration still lists them all, in smaller pages.
    restart(settings.replace(bitmaps_max_members=5))
    assert 41 in cfb.DayEvents("while-off", 2021, 3, 4)
    for uid in (np.int64(42), np.uint32(43), *range(100, 110)):  # numpy's integers, as redis-py takes
        cfb.mark_event("while-off", uid, now=day)
    assert len(cfb.MonthEvents("while-off", 2021, 3)) == 13
    assert list(cfb.MonthEvents("while-off", 2021, 3)) == [41, 42, 43, *range(100, 110)]
    assert np.int64(43) in cfb.DayEvents("while-off", 2021, 3, 4)
    # A server allowing fewer queries than a cohort table has cells: the client halves its requests.
    restart(settings.replace(bitmaps_max_queries=30))
    table = cf_cohort.get_dates_data("while-off", "while-off", time_group="days", num_results=10,
                                     num_of_rows=10, start_date="2021-02-28", as_percent=False)
    empty = [0] + [""] * 11
    assert [row[1:] for row in table] == [empty] * 4 + [[13, 13] + [""] * 10] + [empty] * 5
