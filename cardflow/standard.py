"""The standard profile script, enabled by default, and helpers to read what it keeps.

Fields (every one order-independent):

- ``first_seen`` / ``last_seen``: earliest and latest event time (epoch ms)
- ``events``: count per event name
- ``days``: active days per event name over a bounded window (default 400
  days back from that event's latest day), stored compactly as
  ``[latest_day, hex bitmap]`` where bit *i* means day ``latest_day - i``
- ``properties``: ``$set`` values as ``[value, ts, event_id]``; the latest
  event time wins, ties go to the larger event id
- ``properties_once``: ``$set_once`` values, the earliest event time wins
"""

from __future__ import annotations

from typing import Any

from cardflow.events import Event
from cardflow.profiles import ProfileScript

DAY_MS = 86_400_000
WINDOW_DAYS = 400
FIELDS = ("first_seen", "last_seen", "events", "days", "properties", "properties_once")


def _add_day(cell: list[Any] | None, day: int, window: int) -> list[Any] | None:
    if cell is None:
        return [day, "1"]
    end, bits = cell[0], int(cell[1], 16)
    if day > end:
        bits = (bits << (day - end)) | 1
        end = day
    elif end - day < window:
        bits |= 1 << (end - day)
    else:
        return cell
    bits &= (1 << window) - 1
    return [end, format(bits, "x")]


def standard_script(window_days: int = WINDOW_DAYS) -> ProfileScript:
    def fold(profile: dict[str, Any], event: Event) -> None:
        ts = event.ts
        if "first_seen" not in profile or ts < profile["first_seen"]:
            profile["first_seen"] = ts
        if "last_seen" not in profile or ts > profile["last_seen"]:
            profile["last_seen"] = ts
        counts = profile.setdefault("events", {})
        counts[event.event] = counts.get(event.event, 0) + 1
        days = profile.setdefault("days", {})
        days[event.event] = _add_day(days.get(event.event), ts // DAY_MS, window_days)
        if event.set:
            props = profile.setdefault("properties", {})
            for name, value in event.set.items():
                old = props.get(name)
                if old is None or (ts, event.event_id) > (old[1], old[2]):
                    props[name] = [value, ts, event.event_id]
        if event.set_once:
            once = profile.setdefault("properties_once", {})
            for name, value in event.set_once.items():
                old = once.get(name)
                if old is None or (ts, event.event_id) < (old[1], old[2]):
                    once[name] = [value, ts, event.event_id]

    return ProfileScript("standard", f"1-w{window_days}", fold, fields=FIELDS)


standard = standard_script()


def active_days(profile: dict[str, Any], event: str | None = None) -> list[int]:
    """Days (since 1970-01-01 UTC) on which the user did ``event`` (any event when None), ascending."""
    cells = profile.get("days", {})
    names = [event] if event is not None else list(cells)
    days: set[int] = set()
    for name in names:
        cell = cells.get(name)
        if cell is None:
            continue
        end, bits = cell[0], int(cell[1], 16)
        while bits:  # one step per active day, not per bit position
            low = bits & -bits
            days.add(end - low.bit_length() + 1)
            bits ^= low
    return sorted(days)


def user_property(profile: dict[str, Any], name: str, default: Any = None) -> Any:
    """The user's property: the latest ``$set`` value, else the ``$set_once`` one."""
    for field in ("properties", "properties_once"):
        cell = profile.get(field, {}).get(name)
        if cell is not None:
            return cell[0]
    return default
