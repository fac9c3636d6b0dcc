"""One typed settings object for every cardflow process.

Values come, highest priority first, from keyword arguments, ``CARDFLOW_*``
environment variables, and an optional YAML file (``CARDFLOW_CONFIG`` or
``--config``). Every key is validated at start; a bad value raises
:class:`ConfigError` naming the key, the expected form and what was given.

    >>> settings = load_settings(env={"CARDFLOW_PARTITIONS": "4"})
    >>> settings.partitions
    4
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cardflow.errors import ConfigError
from cardflow.events import (
    DEFAULT_MAPPING,
    DEFAULT_MAX_NAME_BYTES,
    DEFAULT_MAX_UID_BYTES,
    Decoder,
    FieldMapping,
)
from cardflow.limits import DEFAULT_MAX_DEPTH

ENV_PREFIX = "CARDFLOW_"
CONFIG_ENV = "CARDFLOW_CONFIG"
KAFKA_VERSION = "4.4.0"


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class Scope(StrEnum):
    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cardflow"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cardflow"


def parse_tokens(raw: str) -> dict[str, frozenset[Scope]]:
    """Parse ``"tokA:ingest,read;tokB:read"`` into ``{token: scopes}``."""
    tokens: dict[str, frozenset[Scope]] = {}
    for entry in filter(None, (part.strip() for part in raw.split(";"))):
        token, sep, scopes = entry.partition(":")
        if not sep or not token.strip() or not scopes.strip():
            raise ValueError(f"entry {entry[:6]}… must look like TOKEN:scope[,scope]")
        try:
            tokens[token.strip()] = frozenset(Scope(s.strip()) for s in scopes.split(","))
        except ValueError as exc:
            allowed = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope in entry {entry[:6]}…; allowed: {allowed}") from exc
    return tokens


class Settings(BaseSettings):
    """Every cardflow setting. Environment names are ``CARDFLOW_`` + the upper-cased field."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True
    )

    # Kafka
    broker: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,…]")
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    partitions: int = Field(8, ge=1, le=10_000, description="partitions of every cardflow topic")
    replication_factor: int = Field(1, ge=1, le=16)
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]*$")

    # Local (development) broker managed by `cardflow kafka`
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_version: str = KAFKA_VERSION
    kafka_heap: str = Field("512m", pattern=r"^\d+[kmgKMG]$")

    # Storage
    data_dir: Path = Field(default_factory=_default_data_dir)
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    lake_url: str = Field("", description="s3://bucket/prefix or file:///dir; default under data_dir")
    warehouse_url: str = Field("", description="chdb:///path or http(s)://clickhouse:8123/db")
    lake_endpoint_url: str = Field("", description="S3 endpoint (MinIO, Ceph, moto); empty: AWS")
    lake_region: str = Field("", description="S3 region; empty: the AWS chain's default")
    lake_multipart_bytes: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024 ** 3,
                                      description="S3 objects above this size are uploaded in parts")
    archive_format: str = Field("avro", pattern=r"^(avro|jsonl)$",
                                description="avro (object container files) or jsonl (gzip'd JSON lines)")
    archive_codec: str = Field("deflate", pattern=r"^(deflate|null)$", description="Avro block codec")
    archive_batch_events: int = Field(50_000, ge=1, le=10_000_000, description=(
        "records per archive batch across the worker's partitions (each batch writes one object per "
        "partition it holds records of)"))
    archive_batch_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=5 * 1024 ** 3,
                                     description="an object is split past this many bytes of values")
    archive_batch_seconds: float = Field(60.0, gt=0, le=3600, description=(
        "longest wait to fill an archive batch (a backlog fills batches to their size)"))
    rocksdb_block_cache_mb: int = Field(16, ge=1, le=65536)
    rocksdb_write_buffer_mb: int = Field(8, ge=1, le=4096, description=(
        "RocksDB memtable per table partition (two at most); the card map process's followers "
        "replay what is not flushed yet, so this bounds their memory too"))

    # Warehouse
    warehouse_database: str = Field("cardflow", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    warehouse_user: str = Field("default", description="ClickHouse server user")
    warehouse_password: str = Field("", description="ClickHouse server password (from a Secret)")
    warehouse_verify_tls: bool = Field(True, description="check the ClickHouse server's certificate")
    warehouse_worker_url: str = Field("", description=(
        "the warehouse worker's web server, which answers the API's insights and SQL "
        "(http://127.0.0.1:6068); empty: the API has no warehouse"))
    query_max_body_bytes: int = Field(1_000_000, ge=1024, le=1_000_000, description=(
        "largest body of POST /v1/query and /v1/sql (the worker's web server takes up to 1 MiB)"))
    warehouse_bitmaps: bool = Field(True, description=(
        "keep bitmapist's bitmaps from every loaded event (~3-9 % of the warehouse's load); "
        "false drops their views at the warehouse worker's start and /v1/bitmaps answers 503; "
        "true again backfills them from the events"))
    bitmaps_max_queries: int = Field(20_000, ge=1, le=1_000_000, description=(
        "expressions in one POST /v1/bitmaps/ops (a 90-day cohort table is ~8 300)"))
    bitmaps_max_nodes: int = Field(200_000, ge=1, le=10_000_000, description=(
        "operations and bitmaps over all expressions of one POST /v1/bitmaps/ops"))
    bitmaps_max_depth: int = Field(64, ge=1, le=250, description=(
        "nesting of one bitmap expression (and/or/xor chains of one operation count once)"))
    bitmaps_max_leaves: int = Field(5_000, ge=1, le=1_000_000, description=(
        "distinct stored bitmaps one POST /v1/bitmaps/ops reads"))
    bitmaps_max_members: int = Field(100_000, ge=1, le=10_000_000, description=(
        "ids in the pages of members of one request (all its queries), and ids asked about "
        "(contains) in one expression"))
    bitmaps_cache_mb: int = Field(64, ge=0, le=65536, description=(
        "stored bitmaps the warehouse worker keeps between requests while their month's data is "
        "unchanged (0: none)"))
    query_max_filters: int = Field(20, ge=0, le=1000)
    query_max_in_values: int = Field(1000, ge=1, le=100_000)
    query_max_string_chars: int = Field(1024, ge=1, le=1_000_000, description=(
        "longest event name, property name or filter value in an insights query"))
    query_max_points: int = Field(10_000, ge=1, le=1_000_000, description=(
        "most time buckets of a trend, or cells of a retention table"))
    query_max_breakdown: int = Field(100, ge=1, le=10_000, description="most series of a breakdown")
    query_cache_entries: int = Field(256, ge=0, le=100_000, description=(
        "answers kept until the warehouse changes (0: no cache)"))
    sql_max_chars: int = Field(100_000, ge=1, le=10_000_000)
    sql_max_seconds: int = Field(30, ge=1, le=3600)
    sql_max_memory_bytes: int = Field(2 * 2**30, ge=2**20)
    sql_max_rows: int = Field(100_000, ge=1, le=10_000_000)

    # Workers and API
    worker_web_port: int = Field(6066, ge=1, le=65535)
    worker_web_host: str = Field("127.0.0.1", description=(
        "the address other workers and the API use for this worker's web server (a pod's IP)"))
    worker_web_bind: str = Field("", description="the address the web server binds; empty: worker_web_host")
    worker_health_port: int = Field(0, ge=0, le=65535, description=(
        "the health server (/healthz, /readyz) in a thread of its own; 0: off"))
    liveness_loop_blocked_s: float = Field(10.0, gt=0, le=3600, description=(
        "/healthz fails once the event loop has not run for this long"))
    liveness_stall_s: float = Field(300.0, gt=0, le=86400, description=(
        "/healthz fails once a partition with lag made no progress for this long"))
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)
    api_tokens: dict[str, frozenset[Scope]] = Field(
        default_factory=dict,
        description="TOKEN:scope[,scope];… with scopes ingest, read, admin; empty = no auth",
    )
    api_max_line_bytes: int = Field(8190, ge=1024, le=1_048_576, description=(
        "longest HTTP request line the API reads (aiohttp's default); longer: a JSON 400"))
    api_max_header_bytes: int = Field(8190, ge=1024, le=1_048_576, description=(
        "longest HTTP header the API reads (aiohttp's default); longer: a JSON 400"))
    # Ingest
    max_event_bytes: int = Field(64 * 1024, ge=256, le=1_000_000, description="largest accepted event")
    max_json_depth: int = Field(DEFAULT_MAX_DEPTH, ge=2, le=200, description=(
        "deepest nesting of an event's JSON (orjson writes ~250 levels; profiles nest a few more)"))
    max_uid_bytes: int = Field(DEFAULT_MAX_UID_BYTES, ge=8, le=2048, description="longest user id, UTF-8")
    max_event_name_bytes: int = Field(DEFAULT_MAX_NAME_BYTES, ge=8, le=4096,
                                      description="longest event name, UTF-8")
    max_record_bytes: int = Field(1_000_000, ge=65_536, le=100_000_000, description=(
        "largest record cardflow writes to Kafka (librdkafka's message.max.bytes; keep it at or "
        "below the broker's and topics' max.message.bytes)"))
    max_profile_bytes: int = Field(512 * 1024, ge=16_384, le=100_000_000, description=(
        "largest stored profile (with its bookkeeping); an event that would grow it past this "
        "is dead-lettered as profile_too_large"))
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="largest push-API body (decompressed)")
    max_batch_events: int = Field(1000, ge=1, le=100_000, description="events per push-API request")
    max_future_hours: float = Field(24.0, ge=0, description="how far ahead of now an event time may be")
    ingest_timeout_ms: int = Field(10_000, ge=100, description="push API waits this long for broker acks")
    ingest_queue_max: int = Field(100_000, ge=1, description="push-API producer queue; full means 429")
    sources: tuple[FieldMapping, ...] = Field(
        default=(), description="field mappings of self-describing sources (YAML list or JSON)"
    )

    # People topology
    profile_scripts: tuple[str, ...] = Field(
        ("cardflow.standard",), description="modules (or module:attr) holding profile scripts"
    )
    profile_script_timeout_ms: int = Field(100, ge=0, le=600_000, description=(
        "time budget of one profile script on one event; past it the event is dead-lettered as "
        "profile_script_timeout (0: no budget)"))
    profile_script_max_failures: int = Field(20, ge=0, le=1_000_000, description=(
        "a profile script failing on this many events in a row is disabled until the worker "
        "restarts; the other scripts keep folding (0: never disable)"))
    max_derived_depth: int = Field(3, ge=0, le=100, description=(
        "longest chain of derived events (emit); the event past it is dead-lettered as "
        "derived_too_deep (0: scripts cannot emit)"))
    dedup_horizon_days: float = Field(7.0, gt=0, le=3650, description="event-time horizon of id dedup")
    batch_size: int = Field(100_000, ge=1, le=1_000_000, description="records per profiles batch")
    profile_cache_size: int = Field(100_000, ge=0, le=10_000_000,
                                    description="decoded profiles a worker keeps between batches (0: none)")
    batch_within_ms: int = Field(100, ge=1, le=60_000, description="longest wait to fill a batch")
    standby_replicas: int = Field(1, ge=0, le=10, description=(
        "copies of each profiles partition other workers keep up to date (fast failover; each "
        "copy replays the changelog)"))
    worker_name: str = Field("", pattern=r"^[A-Za-z0-9._-]{0,200}$", description=(
        "a stable name for this worker (e.g. the pod name): static group membership, so a "
        "restart within session_timeout_ms takes its partitions back without a rebalance; "
        "unique per worker; empty: dynamic membership"))
    session_timeout_ms: int = Field(10_000, ge=1_000, le=1_800_000, description=(
        "a worker that sends no heartbeat this long is out of the group and its partitions "
        "move (Faust's default is 60 s)"))
    heartbeat_interval_ms: int = Field(2_000, ge=100, le=600_000,
                                       description="heartbeats to the group coordinator")
    rebalance_timeout_ms: int = Field(30_000, ge=1_000, le=1_800_000, description=(
        "how long the group waits for members to rejoin in a rebalance"))
    kafka_admin_timeout_ms: int = Field(30_000, ge=100, le=600_000, description=(
        "how long operator commands (topics, dlq) and a worker's start checks wait for the "
        "cluster before saying it cannot be reached"))
    worker_urls: tuple[str, ...] = Field(
        ("http://127.0.0.1:6066",), description="people workers' web servers, for profile lookups"
    )
    cards: tuple[str, ...] = Field(
        ("cardflow.builtin_cards",), description="modules (or module:Class) holding the cards to run"
    )
    views: tuple[str, ...] = Field(
        ("cardflow.builtin_views",), description="modules (or module:attr, or files) holding per-user views"
    )
    card_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='per-card parameters (JSON): {"retention": {"period": "weeks"}}'
    )
    card_tick_ms: int = Field(100, ge=10, le=60_000, description="card scheduler's tick")
    cards_incremental: bool = Field(True, description=(
        "false: every card is computed by map over its whole partition each round, the incremental "
        "cards too (slower; a fallback and the benchmark's baseline)"))
    card_behind_factor: float = Field(5.0, gt=1, description=(
        "a card whose oldest change waited longer than this many debounces for its partial is "
        "reported as behind (/metrics, health)"))
    wait_timeout_ms: int = Field(10_000, ge=100, description="POST /v1/events?wait=true gives up (504)")

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        return parse_tokens(value) if isinstance(value, str) else value

    @field_validator("card_params", mode="before")
    @classmethod
    def _card_params(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ValueError('must map card ids to parameter objects: {"retention": {"period": "weeks"}}')
        return value

    @field_validator("profile_scripts", "worker_urls", "cards", "views", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else value

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else []
        if not isinstance(value, list | tuple):
            raise ValueError(
                "must be a list of mappings such as {name: twitter, when: tweet, uid: tweet.user.id}"
            )
        out = []
        for item in value:
            if isinstance(item, FieldMapping):
                out.append(item)
                continue
            if not isinstance(item, dict) or "name" not in item:
                raise ValueError(f"each source needs at least a name; got {item!r}")
            unknown = set(item) - set(FieldMapping.__dataclass_fields__)
            if unknown:
                raise ValueError(f"source {item['name']!r}: unknown field(s) {sorted(unknown)}")
            out.append(FieldMapping(**item))
        return tuple(out)

    @property
    def mappings(self) -> tuple[FieldMapping, ...]:
        """Source mappings first (each applies when its ``when`` path exists), then the default."""
        return (*self.sources, DEFAULT_MAPPING)

    def decoder(self) -> Decoder:
        return Decoder(self.mappings, self.max_event_bytes, int(self.max_future_hours * 3_600_000),
                       self.max_json_depth, self.max_uid_bytes, self.max_event_name_bytes)

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @field_validator("lake_url")
    @classmethod
    def _lake(cls, value: str) -> str:
        if value and not value.startswith(("s3://", "file://")):
            raise ValueError("must start with s3:// or file://")
        return value

    @field_validator("warehouse_url")
    @classmethod
    def _warehouse(cls, value: str) -> str:
        if value and not value.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return value

    @model_validator(mode="after")
    def _record_limits(self) -> Settings:
        # A dead letter holds the event and an envelope; a changelog record holds a profile.
        for name in ("max_event_bytes", "max_profile_bytes"):
            if getattr(self, name) > self.max_record_bytes - 16_384:
                raise ValueError(f"{name} ({getattr(self, name)}) must stay 16 KiB below "
                                 f"max_record_bytes ({self.max_record_bytes}), which bounds every record")
        return self

    @model_validator(mode="after")
    def _group_timeouts(self) -> Settings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be at most a "
                             f"third of session_timeout_ms ({self.session_timeout_ms})")
        return self

    @model_validator(mode="after")
    def _sasl(self) -> Settings:
        if self.security_protocol.value.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ValueError(
                    "security_protocol SASL_* needs sasl_mechanism, sasl_username "
                    "and sasl_password (CARDFLOW_SASL_MECHANISM, …)"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment and YAML are merged by load_settings, which owns the error messages.
        return (init_settings,)

    # Derived values: computed, never configured twice.
    @property
    def effective_lake_url(self) -> str:
        return self.lake_url or (self.data_dir / "lake").resolve().as_uri()

    def query_limits(self) -> Any:
        from cardflow.insights import Limits

        return Limits(self.query_max_filters, self.query_max_in_values, self.query_max_string_chars,
                      self.query_max_points, self.query_max_breakdown)

    def bitmap_limits(self) -> Any:
        from cardflow.bitmaps import Limits

        return Limits(self.bitmaps_max_queries, self.bitmaps_max_nodes, self.bitmaps_max_depth,
                      self.bitmaps_max_leaves, self.bitmaps_max_members, self.bitmaps_max_members)

    def sql_limits(self) -> Any:
        from cardflow.sql_policy import SqlLimits

        return SqlLimits(self.sql_max_chars, self.sql_max_seconds, self.sql_max_memory_bytes,
                         self.sql_max_rows)

    @property
    def effective_warehouse_url(self) -> str:
        return self.warehouse_url or f"chdb://{(self.data_dir / 'warehouse').resolve()}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` applied (``model_copy`` would skip validation)."""
        return Settings(**{**dict(self), **changes})

    def to_env(self) -> dict[str, str]:
        """``CARDFLOW_*`` variables that reproduce these settings in a child process."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if name == "api_tokens":
                value = ";".join(f"{t}:{','.join(sorted(s))}" for t, s in value.items())
            elif name in ("profile_scripts", "worker_urls", "cards", "views"):
                value = ",".join(value)
            elif name == "card_params":
                value = json.dumps(value)
            elif name == "sources":
                value = json.dumps([dataclasses.asdict(m) for m in getattr(self, name)])
            elif isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[ENV_PREFIX + name.upper()] = str(value)
        return env

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka client settings for this cluster (cardflow/kafka_clients.py builds them)."""
        from cardflow.kafka_clients import client_config

        return client_config(self)


SERVICE_LINK = re.compile(
    r"^\w+_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)$")


def _env_values(env: Mapping[str, str]) -> dict[str, str]:
    known = {name.upper(): name for name in Settings.model_fields}
    values: dict[str, str] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        name = key[len(ENV_PREFIX) :]
        if name not in known and SERVICE_LINK.match(name):
            continue  # Kubernetes' service-link variables of a Service named cardflow-…: not ours
        if name in known and value.startswith(("tcp://", "udp://")):
            raise ConfigError(f"{key}={value!r} looks like a Kubernetes service-link variable (a Service "
                              "whose name makes it); set enableServiceLinks: false on the pod, or rename "
                              "the Service")
        if name not in known:
            raise ConfigError(
                f"{key}: unknown setting. Known: "
                + ", ".join(ENV_PREFIX + k for k in sorted(known))
            )
        values[known[name]] = value
    return values


def _yaml_values(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist; fix {CONFIG_ENV} or --config") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of setting: value")
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(map(str, unknown))}. "
            f"Known: {', '.join(sorted(Settings.model_fields))}"
        )
    return data


def _describe(error: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    where = sources.get(field, field or "settings")
    given = error.get("input")
    shown = "(secret)" if "password" in field else repr(given)
    msg = str(error["msg"]).removeprefix("Value error, ")
    if not field:
        return f"{where}: {msg}"
    return f"{where}: {msg}; got {shown}"


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build :class:`Settings` from YAML, then environment, then ``overrides``."""
    env = os.environ if env is None else env
    config_file = config_file or env.get(CONFIG_ENV)
    sources: dict[str, str] = {}
    values: dict[str, Any] = {}
    if config_file:
        file_values = _yaml_values(Path(config_file))
        values.update(file_values)
        sources.update({k: f"{config_file}: {k}" for k in file_values})
    env_values = _env_values(env)
    values.update(env_values)
    sources.update({k: ENV_PREFIX + k.upper() for k in env_values})
    values.update(overrides)
    sources.update({k: k for k in overrides})
    try:
        return Settings(**values)
    except ValidationError as exc:
        lines = [_describe(err, sources) for err in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
