from __future__ import annotations

from pathlib import Path

import pytest

from cardflow.config import ConfigError, Scope, load_settings, parse_tokens


def test_defaults_and_env_override() -> None:
    settings = load_settings(env={"CARDFLOW_PARTITIONS": "12", "CARDFLOW_BROKER": "k1:9092,k2:9092"})
    assert settings.partitions == 12
    assert settings.broker == "k1:9092,k2:9092"
    assert settings.replication_factor == 1
    assert settings.effective_lake_url.startswith("file:///")
    assert settings.effective_warehouse_url.startswith("chdb:///")


def test_yaml_file_then_env_wins(tmp_path: Path) -> None:
    config = tmp_path / "cardflow.yaml"
    config.write_text("partitions: 6\napi_port: 9000\nlake_url: s3://bucket/lake\n")
    settings = load_settings(config, env={"CARDFLOW_API_PORT": "9100"})
    assert (settings.partitions, settings.api_port, settings.lake_url) == (6, 9100, "s3://bucket/lake")


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("partitions: 3\n")
    assert load_settings(env={"CARDFLOW_CONFIG": str(config)}).partitions == 3


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CARDFLOW_PARTITIONS": "many"}, "CARDFLOW_PARTITIONS: Input should be a valid integer"),
        ({"CARDFLOW_PARTITIONS": "0"}, "CARDFLOW_PARTITIONS: Input should be greater than or equal"),
        ({"CARDFLOW_BROKER": "localhost"}, "CARDFLOW_BROKER: 'localhost' is not host:port"),
        ({"CARDFLOW_LAKE_URL": "ftp://x"}, "CARDFLOW_LAKE_URL: must start with s3:// or file://"),
        ({"CARDFLOW_WAREHOUSE_URL": "mysql://x"}, "CARDFLOW_WAREHOUSE_URL: must start with chdb://"),
        ({"CARDFLOW_SECURITY_PROTOCOL": "TLS"}, "CARDFLOW_SECURITY_PROTOCOL: Input should be"),
        ({"CARDFLOW_API_TOKENS": "abc"}, "CARDFLOW_API_TOKENS: entry abc… must look like TOKEN:scope"),
        ({"CARDFLOW_API_TOKENS": "abc:write"}, "unknown scope in entry abc:wr…; allowed: ingest"),
        ({"CARDFLOW_LOG_LEVEL": "loud"}, "CARDFLOW_LOG_LEVEL: Input should be 'debug'"),
        ({"CARDFLOW_PARTITON": "3"}, "CARDFLOW_PARTITON: unknown setting. Known: CARDFLOW_API_HOST"),
    ],
)
def test_bad_environment_names_key_and_form(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert expected in str(info.value)


def test_bad_yaml_names_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("replication_factor: zero\n")
    with pytest.raises(ConfigError, match=r"c.yaml: replication_factor: Input should be a valid"):
        load_settings(config, env={})
    config.write_text("partitons: 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) partitons"):
        load_settings(config, env={})
    config.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(config, env={})
    config.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml", env={})


def test_sasl_needs_credentials_and_never_echoes_the_password() -> None:
    with pytest.raises(ConfigError, match="SASL_\\* needs sasl_mechanism"):
        load_settings(env={"CARDFLOW_SECURITY_PROTOCOL": "SASL_SSL"})
    settings = load_settings(env={
        "CARDFLOW_SECURITY_PROTOCOL": "SASL_SSL", "CARDFLOW_SASL_MECHANISM": "SCRAM-SHA-512",
        "CARDFLOW_SASL_USERNAME": "svc", "CARDFLOW_SASL_PASSWORD": "hunter2",
    })
    conf = settings.kafka_client_config()
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512" and conf["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(settings)


def test_tokens_parse_into_scopes() -> None:
    tokens = parse_tokens("tokA:ingest,read; tokB:read")
    assert tokens == {"tokA": frozenset({Scope.INGEST, Scope.READ}), "tokB": frozenset({Scope.READ})}


def test_to_env_round_trips() -> None:
    settings = load_settings(env={"CARDFLOW_API_TOKENS": "t:read", "CARDFLOW_PARTITIONS": "5"})
    assert load_settings(env=settings.to_env()) == settings


def test_standby_replicas_reach_the_people_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cardflow.topologies import people

    monkeypatch.setattr(people, "BatchSink", lambda config: None)  # the app is only built, not run
    settings = load_settings(env={"CARDFLOW_STANDBY_REPLICAS": "0"}, data_dir=tmp_path, cards=())
    assert people.build_people(settings).conf.table_standby_replicas == 0
    assert people.build_people(settings.replace(standby_replicas=2)).conf.table_standby_replicas == 2
    assert load_settings(env={}).standby_replicas == 1  # Faust's default, kept


def test_kubernetes_service_links_are_not_settings() -> None:
    from cardflow.config import load_settings
    from cardflow.errors import ConfigError

    links = {"CARDFLOW_HTTP_SERVICE_HOST": "10.0.0.9", "CARDFLOW_HTTP_SERVICE_PORT": "80",
             "CARDFLOW_HTTP_PORT": "tcp://10.0.0.9:80", "CARDFLOW_HTTP_PORT_80_TCP_ADDR": "10.0.0.9"}
    assert load_settings(env=links).api_port == 8080  # a Service named cardflow-http: ignored
    with pytest.raises(ConfigError, match="service-link variable.*enableServiceLinks"):
        load_settings(env={"CARDFLOW_API_PORT": "tcp://10.0.0.9:80"})  # a Service named cardflow-api
    with pytest.raises(ConfigError, match="CARDFLOW_API_PROT: unknown setting"):
        load_settings(env={"CARDFLOW_API_PROT": "1"})  # typos still fail
