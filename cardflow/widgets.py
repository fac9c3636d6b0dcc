"""Dashboard widgets: typed, validated at construction, serialised to JSON with a ``type``.

Bad data is a :class:`WidgetError` at render time (naming the widget and the
field), never a broken page. :func:`widget_schema` publishes the JSON Schema
the dashboard and API clients rely on.

    >>> Number(1234, label="users", delta=0.12).to_json()["type"]
    'number'
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cardflow.errors import WidgetError

ISO_COUNTRY = re.compile(r"^[A-Z]{2}$")


def _number(widget: str, name: str, value: Any, allow_none: bool = False) -> float | int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WidgetError(f"{widget}.{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise WidgetError(f"{widget}.{name} must be finite, got {value!r}")
    return value


def _pairs(widget: str, name: str, values: Any) -> list[list[Any]]:
    out = []
    for i, item in enumerate(values):
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise WidgetError(f"{widget}.{name}[{i}] must be a (label, value) pair, got {item!r}")
        out.append([str(item[0]), _number(widget, f"{name}[{i}]", item[1])])
    return out


class Widget:
    type: str = ""

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class Text(Widget):
    text: str
    type = "text"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "text": str(self.text)}


@dataclass
class Number(Widget):
    """A KPI: a value, a label, an optional relative change (0.12 = +12 %) and unit."""

    value: float | int
    label: str = ""
    delta: float | None = None
    unit: str = ""
    type = "number"

    def __post_init__(self) -> None:
        _number("Number", "value", self.value)
        _number("Number", "delta", self.delta, allow_none=True)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "value": self.value, "label": self.label, "delta": self.delta,
                "unit": self.unit}


@dataclass
class Bar(Widget):
    """Labelled bars, in the given order."""

    data: Sequence[tuple[str, float]]
    label: str = ""
    type = "bar"

    def __post_init__(self) -> None:
        self._data = _pairs("Bar", "data", self.data)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "label": self.label, "data": self._data}


@dataclass
class Line(Widget):
    """Time series: ``{series name: [(x, y), …]}``; x is a date string or epoch ms."""

    series: Mapping[str, Sequence[tuple[Any, float]]]
    label: str = ""
    type = "line"

    def __post_init__(self) -> None:
        if not isinstance(self.series, dict) or not self.series:
            raise WidgetError("Line.series must be a non-empty {name: [(x, y), …]} mapping")
        self._series = {str(name): _pairs("Line", f"series[{name!r}]", points)
                        for name, points in self.series.items()}

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "label": self.label, "series": self._series}


@dataclass
class Table(Widget):
    columns: list[str]
    rows: list[list[Any]]
    type = "table"

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise WidgetError(f"Table.rows[{i}] has {len(row)} cells for {len(self.columns)} columns")
            for j, cell in enumerate(row):
                if isinstance(cell, float) and not math.isfinite(cell):
                    raise WidgetError(f"Table.rows[{i}][{j}] must be finite, got {cell!r}")

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()


@dataclass
class Map(Widget):
    """Values per ISO 3166-1 alpha-2 country code."""

    values: Mapping[str, float]
    label: str = ""
    type = "map"

    def __post_init__(self) -> None:
        for code, value in self.values.items():
            if not isinstance(code, str) or not ISO_COUNTRY.match(code):
                raise WidgetError(f"Map.values key {code!r} is not an ISO 3166-1 alpha-2 code such as 'FI'")
            _number("Map", f"values[{code!r}]", value)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "label": self.label, "values": dict(self.values)}


@dataclass
class Timeline(Widget):
    """Events in time: ``[(epoch ms, text), …]``."""

    events: list[tuple[int, str]]
    type = "timeline"

    def __post_init__(self) -> None:
        for i, item in enumerate(self.events):
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise WidgetError(f"Timeline.events[{i}] must be (epoch ms, text), got {item!r}")
            _number("Timeline", f"events[{i}]", item[0])

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "events": [[int(t), str(x)] for t, x in self.events]}


@dataclass
class Users(Widget):
    """A list of users: each a dict with at least ``uid``."""

    users: list[dict[str, Any]]
    type = "users"

    def __post_init__(self) -> None:
        for i, user in enumerate(self.users):
            if not isinstance(user, dict) or "uid" not in user:
                raise WidgetError(f"Users.users[{i}] must be a dict with a 'uid'")

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "users": self.users}


@dataclass
class Cohort(Widget):
    """A retention heatmap: one row per cohort period, ``cells[k]`` the share returning in p+k
    (None: blank, the period has not happened yet)."""

    rows: list[tuple[str, int, list[float | None]]]
    period: str = "day"
    counts: list[list[int | None]] | None = None  # the returning users behind each share
    type = "cohort"

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if not isinstance(row, list | tuple) or len(row) != 3:
                raise WidgetError(f"Cohort.rows[{i}] must be (label, size, cells)")
            _number("Cohort", f"rows[{i}].size", row[1])
            for k, cell in enumerate(row[2]):
                value = _number("Cohort", f"rows[{i}].cells[{k}]", cell, allow_none=True)
                if value is not None and not 0 <= value <= 1:
                    raise WidgetError(f"Cohort.rows[{i}].cells[{k}] must be a share in [0, 1], got {value}")
        if self.counts is not None and [len(c) for c in self.counts] != [len(r[2]) for r in self.rows]:
            raise WidgetError("Cohort.counts must have one list per row, as long as its cells")

    def to_json(self) -> dict[str, Any]:
        counts: list[list[int | None] | None] = [*self.counts] if self.counts else [None] * len(self.rows)
        return {"type": self.type, "period": self.period,
                "rows": [{"label": str(label), "size": size, "cells": list(cells),
                          **({"counts": list(c)} if c is not None else {})}
                         for (label, size, cells), c in zip(self.rows, counts, strict=True)]}


@dataclass
class Funnel(Widget):
    steps: list[tuple[str, int]]
    type = "funnel"

    def __post_init__(self) -> None:
        self._steps = _pairs("Funnel", "steps", self.steps)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "steps": self._steps}


@dataclass
class Group(Widget):
    """Lay widgets out side by side (``horizontal``) or stacked (``vertical``); groups nest."""

    children: list[Widget] = field(default_factory=list)
    direction: str = "vertical"
    type = "group"

    def __post_init__(self) -> None:
        if self.direction not in ("horizontal", "vertical"):
            raise WidgetError(f"Group.direction must be 'horizontal' or 'vertical', got {self.direction!r}")
        for i, child in enumerate(self.children):
            if not isinstance(child, Widget):
                raise WidgetError(f"Group.children[{i}] is not a widget: {child!r}")

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "direction": self.direction,
                "children": [child.to_json() for child in self.children]}


WIDGETS: tuple[type[Widget], ...] = (Text, Number, Bar, Line, Table, Map, Timeline, Users, Cohort,
                                     Funnel, Group)


def widget_schema() -> dict[str, Any]:
    """The JSON Schema of a serialised widget (any type)."""
    num = {"type": "number"}
    pairs = {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "string"}, num],
                                        "minItems": 2, "maxItems": 2}}
    shapes: dict[str, dict[str, Any]] = {
        "text": {"text": {"type": "string"}},
        "number": {"value": num, "label": {"type": "string"}, "delta": {"type": ["number", "null"]},
                   "unit": {"type": "string"}},
        "bar": {"label": {"type": "string"}, "data": pairs},
        "line": {"label": {"type": "string"}, "series": {"type": "object", "additionalProperties": pairs}},
        "table": {"columns": {"type": "array", "items": {"type": "string"}},
                  "rows": {"type": "array", "items": {"type": "array"}}},
        "map": {"label": {"type": "string"},
                "values": {"type": "object", "propertyNames": {"pattern": "^[A-Z]{2}$"},
                           "additionalProperties": num}},
        "timeline": {"events": {"type": "array"}},
        "users": {"users": {"type": "array", "items": {"type": "object", "required": ["uid"]}}},
        "cohort": {"period": {"type": "string"}, "rows": {"type": "array", "items": {
            "type": "object", "required": ["label", "size", "cells"],
            "properties": {"cells": {"type": "array", "items": {"type": ["number", "null"]}},
                           "counts": {"type": "array", "items": {"type": ["integer", "null"]}}}}}},
        "funnel": {"steps": pairs},
        "group": {"direction": {"enum": ["horizontal", "vertical"]},
                  "children": {"type": "array", "items": {"$ref": "#"}}},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "oneOf": [{"type": "object", "required": ["type", *props],
                   "properties": {"type": {"const": name}, **props}}
                  for name, props in shapes.items()],
    }
