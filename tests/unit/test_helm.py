"""The Helm chart, rendered by the pinned helm for the defaults and four production value sets:
lint passes; every manifest validates against Kubernetes' own schemas; the properties a platform
team reviews hold; bad values fail with the schema's message; the pods run the commands
`cardflow dev` runs; the environment Kubernetes gives each container loads as Settings."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cardflow.config import load_settings
from cardflow.dev import SERVICES

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[2] / "helm" / "cardflow"
HELM = Path(os.environ.get("CARDFLOW_HELM", Path.home() / ".cache/cardflow/helm-v4.3.2/helm"))
KUBERNETES = "1.33.0"  # the schemas the manifests are checked against (kubernetes-validate)
CRDS = {"ServiceMonitor"}  # not core Kubernetes: no schema to check against

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "sasl-ssl": {
        "kafka": {
            "bootstrap": "b-1.kafka:9096,b-2.kafka:9096",
            "securityProtocol": "SASL_SSL",
            "saslMechanism": "SCRAM-SHA-512",
            "sasl": {"existingSecret": "kafka-creds"},
            "tls": {"existingSecret": "kafka-ca", "mutual": True},
        },
        "apiTokens": {"existingSecret": "cardflow-tokens"},
    },
    "clickhouse": {
        "warehouse": {
            "url": "https://clickhouse.internal:8443",
            "user": "cardflow",
            "existingSecret": "clickhouse-creds",
        },
        "warehouseWorker": {"replicas": 2},
    },
    "s3-irsa": {
        "lake": {"url": "s3://raw-events/cardflow", "region": "eu-west-1"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/cf"}},
    },
    "ingress-hpa": {
        "api": {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "host": "cf.example.com",
                "tlsSecret": "cf-tls",
            },
            "autoscaling": {"enabled": True, "maxReplicas": 6},
        },
        "people": {"antiAffinity": "hard"},
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {"enabled": True},
        "lake": {"url": "s3://x/y", "existingSecret": "s3-keys"},
    },
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"helm is not at {HELM}; `make test` builds it (make helm)")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def render(values: dict[str, Any], tmp_path: Path, release: str = "analytics") -> list[dict[str, Any]]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    done = helm("template", release, str(CHART), "-f", str(path), "--namespace", "cf")
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    return render(VALUE_SETS[request.param], tmp_path_factory.mktemp(request.param))


def pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
    return out


def test_lint_passes_for_every_value_set(tmp_path: Path) -> None:
    for name, values in VALUE_SETS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        done = helm("lint", "--strict", str(CHART), "-f", str(path))
        assert done.returncode == 0, (name, done.stdout, done.stderr)


def test_manifests_validate_against_the_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    checked = 0
    for doc in rendered:
        if doc["kind"] in CRDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises with the schema's message
        checked += 1
    assert checked >= 10


def test_every_container_is_locked_down_and_probed(rendered: list[dict[str, Any]]) -> None:
    assert pods(rendered)
    for where, spec in pods(rendered):
        assert spec["enableServiceLinks"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        mounts_tmp = any(v.get("emptyDir") is not None and v["name"] == "tmp" for v in spec["volumes"])
        assert mounts_tmp, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True, where
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], where
            if where.startswith("Job/"):
                continue  # a run-to-completion hook: probes have nothing to say about it
            ports = {p["name"] for p in c["ports"]}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert c[probe]["httpGet"]["port"] in ports, (where, probe)
            paths = {c[p]["httpGet"]["path"].rstrip("/") for p in ("livenessProbe", "readinessProbe")}
            assert paths == {"/healthz", "/readyz"}, where


def test_people_state_and_membership(rendered: list[dict[str, Any]]) -> None:
    people = next(
        d for d in rendered if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("-people")
    )
    assert people["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    spec = people["spec"]["template"]["spec"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["CARDFLOW_WORKER_NAME"]["value"] == "$(POD_NAME)"  # static membership per pod
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert spec["terminationGracePeriodSeconds"] >= 30
    assert "podAntiAffinity" in spec["affinity"]
    headless = next(d for d in rendered if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")
    assert people["spec"]["serviceName"] == headless["metadata"]["name"]
    assert any(d["kind"] == "PodDisruptionBudget" for d in rendered)


def test_secrets_are_referenced_never_inlined(tmp_path: Path) -> None:
    docs = render(
        VALUE_SETS["sasl-ssl"] | {"warehouse": {"url": "https://ch:8443", "existingSecret": "ch"}}, tmp_path
    )
    assert not [d for d in docs if d["kind"] == "Secret"]
    for where, spec in pods(docs):
        for c in spec["containers"]:
            env = {e["name"]: e for e in c["env"]}
            for name in (
                "CARDFLOW_SASL_PASSWORD",
                "CARDFLOW_SASL_USERNAME",
                "CARDFLOW_WAREHOUSE_PASSWORD",
                "CARDFLOW_API_TOKENS",
            ):
                assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"], (
                    where,
                    name,
                )
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert not any(re.search("(?i)password|token|secret", k) for k in config["data"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"people": {"replicas": "two"}}, "replicas"),
        ({"kafka": {"bootstrap": ""}}, "bootstrap"),
        ({"kafka": {"bootstrap": "no-port"}}, "bootstrap"),
        ({"kafka": {"bootstap": "x:1"}}, "bootstap"),
        ({"colour": "blue"}, "colour"),
        ({"kafka": {"securityProtocol": "TLS"}}, "securityProtocol"),
        ({"warehouseWorker": {"replicas": 2}}, "embedded chDB is opened by one process"),
    ],
)
def test_bad_values_fail_with_the_schemas_message(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    done = helm("template", "x", str(CHART), "-f", str(path))
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_pods_run_the_commands_cardflow_dev_runs(tmp_path: Path) -> None:
    docs = render(VALUE_SETS["s3-irsa"], tmp_path)  # every workload on
    commands = {
        tuple(c["args"])
        for where, spec in pods(docs)
        if not where.startswith("Job/")
        for c in spec["containers"]
    }
    assert commands == {tuple(v) for v in SERVICES.values()}
    from click.testing import CliRunner

    from cardflow.cli import cli

    for args in [*commands, ("topics", "create"), ("warehouse", "migrate")]:  # each one the CLI has
        assert CliRunner().invoke(cli, [*args, "--help"]).exit_code == 0, args


def kubernetes_env(
    spec: dict[str, Any], container: dict[str, Any], docs: list[dict[str, Any]]
) -> dict[str, str]:
    """The environment Kubernetes would give ``container``: its env (fieldRefs and secrets filled
    in, $(VAR) expanded), its ConfigMaps, the API server's variables, and service links unless off."""
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    env = {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_PORT": "tcp://10.0.0.1:443",
        "HOSTNAME": "pod-0",
    }
    if spec.get("enableServiceLinks", True):
        for svc in (d for d in docs if d["kind"] == "Service"):
            name = svc["metadata"]["name"].upper().replace("-", "_")
            port = svc["spec"]["ports"][0]["port"]
            env |= {
                f"{name}_SERVICE_HOST": "10.0.0.9",
                f"{name}_SERVICE_PORT": str(port),
                f"{name}_PORT": f"tcp://10.0.0.9:{port}",
                f"{name}_PORT_{port}_TCP_PORT": str(port),
            }
    for source in container.get("envFrom", []):
        env |= maps[source["configMapRef"]["name"]]
    fields = {"metadata.name": "analytics-people-0", "status.podIP": "10.1.2.3"}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
            )
        elif "fieldRef" in item["valueFrom"]:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = (
                "user:ingest,read" if item["name"] == "CARDFLOW_API_TOKENS" else "from-a-secret"
            )
    return env


