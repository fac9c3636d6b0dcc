"""Every error cardflow raises on purpose, under one base.

A ``CardflowError``'s message says what was wrong and what to do; the CLI
prints it as one line (``Error: …``) with a non-zero exit code, never as a
traceback (cardflow/cli.py catches the base, once). Anything else that
escapes is a bug and keeps its traceback.

The specific errors also derive from the built-in they refine (a bad setting
is a ``ValueError``, a module that cannot be loaded an ``ImportError``), so
callers that caught those keep working.
"""

from __future__ import annotations

from typing import Any

from cardflow.reasons import Reason


class CardflowError(Exception):
    """Base of cardflow's errors: a user mistake or an unavailable dependency, explained."""

    exit_code = 1


class ConfigError(CardflowError, ValueError):
    """A setting is missing or invalid; the message names the key, the expected form and the value."""


class CardError(CardflowError, ValueError):
    """A card cannot be loaded or is invalid (CARDFLOW_CARDS, a card's attributes or params)."""


class WidgetError(CardflowError, ValueError):
    """A card's render returned something that is not a valid widget."""


class ProfileScriptError(CardflowError, ImportError):
    """A profile script module cannot be loaded or holds no scripts (CARDFLOW_PROFILE_SCRIPTS)."""


class Rejected(CardflowError, ValueError):
    """An event cannot be used. ``reason`` is a :class:`Reason`; the message says what to fix."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class AvroError(CardflowError, ValueError):
    """Bytes that are not a record of one of cardflow's Avro schemas."""


class BrokerUnreachable(CardflowError, ConnectionError):
    """The Kafka cluster cannot be reached (CARDFLOW_BROKER, credentials, network)."""


class BrokerError(CardflowError, RuntimeError):
    """The local development broker cannot be fetched, started or stopped."""


class TopicError(CardflowError, RuntimeError):
    """A topic exists with a layout cardflow cannot use, or cannot be created."""


class DeliveryError(CardflowError, RuntimeError):
    """Records were not stored by the broker. ``failed`` holds what is known of each failed record
    (the SDK: ``(event, KafkaError)`` pairs)."""

    def __init__(self, message: str, failed: list[Any] | None = None) -> None:
        super().__init__(message)
        self.failed = failed or []


class BrokerUnavailable(DeliveryError):
    """The broker did not acknowledge in time; the records are not known to be stored."""


class Backpressure(DeliveryError):
    """The local producer queue is full: retry later."""


class WorkerUnavailable(CardflowError, RuntimeError):
    """No worker answered for a profile (starting, rebalancing or down): retry later."""


class LakeError(CardflowError):
    """The data lake cannot be used as configured (bucket, credentials, URL, a key)."""


class LakeUnavailable(LakeError):
    """The lake's storage did not answer or failed for now (network, 5xx, disk): retry later."""


class CorruptObject(LakeError):
    """An object in the lake cannot be read as an archive object (truncated, not ours, damaged)."""


class WarehouseError(CardflowError):
    """The warehouse cannot be opened, migrated or queried (the message is ClickHouse's)."""


class WarehouseUnavailable(WarehouseError):
    """The ClickHouse server cannot be reached (retried by the loaders, 503 from the API)."""


class QueryError(CardflowError, ValueError):
    """An insights query or a SQL statement is refused: ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
