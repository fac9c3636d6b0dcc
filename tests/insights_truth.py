"""Insights answers computed in plain Python from the events themselves: the reference the
warehouse's SQL is checked against (no SQL, no ClickHouse semantics beyond what the API documents)."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cardflow.insights import bucket_start, next_bucket

Event = dict[str, Any]


def _at(value: str, end: bool) -> datetime:
    if len(value) == 10:
        d = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        return d + timedelta(days=1) if end else d
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _same_type(x: Any, v: Any) -> bool:
    if isinstance(v, bool):
        return isinstance(x, bool)
    if isinstance(v, int | float):
        return isinstance(x, int | float) and not isinstance(x, bool)
    return isinstance(x, str)


def matches(props: dict[str, Any], f: dict[str, Any]) -> bool:
    k, op, v = f["property"], f["op"], f.get("value")
    if op == "is_set":
        return k in props
    if op == "is_not_set":
        return k not in props
    x = props.get(k)
    if op == "in":
        return any(k in props and _same_type(x, w) and x == w for w in v)
    if op == "neq":
        return not matches(props, {**f, "op": "eq"})
    if k not in props or not _same_type(x, v):
        return False
    if op == "eq":
        return bool(x == v)
    if op == "contains":
        return v in x
    return bool({"gt": x > v, "gte": x >= v, "lt": x < v, "lte": x <= v}[op])


def keep(events: list[Event], users: dict[str, dict[str, Any]], q: dict[str, Any]) -> list[Event]:
    lo, hi = _at(q["from"], False), _at(q["to"], True)
    out = []
    for e in events:
        at = datetime.fromtimestamp(e["ts"] / 1000, UTC)
        if not lo <= at < hi or (q.get("event") and e["event"] != q["event"]):
            continue
        fs = q.get("filters", [])
        if all(matches(e["properties"], f) for f in fs if f.get("on", "event") == "event") and all(
            e["uid"] in users and matches(users[e["uid"]], f) for f in fs if f.get("on") == "user"
        ):
            out.append(e)
    return out


def label(props: dict[str, Any] | None, key: str) -> str | None:
    if props is None or key not in props:
        return None
    v = props[key]
    if isinstance(v, str):
        return v
    return "true" if v is True else "false" if v is False else "null" if v is None else str(v)


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def aggregate(name: str, events: list[Event], prop: str | None) -> Any:
    if name == "count":
        return len(events)
    if name == "unique_users":
        return len({e["uid"] for e in events})
    xs = [
        float(e["properties"][prop])
        for e in events
        if prop in e["properties"]
        and isinstance(e["properties"][prop], int | float)
        and not isinstance(e["properties"][prop], bool)
    ]
    if name == "sum":
        return sum(xs)
    if not xs:
        return None
    return {
        "avg": lambda: sum(xs) / len(xs),
        "min": lambda: min(xs),
        "max": lambda: max(xs),
        "median": lambda: quantile(xs, 0.5),
        "p90": lambda: quantile(xs, 0.9),
    }[name]()


def trend(events: list[Event], users: dict[str, dict[str, Any]], q: dict[str, Any]) -> dict[str, Any]:
    period = q.get("period", "day")
    lo, hi = _at(q["from"], False), _at(q["to"], True)
    buckets = []
    at = bucket_start(lo, period)
    while at < hi:
        buckets.append(at)
        at = next_bucket(at, period)
    chosen = keep(events, users, q)
    groups: dict[Any, list[Event]] = {}
    bd = _breakdown(q)
    for e in chosen:
        if bd is None:
            b = None
        elif bd.get("on") == "user":
            b = label(users.get(e["uid"]), bd["property"])
        else:
            b = label(e["properties"], bd["property"])
        groups.setdefault(b, []).append(e)
    order = sorted(groups, key=lambda b: (-len(groups[b]), b is None, b or ""))[: q.get("limit", 10)]
    agg = q.get("aggregation", "count")
    series = []
    for b in order:
        per: dict[datetime, list[Event]] = {}
        for e in groups[b]:
            per.setdefault(bucket_start(datetime.fromtimestamp(e["ts"] / 1000, UTC), period), []).append(e)
        zero = 0 if agg in ("count", "unique_users", "sum") else None
        series.append(
            {
                "breakdown": b,
                "values": [aggregate(agg, per[t], q.get("property")) if t in per else zero for t in buckets],
            }
        )
    if not series and bd is None:
        series = [
            {
                "breakdown": None,
                "values": [0 if agg in ("count", "unique_users", "sum") else None] * len(buckets),
            }
        ]
    return {"buckets": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in buckets], "series": series}


def _breakdown(q: dict[str, Any]) -> dict[str, Any] | None:
    bd = q.get("breakdown")
    return {"property": bd} if isinstance(bd, str) else bd


def window_funnel(marks: list[tuple[int, int]], n_steps: int, window_ms: int) -> int:
    """ClickHouse's windowFunnel (default mode): (ts, step) pairs in time order; a chain starts at
    each first step and advances when the next step comes within the window of its start."""
    starts: list[int | None] = [None] * n_steps
    best = 0
    for ts, step in sorted(marks):
        if step == 0:
            starts[0] = ts
        elif starts[step - 1] is not None and ts <= starts[step - 1] + window_ms:  # type: ignore[operator]
            starts[step] = starts[step - 1]
        else:
            continue
        best = max(best, step + 1)
        if best == n_steps:
            break
    return best


def funnel(events: list[Event], users: dict[str, dict[str, Any]], q: dict[str, Any]) -> dict[str, Any]:
    steps = q["steps"]
    chosen = [e for e in keep(events, users, {**q, "event": None}) if e["event"] in steps]
    per_user: dict[str, list[Event]] = {}
    for e in chosen:
        per_user.setdefault(e["uid"], []).append(e)
    bd = _breakdown(q)
    levels: dict[Any, Counter[int]] = {}
    for uid, evs in per_user.items():
        marks = [(e["ts"], i) for e in evs for i, s in enumerate(steps) if e["event"] == s]
        level = window_funnel(marks, len(steps), q.get("window_seconds", 7 * 86400) * 1000)
        if not level:
            continue
        b = None
        if bd is not None and bd.get("on") == "user":
            b = label(users.get(uid), bd["property"])
        elif bd is not None:
            firsts = sorted((e["ts"], n) for n, e in enumerate(evs) if e["event"] == steps[0])
            b = label(evs[firsts[0][1]]["properties"], bd["property"]) if firsts else None
        levels.setdefault(b, Counter())[level] += 1
    order = sorted(levels, key=lambda b: (-sum(levels[b].values()), b is None, b or ""))[: q.get("limit", 10)]
    if not order and bd is None:
        order, levels = [None], {None: Counter()}
    out = []
    for b in order:
        reached = [sum(n for lv, n in levels[b].items() if lv > k) for k in range(len(steps))]
        out.append({"breakdown": b, "users": reached})
    return {"series": out}


EVENTS = ("signup", "page_view", "purchase", "search", "share")
COUNTRIES = ("DE", "FR", "US", "BR", "JP", "ü'\"\\;--")


def generate(n_users: int, days: int, seed: int, end: date) -> tuple[list[Event], dict[str, dict[str, Any]]]:
    """Events with typed properties (strings, ints, floats, booleans, some missing) over ``days``
    days before ``end``, and each user's final ``$set`` properties."""
    rng = random.Random(seed)
    start = datetime.combine(end - timedelta(days=days - 1), datetime.min.time(), UTC)
    events: list[Event] = []
    users: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, int]] = set()
    for u in range(n_users):
        uid = f"u{u}"
        users[uid] = {"country": rng.choice(COUNTRIES), "plan": rng.choice(["free", "pro", 3, True])}
        if rng.random() < 0.1:
            del users[uid]["plan"]
        first = rng.randrange(days)
        for _ in range(rng.randint(1, 12)):
            ms = int(
                (start + timedelta(days=rng.randint(first, days - 1))).timestamp() * 1000
            ) + rng.randrange(86_400_000)
            if (uid, ms) in seen:  # distinct times per user: step order in a funnel is unambiguous
                continue
            seen.add((uid, ms))
            props: dict[str, Any] = {"browser": rng.choice(["firefox", "chrome", "safari"])}
            if rng.random() < 0.8:
                props["amount"] = rng.choice([rng.randint(0, 500), rng.randint(0, 500) + 0.25])
            if rng.random() < 0.3:
                props["flag"] = rng.random() < 0.5
            if rng.random() < 0.2:
                props["amount_text"] = str(rng.randint(0, 9))
            events.append({"uid": uid, "event": rng.choice(EVENTS), "ts": ms, "properties": props})
    return events, users


def retention(events: list[Event], params: dict[str, Any]) -> list[list[Any]]:
    """The retention card's rows ([date, size, counts]) computed from the events by the card's own
    map over minimal profiles (first_seen and active days per event, as the standard script keeps)."""
    from cardflow.builtin_cards import Retention

    days: dict[str, dict[str, set[int]]] = {}
    first: dict[str, int] = {}
    for e in events:
        day = e["ts"] // 86_400_000
        days.setdefault(e["uid"], {}).setdefault(e["event"], set()).add(day)
        first[e["uid"]] = min(first.get(e["uid"], e["ts"]), e["ts"])

    def cell(active: set[int]) -> list[Any]:
        end = max(active)
        return [end, format(sum(1 << (end - d) for d in active), "x")]

    profiles = [{"first_seen": first[u], "days": {name: cell(ds) for name, ds in per.items()}}
                for u, per in days.items()]
    card = Retention(**params)
    return [[d, n, counts] for d, n, counts in card.cells(card.map(profiles))]