@pytest.mark.parametrize("release", ["analytics", "cardflow"])  # "cardflow": services named cardflow-…
@pytest.mark.parametrize("links", [False, True])
def test_the_pod_environment_loads_as_settings(tmp_path: Path, release: str, links: bool) -> None:
    docs = render(VALUE_SETS["ingress-hpa"] | VALUE_SETS["sasl-ssl"], tmp_path, release=release)
    for where, spec in pods(docs):
        spec = {**spec, "enableServiceLinks": links}  # links on: as if a user turned them back on
        for c in spec["containers"]:
            settings = load_settings(env=kubernetes_env(spec, c, docs))
            assert settings.broker == "b-1.kafka:9096,b-2.kafka:9096", where
            assert (
                settings.security_protocol.value == "SASL_SSL"
                and settings.sasl_password.get_secret_value() == "from-a-secret"
            )
            if c["args"] == ["worker", "people"]:
                assert settings.worker_name == "analytics-people-0" and settings.worker_web_host == "10.1.2.3"
                assert settings.worker_web_bind == "0.0.0.0" and settings.worker_health_port == 6067
            if c["args"] == ["api"]:
                assert settings.worker_urls[0].startswith("dns+http://") and settings.api_host == "0.0.0.0"


def test_the_setup_hook_needs_nothing_the_release_creates_later(rendered: list[dict[str, Any]]) -> None:
    """Helm runs pre-install hooks before the release's own resources exist: the Job may refer only
    to hook resources of a lower weight (or to what the user created: Secrets)."""
    hooks = {
        (d["kind"], d["metadata"]["name"]): int(d["metadata"]["annotations"].get("helm.sh/hook-weight", 0))
        for d in rendered
        if "helm.sh/hook" in d["metadata"].get("annotations", {})
    }
    jobs = [d for d in rendered if d["kind"] == "Job"]
    assert jobs
    for job in jobs:
        weight = hooks[("Job", job["metadata"]["name"])]
        spec = job["spec"]["template"]["spec"]
        assert "serviceAccountName" not in spec  # the release's service account does not exist yet
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                ref = ("ConfigMap", source["configMapRef"]["name"])
                assert ref in hooks and hooks[ref] < weight, (job["metadata"]["name"], ref)
    plain = next(d for d in rendered if d["kind"] == "ConfigMap" and "annotations" not in d["metadata"])
    hooked = next(d for d in rendered if d["kind"] == "ConfigMap" and "annotations" in d["metadata"])
    assert plain["data"] == hooked["data"]  # the Job sees the workers' settings
