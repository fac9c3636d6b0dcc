"""Create and check cardflow's topics on any Kafka cluster.

Partition counts of ``events``, the profiles changelog and ``profile-changes``
must match and never change after creation (co-partitioning), so a mismatch
is refused rather than repaired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from cardflow.config import Settings
from cardflow.errors import BrokerUnreachable, TopicError
from cardflow.kafka_clients import client_config


@dataclass(frozen=True)
class TopicSpec:
    name: str
    config: dict[str, str] = field(default_factory=dict)


# Names without the configured prefix.
EVENTS = "events"
EVENTS_DLQ = "events-dlq"
PROFILE_CHANGES = "profile-changes"
CARD_PARTIALS = "card-partials"
RESULTS = "results"
DERIVED_MARKS = "derived-marks"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(EVENTS),
    TopicSpec(EVENTS_DLQ, {"retention.ms": str(30 * 86_400_000)}),
    TopicSpec(PROFILE_CHANGES),
    TopicSpec(CARD_PARTIALS, {"cleanup.policy": "compact"}),
    TopicSpec(RESULTS, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}),
    TopicSpec(DERIVED_MARKS, {"cleanup.policy": "compact"}),  # agents/derived.py
)


def max_message_bytes(settings: Settings) -> str:
    """Topic-level ``max.message.bytes`` for what cardflow writes: at least the broker's default,
    and room for a record batch around one record of ``max_record_bytes``."""
    return str(max(1_048_588, settings.max_record_bytes + 65_536))


RECORD_SLACK = 1024  # a record batch's framing around one record


def check_record_limits(settings: Settings, timeout: float | None = None) -> None:
    """Raise TopicError when a topic cardflow writes takes smaller records than
    ``max_record_bytes``: the broker would refuse a legitimate changelog record or dead letter,
    and the worker would stop on it at every restart. Topics not created yet are skipped."""
    timeout = settings.kafka_admin_timeout_ms / 1000 if timeout is None else timeout
    admin = admin_client(settings)
    existing = list_topics(admin, settings, timeout)
    written = [settings.topic(name) for name in (EVENTS, EVENTS_DLQ, PROFILE_CHANGES)]
    written.append(settings.topic("people-profiles-changelog"))
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in written if t in existing]
    small = []
    for resource, future in (admin.describe_configs(resources, request_timeout=timeout).items()
                             if resources else []):
        limit = int(future.result(timeout)["max.message.bytes"].value)
        if limit < settings.max_record_bytes + RECORD_SLACK:
            small.append(f"{resource.name} takes records up to {limit} bytes")
    if small:
        raise TopicError(
            f"{'; '.join(small)}, below max_record_bytes ({settings.max_record_bytes}) + "
            f"{RECORD_SLACK}: raise the topics' max.message.bytes (kafka-configs.sh --alter "
            f"--add-config max.message.bytes={max_message_bytes(settings)}) or lower "
            "CARDFLOW_MAX_RECORD_BYTES (and max_event_bytes, max_profile_bytes with it)")


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings, quiet=True))


def list_topics(client: Any, settings: Settings, timeout: float, topic: str | None = None) -> dict[str, Any]:
    """The cluster's topics (or ``topic``'s), as an AdminClient or Consumer sees them;
    BrokerUnreachable when the cluster does not answer within ``timeout``."""
    try:
        topics: dict[str, Any] = client.list_topics(topic, timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerUnreachable(
            f"cannot reach Kafka at {settings.broker} within {timeout:g}s ({exc.args[0].str()}): check "
            "CARDFLOW_BROKER and the credentials, or start a local broker with `cardflow kafka start`"
        ) from exc
    return topics


def ensure_topics(settings: Settings, timeout: float | None = None) -> dict[str, str]:
    """Create missing topics; return ``{topic: "created" | "exists"}``.

    Raises TopicError when an existing topic's partition count differs from
    ``settings.partitions`` (changing it would move users between partitions),
    or when one takes smaller records than ``max_record_bytes``.
    """
    timeout = settings.kafka_admin_timeout_ms / 1000 if timeout is None else timeout
    outcome = _create_topics(settings, timeout)
    check_record_limits(settings, timeout)
    return outcome


def _create_topics(settings: Settings, timeout: float) -> dict[str, str]:
    admin = admin_client(settings)
    existing = list_topics(admin, settings, timeout)
    wanted = {settings.topic(spec.name): spec for spec in TOPICS}
    outcome: dict[str, str] = {}
    mismatched = []
    for name in wanted:
        if name in existing:
            have = len(existing[name].partitions)
            if have != settings.partitions:
                mismatched.append(f"{name} has {have} partitions")
            outcome[name] = "exists"
    if mismatched:
        raise TopicError(
            "topic partition count differs from the configured "
            f"{settings.partitions} (CARDFLOW_PARTITIONS): {'; '.join(mismatched)}. "
            "Partition counts must never change after creation; set CARDFLOW_PARTITIONS "
            "to the existing count, or use a new CARDFLOW_TOPIC_PREFIX."
        )
    new = [
        NewTopic(name, settings.partitions, settings.replication_factor,
                 config={"max.message.bytes": max_message_bytes(settings), **spec.config})
        for name, spec in wanted.items()
        if name not in existing
    ]
    if new:
        for name, future in admin.create_topics(new, request_timeout=timeout).items():
            try:
                future.result()
                outcome[name] = "created"
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise TopicError(f"cannot create topic {name}: {exc.args[0].str()}") from exc
                outcome[name] = "exists"
        # A concurrent creator may have won with another count: check again.
        return _create_topics(settings, timeout) if any(
            v == "exists" for k, v in outcome.items() if k in {t.topic for t in new}
        ) else outcome
    return outcome
