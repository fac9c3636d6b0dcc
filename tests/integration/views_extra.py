"""Per-user views the views tests load beside the built-in ones."""

from __future__ import annotations

from typing import Any

from cardflow.views import view
from cardflow.widgets import Number, Text, Widget


@view("progress", title="Lesson progress")
def progress(profile: dict[str, Any], params: dict[str, str], uid: str,
             cards: dict[str, Any]) -> list[Widget]:
    goal = int(params.get("goal", "10"))
    done = profile.get("events", {}).get("lesson_done", 0)
    top = cards.get("top-events", {}).get("summary", "")
    return [Number(done, label=f"lessons of {goal}"), Text(f"{uid}; everyone: {top}")]


@view("broken")
def broken(profile: dict[str, Any]) -> list[Widget]:
    raise ValueError("this view always fails")
