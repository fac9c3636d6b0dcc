"""The cards that ship with cardflow (enabled in ``cardflow dev``).

Every card reads the standard profile script's fields. Dates are UTC days;
``as_of`` (ISO date, default today) pins "today" for reproducible results.
Every card is incremental (``contribute``): its ``map`` is the same partial
computed over a whole partition at once, which the tests hold them to.
Day resolution is what the standard script keeps (active days per event),
so a funnel counts steps done on the same day as in order.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cardflow.cards import Card, CardError
from cardflow.incremental import Rebuild
from cardflow.standard import DAY_MS, active_days, user_property
from cardflow.widgets import Bar, Cohort, Funnel, Group, Line, Map, Number, Table, Users, Widget

EPOCH = date(1970, 1, 1)
Profiles = Iterable[dict[str, Any]]


def day_number(d: date) -> int:
    return (d - EPOCH).days


def day_date(n: int) -> date:
    return EPOCH + timedelta(days=n)


def today(as_of: str | None) -> date:
    if as_of is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(as_of)
    except ValueError as exc:
        raise CardError(f"as_of must be an ISO date such as 2026-11-25, got {as_of!r}") from exc


class ActiveUsers(Card):
    """Daily, weekly (7-day) and monthly (30-day) active users over the last ``days`` days."""

    id = "active-users"
    debounce = 0.25  # incremental: a round costs what changed
    title = "Active users"
    params = {"days": 30, "as_of": None}

    def map(self, profiles: Profiles) -> dict[str, Counter[int]]:
        last = day_number(today(self.p["as_of"]))
        first = last - self.p["days"] + 1
        span = last - first + 2
        # Difference arrays: a user adds +1 over each run of days they count for, O(active days).
        diffs = {name: [0] * span for name in ("dau", "wau", "mau")}
        for profile in profiles:
            days = [d for d in active_days(profile) if first - 29 <= d <= last]
            for name, width in (("dau", 1), ("wau", 7), ("mau", 30)):
                _cover(diffs[name], days, width, first, last)
        out = {}
        for name, diff in diffs.items():
            counts: Counter[int] = Counter()
            running = 0
            for i in range(span - 1):
                running += diff[i]
                if running:
                    counts[first + i] = running
            out[name] = counts
        return out

    def window(self) -> date:
        self._today = today(self.p["as_of"])
        return self._today

    def contribute(self, profile: dict[str, Any]) -> dict[str, Counter[int]]:
        last = day_number(getattr(self, "_today", None) or self.window())
        first = last - self.p["days"] + 1
        days = [d for d in active_days(profile) if first - 29 <= d <= last]
        out = {}
        for name, width in (("dau", 1), ("wau", 7), ("mau", 30)):
            covered: set[int] = set()
            for d in days:
                covered.update(range(max(d, first), min(d + width - 1, last) + 1))
            out[name] = Counter(dict.fromkeys(covered, 1))
        return out

    def render(self, total: dict[str, Counter[int]] | None) -> list[Widget]:
        total = total or {"dau": Counter(), "wau": Counter(), "mau": Counter()}
        last = day_number(today(self.p["as_of"]))
        days = range(last - self.p["days"] + 1, last + 1)
        series = {name.upper(): [(day_date(d).isoformat(), total[name][d]) for d in days]
                  for name in ("dau", "wau", "mau")}

        def kpi(name: str, label: str) -> Number:
            now, before = total[name][last], total[name][last - 1]
            return Number(now, label=label, delta=(now - before) / before if before else None)

        return [Group([kpi("dau", "DAU"), kpi("wau", "WAU"), kpi("mau", "MAU")], direction="horizontal"),
                Line(series, label="active users per day")]

    def summary(self, total: dict[str, Counter[int]] | None) -> str:
        last = day_number(today(self.p["as_of"]))
        total = total or {"dau": Counter(), "wau": Counter(), "mau": Counter()}
        return f"{total['dau'][last]} active today, {total['wau'][last]} this week, " \
               f"{total['mau'][last]} this month"


def _cover(diff: list[int], days: list[int], width: int, first: int, last: int) -> None:
    """Add 1 to ``diff`` over every day in [first, last] within ``width`` days after an active day."""
    run: list[int] | None = None
    for d in days:  # ascending
        start, end = max(d, first), min(d + width - 1, last)
        if start > end:
            continue
        if run is not None and start <= run[1] + 1:
            run[1] = max(run[1], end)
            continue
        if run is not None:
            diff[run[0] - first] += 1
            diff[run[1] - first + 1] -= 1
        run = [start, end]
    if run is not None:
        diff[run[0] - first] += 1
        diff[run[1] - first + 1] -= 1


class TopEvents(Card):
    """The most frequent events: how often, and by how many users."""

    id = "top-events"
    debounce = 0.25  # incremental: a round costs what changed
    title = "Top events"
    params = {"limit": 10}

    def map(self, profiles: Profiles) -> dict[str, Counter[str]]:
        counts: Counter[str] = Counter()
        users: Counter[str] = Counter()
        for profile in profiles:
            events = profile.get("events", {})
            counts.update(events)
            users.update(events.keys())
        return {"counts": counts, "users": users}

    def contribute(self, profile: dict[str, Any]) -> dict[str, Counter[str]]:
        events = profile.get("events", {})
        return {"counts": Counter(events), "users": Counter(dict.fromkeys(events, 1))}

    def _top(self, total: dict[str, Counter[str]] | None) -> list[tuple[str, int]]:
        counts = (total or {}).get("counts", Counter())
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.p["limit"]]

    def render(self, total: dict[str, Counter[str]] | None) -> list[Widget]:
        top = self._top(total)
        users = (total or {}).get("users", Counter())
        return [Bar(top, label="events"),
                Table(["event", "count", "users"], [[name, n, users[name]] for name, n in top])]

    def summary(self, total: dict[str, Counter[str]] | None) -> str:
        top = self._top(total)
        return f"most frequent: {top[0][0]} ({top[0][1]})" if top else "no events yet"


PERIODS = ("days", "weeks", "months")


class Periods:
    """bitmapist's calendar: row i starts at ``start + i`` periods; a day belongs to the period
    whose key it shares (a date, an ISO (year, week), or a (year, month))."""

    def __init__(self, period: str, rows: int, after: int, start_date: str | None, as_of: str | None) -> None:
        if period not in PERIODS:
            raise CardError(f"period must be one of {PERIODS}, got {period!r}")
        self.period = period
        if start_date is not None:
            try:
                first = date.fromisoformat(start_date)
            except ValueError as exc:
                raise CardError(f"start_date must be an ISO date, got {start_date!r}") from exc
        else:
            first = self.shift(today(as_of), -(rows - 1))
            if period == "months":
                first = first.replace(day=1)
        self.dates = [self.shift(first, j) for j in range(rows + after + 1)]
        self.keys = [self.key(d) for d in self.dates]
        self.index = {key: j for j, key in enumerate(self.keys)}
        self._by_day: dict[int, int | None] = {}  # memo: users share days

    def shift(self, d: date, n: int) -> date:
        if self.period == "days":
            return d + timedelta(days=n)
        if self.period == "weeks":
            return d + timedelta(weeks=n)
        month = d.year * 12 + d.month - 1 + n
        year, month0 = divmod(month, 12)
        for day in range(d.day, 0, -1):  # as dateutil's relativedelta: clip to the month's end
            try:
                return date(year, month0 + 1, day)
            except ValueError:
                continue
        raise AssertionError("unreachable")

    def key(self, d: date) -> Any:
        if self.period == "days":
            return d.toordinal()
        if self.period == "weeks":
            return d.isocalendar()[:2]
        return d.year, d.month

    def indices(self, days: Iterable[int]) -> set[int]:
        out = set()
        memo = self._by_day
        for day in days:
            if day not in memo:
                memo[day] = self.index.get(self.key(day_date(day)))
            j = memo[day]
            if j is not None:
                out.add(j)
        return out


class Retention(Card):
    """Cohort retention. Row p: users who did ``cohort_event`` in period p (form ``first``: whose
    *first* one falls in p; form ``every``: every user who did it in p, as bitmapist). Cell k: of
    them, those who did ``return_event`` in p+k. Blank when the cohort is empty or nobody at all
    did ``return_event`` in p+k (it has not happened yet); 0 when some did but none of the cohort.
    The defaults are first seen → any event, by day."""

    id = "retention"
    debounce = 0.25  # incremental: a round costs what changed
    title = "Retention"
    params = {"cohort_event": None, "return_event": None, "period": "days", "form": "first",
              "periods": 14, "after": 12, "start_date": None, "as_of": None}

    def calendar(self) -> Periods:
        """The rows' periods (bitmapist's calendar), from the params."""
        if self.p["form"] not in ("first", "every"):
            raise CardError(f"form must be 'first' or 'every', got {self.p['form']!r}")
        return Periods(self.p["period"], self.p["periods"], self.p["after"], self.p["start_date"],
                       self.p["as_of"])

    def map(self, profiles: Profiles) -> dict[str, Counter[Any]]:
        periods = self.calendar()
        size: Counter[int] = Counter()
        both: Counter[tuple[int, int]] = Counter()
        returned: Counter[int] = Counter()
        for profile in profiles:
            self._add(profile, periods, size, both, returned)
        return {"size": size, "both": both, "returned": returned}

    def window(self) -> Any:
        """The calendar moves with "today" unless ``start_date`` pins it."""
        self._periods = self.calendar()
        return None if self.p["start_date"] is not None else today(self.p["as_of"])

    def contribute(self, profile: dict[str, Any]) -> dict[str, Counter[Any]]:
        periods = getattr(self, "_periods", None)
        if periods is None:
            self.window()
            periods = self._periods
        size: Counter[int] = Counter()
        both: Counter[tuple[int, int]] = Counter()
        returned: Counter[int] = Counter()
        self._add(profile, periods, size, both, returned)
        return {"size": size, "both": both, "returned": returned}

    def _add(self, profile: dict[str, Any], periods: Periods, size: Counter[int],
             both: Counter[tuple[int, int]], returned: Counter[int]) -> None:
        rows, after = self.p["periods"], self.p["after"]
        cohort_event = self.p["cohort_event"]
        if cohort_event is None:
            a_days = [profile["first_seen"] // DAY_MS] if "first_seen" in profile else []
        else:
            a_days = active_days(profile, cohort_event)
        if self.p["form"] == "first":
            a_days = a_days[:1]
        b = periods.indices(active_days(profile, self.p["return_event"]))
        returned.update(b)
        for i in periods.indices(a_days):
            if i >= rows:
                continue
            size[i] += 1
            both.update((i, j - i) for j in b if 0 <= j - i <= after)

    def cells(self, total: dict[str, Counter[Any]] | None) -> list[tuple[str, int, list[int | None]]]:
        """Per row: label, cohort size, and per k the count of returning users (None when blank)."""
        periods = self.calendar()
        total = total or {}
        size, both, returned = (total.get(k, Counter()) for k in ("size", "both", "returned"))
        out = []
        for i in range(self.p["periods"]):
            row: list[int | None] = []
            for k in range(self.p["after"] + 1):
                blank = size[i] == 0 or returned[i + k] == 0
                row.append(None if blank else both[(i, k)])
            out.append((periods.dates[i].isoformat(), size[i], row))
        return out

    def render(self, total: dict[str, Counter[Any]] | None) -> list[Widget]:
        rows = [(label, n, [None if c is None else c / n for c in counts], counts)
                for label, n, counts in self.cells(total)]
        return [Cohort([r[:3] for r in rows], period=self.p["period"].rstrip("s"),
                       counts=[r[3] for r in rows])]

    def summary(self, total: dict[str, Counter[Any]] | None) -> str:
        rows = [(n, counts[1]) for _, n, counts in self.cells(total) if n and len(counts) > 1
                and counts[1] is not None]
        if not rows:
            return "not enough data yet"
        kept = sum(c for _, c in rows) / sum(n for n, _ in rows)
        return f"{kept:.0%} come back one {self.p['period'].rstrip('s')} later"


class FunnelCard(Card):
    """How many users went through ``steps`` in order, the last within ``window_days`` of the first."""

    id = "funnel"
    debounce = 0.25  # incremental: a round costs what changed
    title = "Funnel"
    params = {"steps": ["signup", "page_view", "purchase"], "window_days": 7}

    def map(self, profiles: Profiles) -> list[int]:
        steps, window = self.p["steps"], self.p["window_days"]
        if not steps:
            raise CardError("a funnel needs at least one step")
        reached = [0] * len(steps)
        for profile in profiles:
            for n in range(steps_reached(profile, steps, window)):
                reached[n] += 1
        return reached

    def contribute(self, profile: dict[str, Any]) -> list[int]:
        steps = self.p["steps"]
        if not steps:
            raise CardError("a funnel needs at least one step")
        n = steps_reached(profile, steps, self.p["window_days"])
        return [1] * n + [0] * (len(steps) - n)

    def render(self, total: list[int] | None) -> list[Widget]:
        total = total or [0] * len(self.p["steps"])
        return [Funnel(list(zip(self.p["steps"], total, strict=True)))]

    def summary(self, total: list[int] | None) -> str:
        if not total or not total[0]:
            return "nobody entered the funnel yet"
        return f"{total[-1] / total[0]:.1%} of {total[0]} users converted"


def steps_reached(profile: dict[str, Any], steps: list[str], window: int) -> int:
    """The most steps done in order (same day counts) within ``window`` days of the first step."""
    days = [active_days(profile, step) for step in steps]
    best = 0
    for start in days[0]:
        current, n = start, 1
        for later in days[1:]:
            nxt = next((d for d in later if d >= current), None)
            if nxt is None or nxt - start > window:
                break
            current, n = nxt, n + 1
        best = max(best, n)
        if best == len(steps):
            break
    return best


class UsersByProperty(Card):
    """Users per value of a user property (``country`` by default), on a map when the values are
    ISO 3166 alpha-2 codes."""

    id = "users-by-country"
    debounce = 0.25  # incremental: a round costs what changed
    title = "Users by country"
    params = {"property": "country", "limit": 20}

    def map(self, profiles: Profiles) -> Counter[str]:
        return Counter(str(user_property(p, self.p["property"], "(not set)")) for p in profiles)

    def contribute(self, profile: dict[str, Any]) -> Counter[str]:
        return Counter({str(user_property(profile, self.p["property"], "(not set)")): 1})

    def render(self, total: Counter[str] | None) -> list[Widget]:
        total = total or Counter()
        users = sum(total.values())
        top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[: self.p["limit"]]
        codes: Counter[str] = Counter()
        for k, v in total.items():
            if len(k) == 2 and k.isascii() and k.isalpha():
                codes[k.upper()] += v
        return [Map(codes, label="users"),
                Table([self.p["property"], "users", "share"],
                      [[k, v, round(v / users, 4)] for k, v in top])]

    def summary(self, total: Counter[str] | None) -> str:
        if not total:
            return "no users yet"
        name, n = max(total.items(), key=lambda kv: (kv[1], kv[0]))
        return f"most users: {name} ({n} of {sum(total.values())})"


class RecentUsers(Card):
    """The users seen most recently."""

    id = "recent-users"
    debounce = 0.25  # incremental: a round costs what changed
    title = "Recently active users"
    params = {"limit": 20}

    def map(self, profiles: Profiles) -> list[list[Any]]:
        top = heapq.nlargest(self.p["limit"], ((p.get("last_seen", 0), p["uid"], p) for p in profiles),
                             key=lambda t: (t[0], t[1]))
        return [self._row(p) for _, _, p in top]

    @staticmethod
    def _row(p: dict[str, Any]) -> list[Any]:
        return [p.get("last_seen", 0), p["uid"], p.get("first_seen", 0), sum(p.get("events", {}).values()),
                user_property(p, "country")]

    def contribute(self, profile: dict[str, Any]) -> list[list[Any]]:
        return [self._row(profile)]

    def reduce(self, a: list[list[Any]], b: list[list[Any]]) -> list[list[Any]]:
        # One row per user, the latest (a profile's new share replaces its old one).
        rows: dict[str, list[Any]] = {}
        for row in a + b:
            held = rows.get(row[1])
            if held is None or (row[0], row[3]) > (held[0], held[3]):
                rows[row[1]] = row
        return heapq.nlargest(self.p["limit"], rows.values(), key=lambda r: (r[0], r[1]))

    def retract(self, state: list[list[Any]], part: list[list[Any]] | None) -> list[list[Any]]:
        for row in part or ():
            if row in state:  # the user's new share did not replace it: who is next is not known
                raise Rebuild(f"user {row[1]!r} left the top {self.p['limit']}")
        return state

    def render(self, total: list[list[Any]] | None) -> list[Widget]:
        return [Users([{"uid": uid, "last_seen": seen, "first_seen": first, "events": n, "country": country}
                       for seen, uid, first, n, country in total or []])]

    def summary(self, total: list[list[Any]] | None) -> str:
        if not total:
            return "nobody yet"
        ago = max(0, int(time.time() - total[0][0] / 1000))
        return f"{total[0][1]} was active {ago}s ago"
