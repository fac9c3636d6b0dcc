"""Wiring: which agents, topics and tables form each deployable Faust app."""

from __future__ import annotations

from collections.abc import Callable

import faust

from cardflow.config import Settings

from .archive import build_archive
from .people import build_people
from .warehouse import build_warehouse

TOPOLOGIES: dict[str, Callable[[Settings], faust.App]] = {
    "people": build_people, "archive": build_archive, "warehouse": build_warehouse}

__all__ = ["TOPOLOGIES", "build_archive", "build_people", "build_warehouse"]
