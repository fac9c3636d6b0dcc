"""bitmapist's API on cardflow: swap the import and ``setup_redis`` for ``setup``, keep the code.

    from cardflow.bitmapist import setup, mark_event, MonthEvents, BitOpAnd
    setup("http://127.0.0.1:8000", token="…")
    mark_event("active", 123)
    assert 123 in MonthEvents("active")

Marks are events sent to cardflow's push API (``POST /v1/events``); bitmaps are the warehouse's
(``cardflow.bitmaps``), read through ``POST /v1/bitmaps/ops``. Objects are lazy: a bit operation
is an expression, evaluated on the server when it is counted, tested or iterated, so nothing is
stored for it (``delete()`` on it and ``delete_*_bitop_keys`` have nothing to do). Each read
waits for this process's own marks to be loaded, so a mark is seen by the next read, as on Redis.

Ids are integers in [0, 2^32), as bitmapist asks (anything else is a ValueError, not a huge Redis
key). A mark's period is taken from ``now``'s own fields, as bitmapist does (a datetime in
another time zone is bucketed by its wall clock, not converted). ``system`` arguments are
accepted and ignored: one cardflow is one system. ``unmark_event`` is not offered: events are
facts; flags (``mark_unique`` / ``unmark_unique``) can be set and unset.
"""

from __future__ import annotations

import calendar
import operator
import threading
import uuid as uuids
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cardflow.client import Client, ClientError
from cardflow.offsets import format_offsets, parse_offsets

TRACK_HOURLY = False  # as bitmapist's: hourly bitmaps cost memory, so they are opt-in per mark
TRACK_UNIQUE = False
MAX_ID = 2**32 - 1
PAGE = 100_000  # ids per request when iterating


class BitmapistError(ClientError):
    """The cardflow API refused or failed a request: ``status`` and its body."""


