"""The built-in per-user views (``cardflow.views``), on the standard profile script's fields."""

from __future__ import annotations

import time
from typing import Any

from cardflow.standard import DAY_MS, active_days, user_property
from cardflow.views import view
from cardflow.widgets import Bar, Group, Number, Table, Widget


@view("activity", title="Activity")
def activity(profile: dict[str, Any], params: dict[str, str]) -> list[Widget]:
    """Events by name, and active days over the last ``?days=`` (default 30)."""
    try:
        days = max(1, min(400, int(params.get("days", 30))))
    except ValueError:
        days = 30
    today = int(time.time() * 1000) // DAY_MS
    recent = [d for d in active_days(profile) if d > today - days]
    counts = sorted(profile.get("events", {}).items(), key=lambda kv: -kv[1])
    return [Group(direction="horizontal", children=[Number(sum(n for _, n in counts), label="events"),
                   Number(len(recent), label=f"active days of the last {days}")]),
            Bar([(name, n) for name, n in counts[:20]], label="events by name")]


@view("properties", title="Properties")
def properties(profile: dict[str, Any]) -> list[Widget]:
    """The user's properties ($set, else $set_once)."""
    names = sorted(set(profile.get("properties", {})) | set(profile.get("properties_once", {})))
    return [Table(["property", "value"], [[name, str(user_property(profile, name))] for name in names])]
