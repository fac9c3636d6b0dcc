"""The one place Kafka client configurations are built from Settings.

Every client cardflow makes — librdkafka producers and consumers (SDK, push
API, the worker's batch sink, operator commands, the admin helpers), aiokafka
(the API's results reader) and Faust (the workers) — takes its cluster
address, security and tuning from here, so a SASL or TLS cluster works the
same on every path.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from cardflow.config import SecurityProtocol, Settings

Config = dict[str, Any]


QUIET = {"log_level": 0}  # librdkafka logs nothing: its caller reports every failure itself


def client_config(settings: Settings, *, quiet: bool = False) -> Config:
    """librdkafka (confluent-kafka) settings for the cluster: address and security. ``quiet``
    for clients whose every failure surfaces as an exception (admin, operator commands), where
    librdkafka's own log lines (a "Connection refused" every 50 ms) would only bury it."""
    conf: Config = {**(QUIET if quiet else {}),
        "bootstrap.servers": settings.broker,
        "security.protocol": settings.security_protocol.value,
    }
    if settings.sasl_mechanism:
        conf["sasl.mechanism"] = settings.sasl_mechanism.value
        conf["sasl.username"] = settings.sasl_username or ""
        conf["sasl.password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    for key, path in (
        ("ssl.ca.location", settings.ssl_cafile),
        ("ssl.certificate.location", settings.ssl_certfile),
        ("ssl.key.location", settings.ssl_keyfile),
    ):
        if path:
            conf[key] = str(path)
    return conf


def producer_config(settings: Settings, **extra: Any) -> Config:
    """A durable, idempotent producer whose keys land where the Java client, aiokafka and Faust
    put them (librdkafka's ``murmur2_random``), within ``max_record_bytes``."""
    return {
        **client_config(settings),
        "acks": "all",
        "enable.idempotence": True,
        "partitioner": "murmur2_random",
        "compression.type": "lz4",
        "linger.ms": 5,
        "message.max.bytes": settings.max_record_bytes,
        **extra,
    }


def sink_config(settings: Settings) -> Config:
    """The worker's batch sink: a batch's writes are flushed when it ends, and a flush sends at
    once, so the linger only groups them into fewer, larger requests (2 ms → 200 ms: the
    broker's CPU for a million events' writes fell from 20 s to 6 s; docs/benchmarks.md)."""
    return producer_config(settings, **{"linger.ms": 200, "queue.buffering.max.messages": 500_000})


def consumer_config(settings: Settings, group: str, **extra: Any) -> Config:
    """A consumer that commits only when told to and starts at the earliest offset (for operator
    commands and one-off reads, whose failures are raised: quiet)."""
    return {**client_config(settings, quiet=True), "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", **extra}


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL clusters (aiokafka, Faust); None otherwise."""
    if settings.security_protocol not in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        return None
    context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    if settings.ssl_certfile:
        context.load_cert_chain(str(settings.ssl_certfile),
                                str(settings.ssl_keyfile) if settings.ssl_keyfile else None)
    return context


def aiokafka_options(settings: Settings) -> Config:
    """Connection options for a plain aiokafka client (the API's results reader)."""
    options: Config = {"bootstrap_servers": settings.broker.split(","),
                       "security_protocol": settings.security_protocol.value,
                       "ssl_context": ssl_context(settings)}
    if settings.sasl_mechanism:
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        options.update(sasl_mechanism=settings.sasl_mechanism.value,
                       sasl_plain_username=settings.sasl_username, sasl_plain_password=password)
    return options


def faust_broker(settings: Settings) -> dict[str, Any]:
    """Faust's ``broker`` and ``broker_credentials`` for the cluster."""
    context = ssl_context(settings)
    credentials: faust.types.auth.CredentialsT | None = None
    if settings.security_protocol.value.startswith("SASL"):
        credentials = faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism.value if settings.sasl_mechanism else None,
            ssl_context=context,
        )
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    return {"broker": ";".join(f"kafka://{s.strip()}" for s in settings.broker.split(",")),
            "broker_credentials": credentials}
