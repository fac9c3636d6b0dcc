"""schemathesis fuzzes the API from its own /openapi.json, on loopback, bounded in examples and time:
no 5xx, and every response matches the document (status, content type, schema)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.local_kafka import free_port

from ..helpers import http, start_api, wait_until

TOKEN = "fuzz-token"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(settings: Settings, service,
                                                                    tmp_path: Path) -> None:
    ensure_topics(settings)
    warehouse_port = free_port()
    fuzzed = settings.replace(api_tokens=f"{TOKEN}:ingest,read,admin", cards=(),
                              worker_urls=(f"http://127.0.0.1:{settings.worker_web_port}",),
                              warehouse_worker_url=f"http://127.0.0.1:{warehouse_port}")
    worker = service(["worker", "people"], fuzzed)
    service(["worker", "warehouse"], fuzzed.replace(worker_web_port=warehouse_port))  # /v1/query, /v1/sql
    base = start_api(service, fuzzed)
    wait_until(lambda: http("GET", f"{base}/v1/warehouse/schema",
                            headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200,
               timeout=90, what="the warehouse worker to answer")
    # Profile lookups route to the worker: fuzz once it serves them (503 while it starts).
    wait_until(lambda: http("GET", f"{base}/v1/profiles/nobody",
                            headers={"Authorization": f"Bearer {TOKEN}"})[0] == 404,
               timeout=90, what="the worker to serve lookups")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}/openapi.json",
         "--checks", CHECKS, "--max-examples", "20", "--max-time", "60", "--request-timeout", "30",
         "--seed", "1", "--header", f"Authorization: Bearer {TOKEN}", "--phases", "examples,coverage,fuzzing",
         "--exclude-path-regex", "stream$", "--no-color"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert worker.proc.poll() is None, worker.output()[-3000:]