class _Connection:
    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.client = Client(url, token, timeout)
        self.lock = threading.Lock()
        self.written: dict[int, int] = {}  # partition → highest offset this process's marks got
        self.page = PAGE  # ids per page when iterating; smaller if the server allows fewer

    def post(self, path: str, body: Any) -> Any:
        try:
            return self.client.post(path, body)
        except ClientError as exc:
            raise BitmapistError(exc.status, exc.body) from None
        except OSError as exc:  # refused, reset, timed out: say where it tried
            raise BitmapistError(503, {"error": "unreachable", "message": (
                f"cannot reach cardflow's API at {self.client.url}: {getattr(exc, 'reason', exc)}; "
                "is `cardflow api` running, and is setup(url) right?")}) from None

    def send(self, events: list[dict[str, Any]]) -> None:
        answer = self.post("/v1/events", events)
        if answer.get("rejected"):
            rejected = answer["rejected"]
            raise BitmapistError(
                400, {"error": "rejected", "message": f"{len(rejected)} marks refused: {rejected[:3]}"}
            )
        with self.lock:
            for partition, offset in (parse_offsets(answer.get("offsets") or "") or {}).items():
                self.written[partition] = max(offset, self.written.get(partition, -1))

    def after(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` asking the server to wait until this process's marks are loaded."""
        with self.lock:
            after = format_offsets(self.written)
        return {**body, "after": after} if after else body

    def ops(self, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answer = self.post("/v1/bitmaps/ops", self.after({"queries": queries}))
        results: list[dict[str, Any]] = answer["results"]
        return results


_connection = _Connection("http://127.0.0.1:8000", "", 120.0)


def setup(url: str, token: str = "", timeout: float = 120.0) -> None:
    """Where cardflow's API is (``setup_redis``'s replacement) and the token: ``ingest`` scope to
    mark, ``read`` to count, ``admin`` to delete."""
    global _connection
    _connection = _Connection(url, token, timeout)


def _as_id(uuid: Any) -> int | None:
    """``uuid`` as an id, or None: an integer of any kind (numpy's too: redis-py takes them) in
    [0, 2^32); not a bool, a float or a string."""
    if isinstance(uuid, bool) or type(uuid).__name__ == "bool_":  # numpy's bool too
        return None
    try:
        value = operator.index(uuid)
    except TypeError:
        return None
    return value if 0 <= value <= MAX_ID else None


def _uid(uuid: Any) -> int:
    value = _as_id(uuid)
    if value is None:
        raise ValueError(f"bitmapist ids are integers from 0 to {MAX_ID}, got {uuid!r}")
    return value


def _wall_ms(now: datetime | None) -> int:
    """``now``'s wall-clock fields read as UTC, in ms (bitmapist buckets by the fields)."""
    now = now or datetime.now(tz=UTC)
    return calendar.timegm(now.timetuple()) * 1000 + now.microsecond // 1000


def _event(name: str, uid: int, ts: int, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": uuids.uuid4().hex,
        "uid": str(uid),
        "event": name,
        "ts": ts,
        "properties": properties,
        "source": "bitmapist",
    }


def mark_event(
    event_name: str,
    uuid: int,
    system: str = "default",
    now: datetime | None = None,
    track_hourly: bool | None = None,
    track_unique: bool | None = None,
    use_pipeline: bool = True,
) -> None:
    """Mark ``uuid`` for ``event_name`` in the day, ISO week and month of ``now`` (and its hour,
    and the unique bitmap, when tracked)."""
    properties: dict[str, Any] = {}
    if TRACK_HOURLY if track_hourly is None else track_hourly:
        properties["$hourly"] = True
    if TRACK_UNIQUE if track_unique is None else track_unique:
        properties["$unique"] = True
    _connection.send([_event(event_name, _uid(uuid), _wall_ms(now), properties)])


def mark_unique(event_name: str, uuid: int, system: str = "default") -> None:
    """Set ``uuid``'s flag ``event_name`` (a bitmap without a date)."""
    _flag(event_name, uuid, 1)


def unmark_unique(event_name: str, uuid: int, system: str = "default") -> None:
    _flag(event_name, uuid, 0)


def _flag(event_name: str, uuid: int, value: int) -> None:
    _connection.send(
        [_event("$bitmapist_unique", _uid(uuid), _wall_ms(None), {"event": event_name, "value": value})]
    )


def delete_all_events(system: str = "default") -> None:
    """Delete every bitmap (admin scope). The events stay: a replay marks them again."""
    _connection.post("/v1/bitmaps/delete", _connection.after({"all": True}))


def delete_temporary_bitop_keys(system: str = "default") -> None:
    """Nothing to delete: bit operations are evaluated, never stored."""


def delete_runtime_bitop_keys() -> None:
    """Nothing to delete: bit operations are evaluated, never stored."""


def _connection_ops(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Many queries in one request (what ``cohort`` sends)."""
    return _connection.ops(queries)


class _Bitmap:
    """What every bitmapist object can do; ``expr()`` is its expression for the server."""

    redis_key: str
    system: str = "default"

    def expr(self) -> dict[str, Any]:
        raise NotImplementedError

    def _one(self, **query: Any) -> dict[str, Any]:
        return _connection.ops([{"expr": self.expr(), **query}])[0]

    def get_count(self) -> int:
        count: int = self._one()["count"]
        return count

    def __len__(self) -> int:
        return self.get_count()

    def __contains__(self, uuid: Any) -> bool:
        value = _as_id(uuid)
        if value is None:
            return False
        found: bool = self._one(count=False, contains=[value])["contains"][0]
        return found

    def get_uuids(self) -> Iterator[int]:
        after = -1
        while True:
            try:
                page = self._one(count=False, members={"after": after, "limit": _connection.page})
            except BitmapistError as exc:  # a server with a lower bitmaps_max_members: smaller pages
                if exc.status != 400 or not str(exc.field).endswith("members.limit") or _connection.page == 1:
                    raise
                _connection.page = max(1, _connection.page // 4)
                continue
            yield from page["members"]
            if page["next"] is None:
                return
            after = page["next"]

    def __iter__(self) -> Iterator[int]:
        return self.get_uuids()

    def has_events_marked(self) -> bool:
        return self.get_count() > 0

    def delete(self) -> None:
        """Delete this stored bitmap (admin scope)."""
        _connection.post("/v1/bitmaps/delete", _connection.after({"expr": self.expr()}))

    def __eq__(self, other: object) -> bool:
        other_key = getattr(other, "redis_key", None)
        if other_key is None:
            return NotImplemented
        return self.redis_key == other_key

    def __hash__(self) -> int:
        return hash(self.redis_key)

    def __invert__(self) -> BitOpNot:
        return BitOpNot(self)

    def __or__(self, other: Any) -> BitOpOr:
        return BitOpOr(self, other)

    def __and__(self, other: Any) -> BitOpAnd:
        return BitOpAnd(self, other)

    def __xor__(self, other: Any) -> BitOpXor:
        return BitOpXor(self, other)


def _key(event_name: str, suffix: str) -> str:
    return f"trackist_{event_name}_{suffix}"  # bitmapist's key: equality and BitOp names match it


class UniqueEvents(_Bitmap):
    @classmethod
    def from_date(cls, event_name: str, dt: Any = None, system: str = "default") -> UniqueEvents:
        return cls(event_name, system=system)

    def __init__(self, event_name: str, system: str = "default") -> None:
        self.event_name, self.system = event_name, system
        self.redis_key = _key(event_name, "u")

    def expr(self) -> dict[str, Any]:
        return {"event": self.event_name, "period": "unique"}

    def next(self) -> UniqueEvents:
        return self

    def prev(self) -> UniqueEvents:
        return self


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


class GenericPeriodEvents(_Bitmap):
    event_name: str

    def delta(self, value: int) -> GenericPeriodEvents:
        raise NotImplementedError

    def period_start(self) -> datetime:
        raise NotImplementedError

    def period_end(self) -> datetime:
        raise NotImplementedError

    def next(self) -> GenericPeriodEvents:
        return self.delta(value=1)

    def prev(self) -> GenericPeriodEvents:
        return self.delta(value=-1)


class YearEvents(GenericPeriodEvents):
    @classmethod
    def from_date(
        cls, event_name: str, dt: date | datetime | None = None, system: str = "default"
    ) -> YearEvents:
        return cls(event_name, (dt or _now()).year, system=system)

    def __init__(self, event_name: str, year: int | None = None, system: str = "default") -> None:
        self.event_name, self.system = event_name, system
        self.year = _or(year, _now().year)
        months = "-".join(MonthEvents(event_name, self.year, m).redis_key for m in range(1, 13))
        self.redis_key = f"trackist_bitop_OR_{months}"

    def expr(self) -> dict[str, Any]:
        return {"event": self.event_name, "period": "year", "year": self.year}

    def delta(self, value: int) -> YearEvents:
        return YearEvents(self.event_name, self.year + value, self.system)

    def period_start(self) -> datetime:
        return datetime(self.year, 1, 1, tzinfo=UTC)

    def period_end(self) -> datetime:
        return datetime(self.year, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


class MonthEvents(GenericPeriodEvents):
    @classmethod
    def from_date(
        cls, event_name: str, dt: date | datetime | None = None, system: str = "default"
    ) -> MonthEvents:
        dt = dt or _now()
        return cls(event_name, dt.year, dt.month, system=system)

    def __init__(
        self, event_name: str, year: int | None = None, month: int | None = None, system: str = "default"
    ) -> None:
        now = _now()
        self.event_name, self.system = event_name, system
        self.year, self.month = _or(year, now.year), _or(month, now.month)
        self.redis_key = _key(event_name, f"{self.year}-{self.month}")

    def expr(self) -> dict[str, Any]:
        return {"event": self.event_name, "period": "month", "year": self.year, "month": self.month}

    def delta(self, value: int) -> MonthEvents:
        year, month = divmod(self.year * 12 + self.month + value, 12)
        if month == 0:
            year, month = year - 1, 12
        return MonthEvents(self.event_name, year, month, self.system)

    def period_start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    def period_end(self) -> datetime:
        _, day = calendar.monthrange(self.year, self.month)
        return datetime(self.year, self.month, day, 23, 59, 59, 999999, tzinfo=UTC)


def _iso_monday(year: int, week: int) -> date:
    """bitmapist's iso_to_gregorian(year, week, 1): any week number, counted from week 1."""
    fourth = date(year, 1, 4)
    return fourth - timedelta(days=fourth.isoweekday() - 1) + timedelta(weeks=week - 1)


class WeekEvents(GenericPeriodEvents):
    @classmethod
    def from_date(
        cls, event_name: str, dt: date | datetime | None = None, system: str = "default"
    ) -> WeekEvents:
        year, week, _ = (dt or _now()).isocalendar()
        return cls(event_name, year, week, system=system)

    def __init__(
        self, event_name: str, year: int | None = None, week: int | None = None, system: str = "default"
    ) -> None:
        now_year, now_week, _ = _now().isocalendar()
        self.event_name, self.system = event_name, system
        self.year, self.week = _or(year, now_year), _or(week, now_week)
        self.redis_key = _key(event_name, f"W{self.year}-{self.week}")

    def expr(self) -> dict[str, Any]:
        return {"event": self.event_name, "period": "week", "year": self.year, "week": self.week}

    def delta(self, value: int) -> WeekEvents:
        year, week, _ = _iso_monday(self.year, self.week + value).isocalendar()
        return WeekEvents(self.event_name, year, week, self.system)

    def period_start(self) -> datetime:
        s = _iso_monday(self.year, self.week)
        return datetime(s.year, s.month, s.day, tzinfo=UTC)

    def period_end(self) -> datetime:
        e = _iso_monday(self.year, self.week) + timedelta(days=6)
        return datetime(e.year, e.month, e.day, 23, 59, 59, 999999, tzinfo=UTC)


class DayEvents(GenericPeriodEvents):
    @classmethod
    def from_date(
        cls, event_name: str, dt: date | datetime | None = None, system: str = "default"
    ) -> DayEvents:
        dt = dt or _now()
        return cls(event_name, dt.year, dt.month, dt.day, system=system)

    def __init__(
        self,
        event_name: str,
        year: int | None = None,
        month: int | None = None,
        day: int | None = None,
        system: str = "default",
    ) -> None:
        now = _now()
        self.event_name, self.system = event_name, system
        self.year, self.month, self.day = _or(year, now.year), _or(month, now.month), _or(day, now.day)
        self.redis_key = _key(event_name, f"{self.year}-{self.month}-{self.day}")

    def expr(self) -> dict[str, Any]:
        return {
            "event": self.event_name,
            "period": "day",
            "year": self.year,
            "month": self.month,
            "day": self.day,
        }

    def delta(self, value: int) -> DayEvents:
        dt = date(self.year, self.month, self.day) + timedelta(days=value)
        return DayEvents(self.event_name, dt.year, dt.month, dt.day, self.system)

    def period_start(self) -> datetime:
        return datetime(self.year, self.month, self.day, tzinfo=UTC)

    def period_end(self) -> datetime:
        return datetime(self.year, self.month, self.day, 23, 59, 59, 999999, tzinfo=UTC)


class HourEvents(GenericPeriodEvents):
    @classmethod
    def from_date(cls, event_name: str, dt: datetime | None = None, system: str = "default") -> HourEvents:
        dt = dt or _now()
        return cls(event_name, dt.year, dt.month, dt.day, dt.hour, system=system)

    def __init__(
        self,
        event_name: str,
        year: int | None = None,
        month: int | None = None,
        day: int | None = None,
        hour: int | None = None,
        system: str = "default",
    ) -> None:
        now = _now()
        self.event_name, self.system = event_name, system
        self.year, self.month = _or(year, now.year), _or(month, now.month)
        self.day, self.hour = _or(day, now.day), _or(hour, now.hour)
        self.redis_key = _key(event_name, f"{self.year}-{self.month}-{self.day}-{self.hour}")

    def expr(self) -> dict[str, Any]:
        return {
            "event": self.event_name,
            "period": "hour",
            "year": self.year,
            "month": self.month,
            "day": self.day,
            "hour": self.hour,
        }

    def delta(self, value: int) -> HourEvents:
        dt = datetime(self.year, self.month, self.day, self.hour, tzinfo=UTC) + timedelta(hours=value)
        return HourEvents(self.event_name, dt.year, dt.month, dt.day, dt.hour, self.system)

    def period_start(self) -> datetime:
        return datetime(self.year, self.month, self.day, self.hour, tzinfo=UTC)

    def period_end(self) -> datetime:
        return datetime(self.year, self.month, self.day, self.hour, 59, 59, 999999, tzinfo=UTC)


class BitOperation(_Bitmap):
    """An AND, OR, XOR or NOT over bitmaps and other operations, evaluated on the server."""

    op = ""

    def __init__(self, system_or_event: Any, *events: Any) -> None:
        if hasattr(system_or_event, "redis_key"):  # bitmapist's signature: the system may come first
            events = (system_or_event, *events)
            self.system = "default"
        else:
            self.system = system_or_event
        for event in events:
            if not isinstance(event, _Bitmap):
                raise TypeError(f"bit operations take bitmapist objects, got {event!r}")
        self.events = events
        self.redis_key = "trackist_bitop_{}_{}".format(self.op.upper(), "-".join(e.redis_key for e in events))

    def expr(self) -> dict[str, Any]:
        """Operands of the same and/or/xor spliced in, without recursion: a chain built in a loop
        (``acc = acc | day``, thousands long) is one flat operation, as the server would make it."""
        args = []
        stack = list(reversed(self.events))
        while stack:
            event = stack.pop()
            if isinstance(event, BitOperation) and event.op == self.op != "not":
                stack += reversed(event.events)
            else:
                args.append(event.expr())
        return {"op": self.op, "args": args}

    def delete(self) -> None:
        """Nothing stored to delete (bitmapist deletes the operation's result key)."""


class BitOpAnd(BitOperation):
    op = "and"


class BitOpOr(BitOperation):
    op = "or"


class BitOpXor(BitOperation):
    op = "xor"


class BitOpNot(BitOperation):
    op = "not"
