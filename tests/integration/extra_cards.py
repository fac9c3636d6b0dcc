"""Cards the card tests load beside the built-in ones."""

from __future__ import annotations

import time
from typing import Any

from cardflow.builtin_cards import Retention
from cardflow.cards import Card
from cardflow.widgets import Number, Widget


class WeeklyBuyers(Retention):
    """bitmapist's form: every user who did page_view in week p, coming back to buy in p+k."""

    id = "weekly-buyers"
    params = {**Retention.params, "cohort_event": "page_view", "return_event": "purchase",
              "period": "weeks", "form": "every", "periods": 8, "after": 4}


class MonthlyFirstViews(Retention):
    id = "monthly-first-views"
    params = {**Retention.params, "cohort_event": "page_view", "period": "months", "periods": 3, "after": 2}


class Broken(Card):
    debounce = 0.5

    def map(self, profiles: Any) -> int:
        raise ZeroDivisionError("this card always fails")

    def render(self, total: Any) -> list[Widget]:
        return [Number(total)]


class Forever(Card):
    budget = 2.0

    def map(self, profiles: Any) -> int:
        while True:
            time.sleep(0.01)

    def render(self, total: Any) -> list[Widget]:
        return [Number(total)]


class Quitter(Card):
    def map(self, profiles: Any) -> int:
        raise SystemExit(3)  # not an Exception: ends the map process

    def render(self, total: Any) -> list[Widget]:
        return [Number(total)]
