"""Cards benchmark: latency from produce to the card result that includes the event, and map time.

Run: .venv/bin/python bench/cards.py [--users N] [--rate R] [--seconds S]
Starts its own broker on loopback and one people worker with the built-in
cards. It first gives every one of ``--users`` users a profile, then
produces ``--rate`` events/s for ``--seconds``. For every produced event it
knows (partition, offset, send time); a result of the ``top-events`` card
includes the event once its offsets reach that offset, so the latency is
the result's arrival time minus the send time. The baseline, measured in the
same run, is the broker's own produce → consume latency on the same topic.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).parent))
from ingest import machine  # noqa: E402
from people import counter  # noqa: E402

from cardflow.card_results import CARD_RESULT  # noqa: E402
from cardflow.config import Settings, load_settings  # noqa: E402
from cardflow.connectors.kafka_admin import ensure_topics  # noqa: E402
from cardflow.local_kafka import LocalKafka, free_port  # noqa: E402

NAMES = ["page_view"] * 6 + ["feature_used"] * 3 + ["purchase"]
CARD = "top-events"


def producer(settings: Settings) -> Producer:
    return Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random", "linger.ms": 5,
                     "queue.buffering.max.messages": 1_000_000})


def seed_profiles(settings: Settings, users: int) -> None:
    p = producer(settings)
    now = int(time.time() * 1000)
    rng = random.Random(1)
    for u in range(users):
        event = {"uid": f"user-{u}", "event": "signup", "ts": now - rng.randrange(30 * 86_400_000),
                 "$set": {"country": rng.choice(["US", "DE", "FI", "JP", "BR"])}}
        while True:
            try:
                p.produce(settings.topic("events"), orjson.dumps(event), f"user-{u}".encode())
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(120) == 0


def sustained(settings: Settings, users: int, rate: float, seconds: float,
              sent: list[tuple[int, int, float]]) -> None:
    """Produce at ``rate`` for ``seconds``; record (partition, offset, send time) of every event."""
    p = producer(settings)
    rng = random.Random(2)
    topic = settings.topic("events")

    def delivered(err, msg) -> None:  # noqa: ANN001 - confluent's callback
        if err is None:
            sent.append((msg.partition(), msg.offset(), msg.opaque_time))

    started = time.monotonic()
    i = 0
    while time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate)
        while i < due:
            uid = f"user-{int(rng.paretovariate(1.0)) % users}"
            body = orjson.dumps({"uid": uid, "event": rng.choice(NAMES), "ts": int(time.time() * 1000)})
            t = time.monotonic()
            p.produce(topic, body, uid.encode(),
                      on_delivery=lambda err, msg, t=t: delivered(err, _Timed(msg, t)))
            i += 1
        p.poll(0)
        time.sleep(0.002)
    assert p.flush(60) == 0


class _Timed:
    def __init__(self, msg, t: float) -> None:  # noqa: ANN001
        self.partition, self.offset, self.opaque_time = msg.partition, msg.offset, t


Seen = dict[str, list[tuple[float, dict[int, int]]]]  # card → (arrival time, offsets) of each result


def follow_results(settings: Settings, stop: threading.Event, seen: Seen) -> None:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"bench-{time.time_ns()}",
                         "auto.offset.reset": "latest", "enable.auto.commit": False})
    consumer.subscribe([settings.topic("results")])
    while not stop.is_set():
        msg = consumer.poll(0.1)
        if msg is None or msg.error():
            continue
        record = CARD_RESULT.decode(msg.value())
        seen.setdefault(msg.key().decode(), []).append(
            (time.monotonic(), {int(p): o for p, o in record["offsets"].items()}))
    consumer.close()


def latencies(sent: list[tuple[int, int, float]], seen: list[tuple[float, dict[int, int]]]) -> list[float]:
    out = []
    pending = sorted(sent, key=lambda s: s[2])
    for partition, offset, t in pending:
        arrival = next((at for at, offsets in seen if offsets.get(partition, -1) >= offset and at >= t), None)
        if arrival is not None:
            out.append(arrival - t)
    return out


def broker_latency(settings: Settings, n: int = 2000) -> list[float]:
    """Produce → consume round trips on an idle topic of the same broker, one message at a time."""
    topic = settings.topic("bench-baseline")
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"base-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    p = producer(settings)
    out = []
    for _ in range(n):
        t = time.monotonic()
        p.produce(topic, str(t).encode(), b"bench-baseline")
        p.flush(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error() and msg.key() == b"bench-baseline":
                out.append(time.monotonic() - float(msg.value()))
                break
    consumer.close()
    return out


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        settings = load_settings(
            env={}, data_dir=Path(tmp), kafka_port=port, kafka_controller_port=free_port(),
            broker=f"127.0.0.1:{port}", partitions=8, worker_web_port=free_port(), log_level="warning",
            kafka_heap="1g")
        broker = LocalKafka(settings)
        broker.start()
        proc = None
        try:
            ensure_topics(settings)
            admin = AdminClient(settings.kafka_client_config())
            admin.create_topics([NewTopic(settings.topic("bench-baseline"), 1, 1)])["bench-baseline"].result()
            base = broker_latency(settings)
            log = open(Path(tmp) / "worker.log", "wb")  # noqa: SIM115 - closed with the worker
            proc = subprocess.Popen([sys.executable, "-m", "cardflow", "worker", "people"],
                                    env={**os.environ, **settings.to_env()}, stdout=log, stderr=log)
            wport = settings.worker_web_port
            t = time.perf_counter()
            seed_profiles(settings, args.users)
            while counter(wport, "cardflow_people_consumed_total") < args.users:
                if proc.poll() is not None:
                    shutil.copy(Path(tmp) / "worker.log", "/tmp/bench-worker.log")
                    raise SystemExit("the worker died; its log is in /tmp/bench-worker.log")
                time.sleep(0.5)
            seed_s = time.perf_counter() - t
            time.sleep(5)  # let the first full card round finish
            stop = threading.Event()
            seen: Seen = {}
            follower = threading.Thread(target=follow_results, args=(settings, stop, seen))
            follower.start()
            time.sleep(2)
            sent: list[tuple[int, int, float]] = []
            sustained(settings, args.users, args.rate, args.seconds, sent)
            consumed_at_end = counter(wport, "cardflow_people_consumed_total")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(latencies(sent[-50:], seen.get(CARD, []))) < 50:
                time.sleep(1)
            stop.set()
            follower.join()
            lat = latencies(sent, seen.get(CARD, []))
            by_card = {card: latencies(sent, results) for card, results in sorted(seen.items())}
            folded_eps = (consumed_at_end - args.users) / args.seconds
            metrics_text = _metrics(wport)
            map_sum = labelled(metrics_text, "cardflow_card_map_seconds_sum")
            counts = labelled(metrics_text, "cardflow_card_map_seconds_count")
            loads = (counter(wport, "cardflow_card_load_seconds_sum"),
                     counter(wport, "cardflow_card_load_seconds_count"))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(60)
            broker.stop()
    partitions = 8
    print(json.dumps({
        "machine": machine(), "users": args.users, "rate": args.rate, "seconds": args.seconds,
        "seed_seconds": round(seed_s, 1),
        "worker_folded_eps_during_run": round(folded_eps),
        "events_sent": len(sent), "events_with_result": len(lat),
        "latency_p50_s": round(percentile(lat, 50), 3) if lat else None,
        "latency_p99_s": round(percentile(lat, 99), 3) if lat else None,
        "latency_p50_p99_s_by_card": {card: [round(percentile(v, 50), 3), round(percentile(v, 99), 3)]
                                      for card, v in by_card.items() if v},
        "baseline_broker_p50_ms": round(percentile(base, 50) * 1000, 2),
        "baseline_broker_p99_ms": round(percentile(base, 99) * 1000, 2),
        "load_seconds_per_100k_profiles": round(loads[0] / loads[1] * partitions * 100_000 / args.users, 3)
        if loads[1] else None,
        "map_seconds_per_100k_profiles": {card: round(map_sum[card] / counts[card] * partitions
                                                      * 100_000 / args.users, 3)
                                          for card in sorted(map_sum) if counts.get(card)},
    }, indent=2))


def labelled(text: str, name: str) -> dict[str, float]:
    """``{card: value}`` of a metric labelled by card."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            out[line.split('card="', 1)[1].split('"', 1)[0]] = float(line.split()[-1])
    return out


def _metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/", timeout=5) as r:
        return r.read().decode()


if __name__ == "__main__":
    main()
