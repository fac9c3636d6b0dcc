"""Two cards that use each other: refused at load."""

from __future__ import annotations

from typing import Any

from cardflow.cards import Card


class Chicken(Card):
    uses = ("egg",)

    def render(self, total: Any, cards: Any) -> list[Any]:
        return []


class Egg(Card):
    uses = ("chicken",)

    def render(self, total: Any, cards: Any) -> list[Any]:
        return []
