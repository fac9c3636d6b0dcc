"""Per-user views: small functions drawing one user's widgets, served by the API.

    from cardflow.views import view
    from cardflow.widgets import Number

    @view("progress", title="Progress")
    def progress(profile, params):
        goal = int(params.get("goal", 10))
        return [Number(profile.get("events", {}).get("lesson_done", 0), label=f"lessons of {goal}")]

A view takes any of these parameters, injected by name: ``profile`` (the user's profile),
``uid``, ``params`` (the request's query parameters) and ``cards`` (every card's latest result
by id: title, summary, widgets). It returns widgets (or one). ``GET /v1/users/{uid}/views/{name}``
answers them; the dashboard's user page (``/users/{uid}``) draws every view.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cardflow.errors import CardError
from cardflow.plugins import load_named
from cardflow.widgets import Widget, WidgetError

INJECTED = ("profile", "uid", "params", "cards")


class ViewError(CardError):
    """A view that cannot be loaded (a bad name or parameter)."""


@dataclass(frozen=True)
class View:
    name: str
    fn: Callable[..., Any]
    title: str
    takes: tuple[str, ...]  # which of INJECTED it takes

    def widgets(self, profile: dict[str, Any], uid: str, params: Mapping[str, str],
                cards: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Call the view with what it takes; its widgets checked and serialised."""
        given = {"profile": profile, "uid": uid, "params": dict(params), "cards": cards}
        rendered = self.fn(**{name: given[name] for name in self.takes})
        if isinstance(rendered, Widget):
            rendered = [rendered]
        if not isinstance(rendered, list | tuple):
            raise WidgetError(f"view {self.name!r} returned {type(rendered).__name__}, not a list of widgets")
        out = []
        for i, widget in enumerate(rendered):
            if not isinstance(widget, Widget):
                raise WidgetError(f"view {self.name!r}: [{i}] is not a widget: {widget!r}")
            out.append(widget.to_json())
        return out


def view(name: str, title: str | None = None) -> Callable[[Callable[..., Any]], View]:
    """Decorator turning a function into a per-user :class:`View` named ``name``."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ViewError(f"a view's name must be a non-empty string without '/', got {name!r}")

    def wrap(fn: Callable[..., Any]) -> View:
        takes = []
        for parameter in inspect.signature(fn).parameters.values():
            if parameter.name not in INJECTED:
                raise ViewError(f"view {name!r}: parameter {parameter.name!r} is not one cardflow gives; "
                                f"a view takes any of {', '.join(INJECTED)}")
            takes.append(parameter.name)
        return View(name, fn, title or name.replace("-", " ").replace("_", " ").capitalize(), tuple(takes))

    return wrap


def load_views(paths: Iterable[str]) -> dict[str, View]:
    """Views from modules, ``module:attribute`` or files, by name (two with one name: an error)."""
    views: dict[str, View] = load_named(paths, View, "CARDFLOW_VIEWS", "view", ViewError, "use @view")
    return views
