"""ingest: the SDK vs a raw confluent-kafka producer, the push API vs a bare aiohttp endpoint.

- ``sdk``: ``Client.track`` for every event until all are acknowledged (``acks=all``, idempotent);
  ``raw``: a plain confluent-kafka producer sending the same events, pre-encoded with orjson.
- ``push_api``: ``cardflow api``'s ``POST /v1/events`` (batches of 100, 8 connections, 202 only
  after the broker acknowledged every event); ``bare``: an aiohttp endpoint that only parses the
  body. The load generator is a process of its own (``python -m bench.ingest load URL ...``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from bench.harness import ROOT, Bench, Data, Progress, Result, alternate, medians, target

BARE_SERVER = """
import json, sys
from aiohttp import web
async def accept(request):
    body = await request.read()
    return web.json_response({"accepted": len(json.loads(body))}, status=202)
app = web.Application(client_max_size=10_000_000)
app.router.add_post("/v1/events", accept)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def raw(settings: Any, events: list[tuple[str, str, dict[str, Any], int]]) -> dict[str, float]:
    import orjson
    from confluent_kafka import Producer

    from cardflow.kafka_clients import producer_config

    producer = Producer(
        producer_config(
            settings,
            **{"linger.ms": 20, "batch.num.messages": 10_000, "queue.buffering.max.messages": 1_000_000},
        )
    )
    topic = settings.topic("events")
    start = time.perf_counter()
    for uid, name, props, ts in events:
        payload = orjson.dumps({"uid": uid, "event": name, "ts": ts, "properties": props})
        while True:
            try:
                producer.produce(topic, payload, uid.encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0
    return {"events_per_s": len(events) / (time.perf_counter() - start)}


def sdk(settings: Any, events: list[tuple[str, str, dict[str, Any], int]]) -> dict[str, float]:
    from cardflow.sdk import Client

    start = time.perf_counter()
    with Client(settings=settings) as client:
        for uid, name, props, ts in events:
            client.track(uid, name, props, ts=ts)
        calls = time.perf_counter() - start
    return {
        "events_per_s": len(events) / (time.perf_counter() - start),
        "track_calls_per_s": len(events) / calls,
    }


async def _load(url: str, seconds: float, batch: int, concurrency: int) -> int:
    import aiohttp

    now = int(time.time() * 1000)
    body = json.dumps(
        [
            {"uid": f"user-{i}", "event": "page_view", "ts": now - i, "properties": {"path": "/pricing"}}
            for i in range(batch)
        ]
    ).encode()
    accepted = 0
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while time.perf_counter() < deadline:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                result = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"{url} answered {r.status}: {result}")
                accepted += result["accepted"]

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return accepted


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def http(
    cmd: list[str], settings: Any, port: int, seconds: float, batch: int, concurrency: int
) -> dict[str, float]:
    server = subprocess.Popen(
        cmd, env={**os.environ, **settings.to_env()}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_port(port, server)
        url = f"http://127.0.0.1:{port}/v1/events"
        load = [sys.executable, "-m", "bench.ingest", "load", url, str(seconds), str(batch), str(concurrency)]
        subprocess.run(
            load[:5] + ["1", str(batch), str(concurrency)], cwd=ROOT, check=True, capture_output=True
        )  # warm-up
        out = subprocess.run(load, cwd=ROOT, check=True, capture_output=True, text=True)
        return {"events_per_s": float(out.stdout.split()[-1])}
    finally:
        server.terminate()
        server.wait(30)


def run(bench: Bench) -> Result:
    progress = Progress("ingest")
    n = bench.size(100_000, 300_000)
    seconds = bench.size(3, 10, smoke=1)
    batch, concurrency = 100, 8
    data = Data(users=10_000, events=n, seed=3)
    events = []
    for key, value in data.records():
        e = json.loads(value)
        events.append((key.decode(), e["event"], e["properties"], e["ts"]))
    result = Result(
        "ingest", {"events": n, "http_seconds": seconds, "batch": batch, "concurrency": concurrency}
    )
    here = bench.settings("ingest")
    producers = alternate(
        bench.rounds, {"sdk": lambda r: sdk(here, events), "raw": lambda r: raw(here, events)}, progress
    )
    api = [sys.executable, "-m", "cardflow", "api"]
    bare_port = here.api_port  # each server runs alone, on the same free port
    endpoints = alternate(
        bench.rounds,
        {
            "push_api": lambda r: http(api, here, here.api_port, seconds, batch, concurrency),
            "bare_http": lambda r: http(
                [sys.executable, "-c", BARE_SERVER, str(bare_port)],
                here,
                bare_port,
                seconds,
                batch,
                concurrency,
            ),
        },
        progress,
    )
    progress.done()
    result.contenders = {**producers, **endpoints}
    sdk_eps = medians(producers["sdk"])["events_per_s"]
    api_eps = medians(endpoints["push_api"])["events_per_s"]
    result.ratios = {
        "sdk / raw": round(sdk_eps / medians(producers["raw"])["events_per_s"], 3),
        "push_api / bare_http": round(api_eps / medians(endpoints["bare_http"])["events_per_s"], 3),
    }
    result.targets = [
        target("SDK events/s", sdk_eps, ">=", 200_000),
        target("push API events/s", api_eps, ">=", 20_000),
    ]
    return result


if __name__ == "__main__" and sys.argv[1:2] == ["load"]:
    url, secs, size, conns = sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    started = time.perf_counter()
    total = asyncio.run(_load(url, secs, size, conns))
    print(total / (time.perf_counter() - started))
