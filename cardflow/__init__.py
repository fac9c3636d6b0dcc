"""cardflow: self-hosted, real-time people analytics in Python on Kafka.

What users write against — profile scripts, cards and their widgets, the
SDK client, the settings and the errors — is importable from here::

    from cardflow import Card, Number, profile_script
"""

from typing import TYPE_CHECKING, Any

from cardflow.cards import Card
from cardflow.errors import (
    CardError,
    CardflowError,
    ConfigError,
    DeliveryError,
    ProfileScriptError,
    Rejected,
    WidgetError,
)
from cardflow.events import Event
from cardflow.profiles import ProfileScript, profile_script
from cardflow.widgets import (
    Bar,
    Cohort,
    Funnel,
    Group,
    Line,
    Map,
    Number,
    Table,
    Text,
    Timeline,
    Users,
    Widget,
)

if TYPE_CHECKING:
    from cardflow.config import Settings, load_settings
    from cardflow.sdk import Client

# Imported when first used: they bring pydantic and librdkafka, which a card's map process
# (it imports cardflow for the card code) has no use for (~25 MiB).
_LAZY = {"Settings": "cardflow.config", "load_settings": "cardflow.config", "Client": "cardflow.sdk"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cardflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Bar",
    "Card",
    "CardError",
    "CardflowError",
    "Client",
    "Cohort",
    "ConfigError",
    "DeliveryError",
    "Event",
    "Funnel",
    "Group",
    "Line",
    "Map",
    "Number",
    "ProfileScript",
    "ProfileScriptError",
    "Rejected",
    "Settings",
    "Table",
    "Text",
    "Timeline",
    "Users",
    "Widget",
    "WidgetError",
    "load_settings",
    "profile_script",
]
