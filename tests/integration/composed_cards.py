"""Cards built on cards, for the real-broker test: conversion = purchasers / visitors."""

from __future__ import annotations

from typing import Any

from cardflow.cards import Card
from cardflow.widgets import Number, Widget


class Visitors(Card):
    debounce = 0.2

    def contribute(self, profile: dict[str, Any]) -> int:
        return 1 if profile["events"].get("page_view") else 0

    def render(self, total: Any) -> list[Widget]:
        return [Number(total or 0)]


class Purchasers(Card):
    debounce = 0.2

    def contribute(self, profile: dict[str, Any]) -> int:
        return 1 if profile["events"].get("purchase") else 0

    def render(self, total: Any) -> list[Widget]:
        return [Number(total or 0)]


class Conversion(Card):
    uses = ("purchasers", "visitors")

    def render(self, total: Any, cards: dict[str, Any]) -> list[Widget]:
        visitors = cards["visitors"] or 0
        return [Number(round((cards["purchasers"] or 0) / visitors, 4) if visitors else 0)]

    def summary(self, total: Any, cards: dict[str, Any]) -> str:
        return f"{cards['purchasers'] or 0} of {cards['visitors'] or 0}"


class Tally(Card):
    """A batched card: runs every 4 s (aligned to the epoch), not on every change."""

    schedule = "4s"

    def contribute(self, profile: dict[str, Any]) -> int:
        return 1

    def render(self, total: Any) -> list[Widget]:
        return [Number(total or 0)]
