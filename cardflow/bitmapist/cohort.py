"""bitmapist.cohort on cardflow: the same tables, forms and HTML, computed in few requests.

bitmapist asks Redis for every cell (a BITOP and a BITCOUNT each: ~8 000 round trips for a
90-day table); here the table's operations go to the server together (``POST /v1/bitmaps/ops``,
each bitmap read once, each row's and column's expression sent once and referred to), and the
answer is assembled with bitmapist's own rules: a blank where the row's cohort is empty or the
column's bitmap has no marks, 0.0 where nobody is in both, else a percent or a count. A table
too big for one request (a year of days: 133k cells) goes in several, whole rows each.
The HTML and CSV templates are bitmapist's (tmpl/, BSD-3-Clause, Doist Ltd.).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from dateutil.relativedelta import relativedelta

from cardflow.bitmapist import (
    BitmapistError,
    BitOpAnd,
    DayEvents,
    GenericPeriodEvents,
    MonthEvents,
    WeekEvents,
    YearEvents,
    _Bitmap,
    _connection_ops,
)

CUSTOM_HANDLERS: dict[str, Callable[..., Any]] = {}


def set_custom_handler(event_name: str, callback: Callable[..., Any]) -> None:
    """``callback(key, cls, cls_args)`` builds the bitmap for the selection ``event_name``."""
    CUSTOM_HANDLERS[event_name] = callback


def _dispatch(key: str, cls: Callable[..., GenericPeriodEvents], cls_args: tuple[Any, ...]) -> Any:
    if key in CUSTOM_HANDLERS:
        return CUSTOM_HANDLERS[key](key, cls, cls_args)
    return cls(key, *cls_args)


def _day_events_fn(key: str, d: date, system: str) -> Any:
    return _dispatch(key, DayEvents, (d.year, d.month, d.day, system))


def _weeks_events_fn(key: str, d: date, system: str) -> Any:
    iso_year, iso_week, _ = d.isocalendar()
    return _dispatch(key, WeekEvents, (iso_year, iso_week, system))


def _month_events_fn(key: str, d: date, system: str) -> Any:
    return _dispatch(key, MonthEvents, (d.year, d.month, system))


def _year_events_fn(key: str, d: date, system: str) -> Any:
    return _dispatch(key, YearEvents, (d.year, system))


def get_dates_data(
    select1: str,
    select2: str,
    select1b: str | None = None,
    select2b: str | None = None,
    time_group: str = "days",
    system: str = "default",
    as_percent: bool = True,
    num_results: int = 31,
    num_of_rows: int = 12,
    start_date: str | None = None,
) -> list[list[Any]]:
    """bitmapist's cohort table: per period, ``[start, cohort size, cell 0 … cell num_of_rows]``."""
    num_results, num_of_rows = int(num_results), int(num_of_rows)
    if start_date:
        now = datetime.strptime(start_date, "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(days=num_results - 1)
    else:
        now = datetime.now(tz=UTC)
    step: Callable[[int], Any]
    if time_group == "days":
        fn, now = _day_events_fn, now - timedelta(days=num_results - 1)
        step = lambda n: timedelta(days=n)  # noqa: E731 - bitmapist's shape, one line per group
    elif time_group == "weeks":
        fn, now = _weeks_events_fn, now - relativedelta(weeks=num_results - 1)
        step = lambda n: relativedelta(weeks=n)  # noqa: E731
    elif time_group == "months":
        fn, now = _month_events_fn, now - relativedelta(months=num_results - 1)
        now -= timedelta(days=now.day - 1)
        step = lambda n: relativedelta(months=n)  # noqa: E731
    elif time_group == "years":
        fn, num_results = _year_events_fn, 3
        now = now - relativedelta(years=num_results - 1)
        step = lambda n: relativedelta(years=n)  # noqa: E731
    else:
        raise ValueError(f"time_group must be days, weeks, months or years, got {time_group!r}")

    made: dict[tuple[str, str | None, datetime], Any] = {}  # each period's selection, made once

    def selection(name: str, extra: str | None, when: datetime) -> Any:
        key = (name, extra, when)
        if key not in made:
            events = fn(name, when, system)
            made[key] = BitOpAnd(system, events, fn(extra, when, system)) if extra else events
        return made[key]

    rows = []
    for i in range(num_results):
        start = now + step(i)
        columns = [selection(select2, select2b, start + step(t)) for t in range(num_of_rows + 1)]
        rows.append((start, selection(select1, select1b, start), columns))
    counted = _count_rows([(first, columns) for _, first, columns in rows])

    dates = []
    for (start, _, _), (size, cells) in zip(rows, counted, strict=True):
        result: list[Any] = [start, size]
        for second, both in cells:
            if size == 0 or second == 0:
                result.append("")
            elif both == 0:
                result.append(0.0)
            elif as_percent:
                result.append((float(both) / float(size)) * 100)
            else:
                result.append(both)
        dates.append(result)
    return dates


# A request carries whole rows, up to these sizes (the server's defaults: bitmaps_max_queries, and
# 90 % of query_max_body_bytes' 1 MB); a server with lower limits refuses it, and the rows are
# halved. A 90 x 90 table (~510 kB) is one request: each request reads its bitmaps again.
MAX_QUERIES = 20_000
MAX_BYTES = 900_000


class _Request:
    """One POST /v1/bitmaps/ops: every distinct expression once, cells referring to them."""

    def __init__(self) -> None:
        self.queries: list[dict[str, Any]] = []
        self.index: dict[str, int] = {}
        self.bytes = 0

    def ref(self, obj: _Bitmap) -> int:
        if obj.redis_key not in self.index:
            expr = obj.expr()
            self.index[obj.redis_key] = self.add(expr, len(json.dumps(expr)))
        return self.index[obj.redis_key]

    def cell(self, row: int, column: int) -> int:
        return self.add({"op": "and", "args": [{"ref": row}, {"ref": column}]}, 52)  # its JSON, 5-digit refs

    def add(self, expr: dict[str, Any], size: int) -> int:
        self.queries.append({"expr": expr})
        self.bytes += size + 12
        return len(self.queries) - 1


def _count_rows(rows: list[tuple[_Bitmap, list[_Bitmap]]]) -> list[tuple[int, list[tuple[int, int]]]]:
    """Per row: the row's count and per column (the column's count, both's count), in as few
    requests as the server takes."""
    out: list[tuple[int, list[tuple[int, int]]]] = []
    per = len(rows)  # rows per request, while the server takes them
    while len(out) < len(rows):
        request = _Request()
        batch: list[tuple[int, list[tuple[int, int]]]] = []
        for first, columns in rows[len(out):len(out) + per]:
            if batch and (len(request.queries) + 2 * len(columns) + 1 > MAX_QUERIES
                          or request.bytes > MAX_BYTES):
                break
            row = request.ref(first)
            cells = []
            for column in columns:
                second = request.ref(column)
                cells.append((second, request.cell(row, second)))
            batch.append((row, cells))
        try:
            counts = [r["count"] for r in _connection_ops(request.queries)]
        except BitmapistError as exc:  # over a lower limit of this server: fewer rows a request
            if len(batch) == 1 or not (exc.status == 413 or "bitmaps_max_" in str(exc)):
                raise
            per = max(1, len(batch) // 2)
            continue
        out += [(counts[row], [(counts[a], counts[b]) for a, b in cells]) for row, cells in batch]
    return out


def get_lookup() -> Any:
    from mako.lookup import TemplateLookup

    global _LOOKUP
    if _LOOKUP is None:
        _LOOKUP = TemplateLookup(directories=[str(Path(__file__).parent / "tmpl")], encoding_errors="replace")
    return _LOOKUP


_LOOKUP: Any = None


def render_html_form(
    action_url: str,
    selections1: list[tuple[str, str]],
    selections1b: list[tuple[str, str]] | None = None,
    selections2: list[tuple[str, str]] | None = None,
    selections2b: list[tuple[str, str]] | None = None,
    time_group: str = "days",
    select1: str | None = None,
    select1b: str | None = None,
    select2: str | None = None,
    select2b: str | None = None,
    as_percent: bool = True,
    num_results: int = 31,
    num_of_rows: int = 12,
    start_date: str | None = None,
) -> str:
    """The form that picks a cohort table's selections (bitmapist's template)."""
    selections2 = selections2 or selections1[:]
    selections1b_c = selections1b[:] if selections1b else selections1[:]
    selections1b_c.insert(0, ("------", ""))
    selections2b_c = selections2b[:] if selections2b else selections2[:]
    selections2b_c.insert(0, ("------", ""))
    html: str = (
        get_lookup()
        .get_template("form_data.mako")
        .render(
            selections1=selections1,
            selections1b=selections1b_c,
            selections2=selections2,
            selections2b=selections2b_c,
            time_group=time_group,
            select1=select1,
            select1b=select1b,
            select2=select2,
            select2b=select2b,
            action_url=action_url,
            as_percent=as_percent,
            num_results=int(num_results),
            num_of_rows=int(num_of_rows),
            start_date=start_date,
        )
    )
    return html


def _render(
    template: str,
    dates_data: list[list[Any]],
    as_percent: bool,
    time_group: str,
    num_results: int,
    num_of_rows: int,
    start_date: str | None,
) -> str:
    text: str = (
        get_lookup()
        .get_template(template)
        .render(
            dates_data=dates_data,
            as_percent=as_percent,
            time_group=time_group,
            num_results=num_results,
            num_of_rows=num_of_rows,
            start_date=start_date,
        )
    )
    return text


def render_html_data(
    dates_data: list[list[Any]],
    as_percent: bool = True,
    time_group: str = "days",
    num_results: int = 31,
    num_of_rows: int = 12,
    start_date: str | None = None,
) -> str:
    """The table as HTML (bitmapist's template)."""
    return _render(
        "table_data.mako", dates_data, as_percent, time_group, num_results, num_of_rows, start_date
    )


def render_csv_data(
    dates_data: list[list[Any]],
    as_percent: bool = True,
    time_group: str = "days",
    num_results: int = 31,
    num_of_rows: int = 12,
    start_date: str | None = None,
) -> str:
    """The table as CSV (bitmapist's template)."""
    return _render(
        "table_data_csv.mako", dates_data, as_percent, time_group, num_results, num_of_rows, start_date
    )


__all__ = ["get_dates_data", "render_csv_data", "render_html_data", "render_html_form", "set_custom_handler"]
