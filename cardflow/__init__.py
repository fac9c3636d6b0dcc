"""cardflow: self-hosted, real-time people analytics in Python on Kafka.

What users write against — profile scripts, cards and their widgets, the
SDK client, the settings and the errors — is importable from here::

    from cardflow import Card, Number, profile_script
"""

from cardflow.cards import Card
from cardflow.config import Settings, load_settings
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
from cardflow.sdk import Client
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
