"""``import cardflow`` offers what users write against, and only that."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cardflow

pytestmark = pytest.mark.unit

SURFACE = {
    # profile scripts and cards
    "profile_script", "ProfileScript", "Event", "Card",
    # widgets a card's render returns
    "Widget", "Bar", "Cohort", "Funnel", "Group", "Line", "Map", "Number", "Table", "Text", "Timeline",
    "Users",
    # sending events, settings
    "Client", "Settings", "load_settings",
    # errors users catch
    "CardflowError", "CardError", "ConfigError", "DeliveryError", "ProfileScriptError", "Rejected",
    "WidgetError",
}


def test_all_is_sorted_and_is_the_surface() -> None:
    assert cardflow.__all__ == sorted(cardflow.__all__)
    assert set(cardflow.__all__) == SURFACE


def test_every_exported_name_is_public_and_importable() -> None:
    for name in cardflow.__all__:
        obj = getattr(cardflow, name)
        module = obj.__module__
        assert module.startswith("cardflow.") and not any(p.startswith("_") for p in module.split("."))


def test_the_errors_users_catch_share_one_base() -> None:
    errors = [getattr(cardflow, n) for n in cardflow.__all__ if n.endswith("Error") or n == "Rejected"]
    assert all(issubclass(e, cardflow.CardflowError) for e in errors)


def test_a_card_and_a_script_need_only_the_package() -> None:
    code = """
from cardflow import Card, Number, profile_script

@profile_script("visits", version="1")
def visits(profile, event):
    profile["visits"] = profile.get("visits", 0) + 1

class Visits(Card):
    id = "visits"
    title = "Visits"
    requires = ("visits",)
    def map(self, profiles):
        return sum(p.get("visits", 0) for p in profiles)
    def render(self, total):
        return Number(total, label="visits")

card = Visits()
print(card.widgets(card.total([card.map([{"visits": 2}]), card.map([{"visits": 3}])]))[0]["value"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "5"
