"""Ingest benchmark: SDK vs a raw confluent-kafka producer, push API vs a bare aiohttp endpoint.

Run: .venv/bin/python bench/ingest.py [--events N] [--seconds S]
Starts its own Kafka broker on free loopback ports and stops it afterwards.
Each cardflow number is measured beside its baseline in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from confluent_kafka import Producer

from cardflow.config import Settings, load_settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.kafka_clients import producer_config
from cardflow.local_kafka import LocalKafka, free_port
from cardflow.sdk import Client

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


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, Python {platform.python_version()}"


def events(n: int) -> list[tuple[str, str, dict]]:
    return [(f"user-{i % 10_000}", ("page_view", "signup", "purchase")[i % 3], {"path": "/", "n": i})
            for i in range(n)]


def bench_raw(settings: Settings, sample: list[tuple[str, str, dict]]) -> float:
    producer = Producer(producer_config(settings, **{"linger.ms": 20, "batch.num.messages": 10_000,
                                                     "queue.buffering.max.messages": 1_000_000}))
    topic = settings.topic("events")
    start = time.perf_counter()
    for i, (uid, name, props) in enumerate(sample):
        payload = orjson.dumps({"uid": uid, "event": name, "ts": 1_795_000_000_000 + i, "properties": props})
        while True:
            try:
                producer.produce(topic, payload, uid.encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    return len(sample) / (time.perf_counter() - start)


def bench_sdk(settings: Settings, sample: list[tuple[str, str, dict]]) -> tuple[float, float]:
    """(events/s until all acknowledged, events/s of the track() calls alone)."""
    start = time.perf_counter()
    with Client(settings=settings) as client:
        for i, (uid, name, props) in enumerate(sample):
            client.track(uid, name, props, ts=1_795_000_000_000 + i)
        calls = time.perf_counter() - start
    return len(sample) / (time.perf_counter() - start), len(sample) / calls


async def _load(url: str, seconds: float, batch: int, concurrency: int) -> tuple[int, int]:
    body = json.dumps([{"uid": f"user-{i}", "event": "page_view", "ts": 1_795_000_000_000 + i,
                        "properties": {"path": "/pricing"}} for i in range(batch)]).encode()
    accepted = requests = 0
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, requests
        while time.perf_counter() < deadline:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                result = await r.json()
                assert r.status == 202, result
                accepted += result["accepted"]
                requests += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return accepted, requests


def _wait_port(port: int) -> None:
    import socket
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def bench_http(cmd: list[str], env: dict[str, str], port: int, seconds: float, batch: int,
               concurrency: int) -> float:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        asyncio.run(_load(f"http://127.0.0.1:{port}/v1/events", 1.0, batch, concurrency))  # warm-up
        start = time.perf_counter()
        accepted, _ = asyncio.run(_load(f"http://127.0.0.1:{port}/v1/events", seconds, batch, concurrency))
        return accepted / (time.perf_counter() - start)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        settings = load_settings(env={}, data_dir=Path(tmp), kafka_port=port,
                                 kafka_controller_port=free_port(), broker=f"127.0.0.1:{port}",
                                 api_port=free_port(), partitions=8, log_level="warning")
        broker = LocalKafka(settings)
        broker.start()
        try:
            ensure_topics(settings)
            sample = events(args.events)
            raw = bench_raw(settings, sample)
            sdk, sdk_calls = bench_sdk(settings, sample)
            env = {**os.environ, **settings.to_env()}
            bare_port = free_port()
            bare = bench_http([sys.executable, "-c", BARE_SERVER, str(bare_port)], env, bare_port,
                              args.seconds, args.batch, args.concurrency)
            api = bench_http([sys.executable, "-m", "cardflow", "api"], env, settings.api_port,
                             args.seconds, args.batch, args.concurrency)
        finally:
            broker.stop()
    print(json.dumps({
        "machine": machine(), "events": args.events, "batch": args.batch,
        "concurrency": args.concurrency, "seconds": args.seconds,
        "raw_producer_eps": round(raw), "sdk_eps": round(sdk), "sdk_vs_raw": round(sdk / raw, 3),
        "sdk_track_call_eps": round(sdk_calls),
        "bare_http_eps": round(bare), "push_api_eps": round(api), "push_vs_bare": round(api / bare, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
