"""latency: at a fixed produce rate, how long until an event is in its user's profile, and in each
built-in card's result.

One people worker with the built-in cards. First every one of ``users`` users gets a profile; then
events are produced at ``rate``/s for ``seconds``, each with its send time as ``ts``. An event is
in the profile when a ``profile-changes`` record of its user carries ``max_ts`` at or past it; it
is in a card's result once the result's offsets reach the event's offset. Baseline, same run: the
broker's own produce → consume round trip on an idle topic.
"""

from __future__ import annotations

import bisect
import functools
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from bench.harness import Bench, Progress, Result, Worker, percentile, target
from cardflow.config import Settings, load_settings

Sent = list[tuple[int, int, str, int, float]]  # (partition, offset, uid, ts, send time)


def _producer(settings: Settings) -> Producer:
    return Producer(
        {
            **settings.kafka_client_config(),
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def seed(settings: Settings, users: int) -> None:
    p = _producer(settings)
    now, rng = int(time.time() * 1000), random.Random(1)
    for u in range(users):
        event = {
            "uid": f"user-{u}",
            "event": "signup",
            "ts": now - rng.randrange(30 * 86_400_000),
            "$set": {"country": rng.choice(["US", "DE", "FI", "JP", "BR"])},
        }
        while True:
            try:
                p.produce(settings.topic("events"), orjson.dumps(event), f"user-{u}".encode())
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(120) == 0


def sustained(settings: Settings, users: int, rate: float, seconds: float, sent: Sent) -> None:
    """Produce at ``rate`` for ``seconds`` (Zipf-like users, a mix of events), recording each."""
    p = _producer(settings)
    rng = random.Random(2)
    topic = settings.topic("events")
    names = ["page_view"] * 6 + ["feature_used"] * 3 + ["purchase", "signup"]

    def delivered(err: Any, msg: Any, uid: str, ts: int, t: float) -> None:
        if err is None:
            sent.append((msg.partition(), msg.offset(), uid, ts, t))

    started, i = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate)
        while i < due:
            uid = f"user-{int(rng.paretovariate(1.0)) % users}"
            ts = int(time.time() * 1000)
            body = orjson.dumps({"uid": uid, "event": rng.choice(names), "ts": ts})
            t = time.monotonic()
            p.produce(
                topic,
                body,
                uid.encode(),
                on_delivery=functools.partial(_after, delivered, uid, ts, t),
            )
            i += 1
        p.poll(0)
        time.sleep(0.002)
    assert p.flush(60) == 0


def _after(fn: Any, uid: str, ts: int, t: float, err: Any, msg: Any) -> None:
    fn(err, msg, uid, ts, t)


class Follower(threading.Thread):
    """Reads ``profile-changes`` and ``results`` from their ends, noting when each record came."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings, self.stop = settings, threading.Event()
        self.changes: dict[str, list[tuple[int, float]]] = defaultdict(list)  # uid → (max_ts, arrival)
        self.results: dict[str, list[tuple[float, dict[int, int]]]] = defaultdict(list)
        self.ready = threading.Event()

    def run(self) -> None:
        from cardflow.agents.records import PROFILE_CHANGE
        from cardflow.card_results import CARD_RESULT

        s = self.settings
        consumer = Consumer(
            {
                **s.kafka_client_config(),
                "group.id": f"bench-{time.time_ns()}",
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
            }
        )
        changes, results = s.topic("profile-changes"), s.topic("results")
        consumer.subscribe([changes, results], on_assign=lambda c, parts: self.ready.set())
        while not self.stop.is_set():
            for msg in consumer.consume(500, timeout=0.1):
                if msg.error():
                    continue
                at = time.monotonic()
                if msg.topic() == changes:
                    change = PROFILE_CHANGE.decode(msg.value() or b"")
                    self.changes[change["uid"]].append((change["max_ts"], at))
                else:
                    record = CARD_RESULT.decode(msg.value() or b"")
                    self.results[(msg.key() or b"").decode()].append(
                        (at, {int(p): o for p, o in record["offsets"].items()})
                    )
        consumer.close()


def follow(settings: Settings) -> Follower:
    """A Follower reading from the ends of profile-changes and results, subscribed and settled."""
    follower = Follower(settings)
    follower.start()
    follower.ready.wait(30)
    time.sleep(2)
    return follower


def drain(
    follower: Follower, sent: Sent, cards: Callable[[], list[str]], worker: Worker, timeout: float
) -> None:
    """Until every card's result includes the last 20 events sent (at most ``timeout`` s), then
    stop following."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(
        len(card_latencies(sent[-20:], follower.results.get(c, []))) == 20 for c in cards()
    ):
        worker.alive()
        time.sleep(1)
    follower.stop.set()
    follower.join(10)


def profile_latencies(sent: Sent, changes: dict[str, list[tuple[int, float]]]) -> list[float]:
    out = []
    for _, _, uid, ts, t in sent:
        arrival = next((at for max_ts, at in changes.get(uid, ()) if max_ts >= ts and at >= t), None)
        if arrival is not None:
            out.append(arrival - t)
    return out


def card_latencies(sent: Sent, results: list[tuple[float, dict[int, int]]]) -> list[float]:
    """Per sent event, the first result at or after its send time whose offsets include it."""
    arrivals = [at for at, _ in results]
    out = []
    for partition, offset, _, _, t in sent:
        for at, offsets in results[bisect.bisect_left(arrivals, t) :]:
            if offsets.get(partition, -1) >= offset:
                out.append(at - t)
                break
    return out


def broker_round_trip(settings: Settings, n: int) -> list[float]:
    """Produce → consume on an idle topic of the same broker, one message at a time."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = settings.topic("round-trip")
    admin = AdminClient(settings.kafka_client_config())
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"rt-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    p, out = _producer(settings), []
    for _ in range(n):
        t = time.monotonic()
        p.produce(topic, str(t).encode(), b"rt")
        p.flush(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                out.append(time.monotonic() - float(msg.value() or b"nan"))
                break
    consumer.close()
    return out


def run(bench: Bench) -> Result:
    progress = Progress("latency")
    users, rate, seconds = bench.size(20_000, 100_000), bench.size(5000, 5000, 500), bench.size(15, 60, 4)
    result = Result(
        "latency",
        {"users": users, "rate": rate, "seconds": seconds, "cards": list(load_settings(env={}).cards)},
    )
    here = bench.settings("latency", cards=load_settings(env={}).cards)
    progress("broker round trips (the baseline)")
    base = broker_round_trip(here, bench.size(300, 2000, 20))
    worker = Worker(here, "worker", "people", log=here.data_dir / "people.log")
    try:
        progress(f"giving {users:,} users a profile")
        seed(here, users)
        worker.wait_counter("cardflow_people_consumed_total", users, timeout=600)
        time.sleep(5)  # the first full card round
        follower = follow(here)
        sent: Sent = []
        progress(f"{rate:,} events/s for {seconds} s")
        consumed = worker.counter("cardflow_people_consumed_total")
        sustained(here, users, rate, seconds, sent)
        kept_up = (worker.counter("cardflow_people_consumed_total") - consumed) / seconds
        progress("waiting for the last events' results")
        result.params["cards_ids"] = sorted(follower.results)
        drain(follower, sent, lambda: sorted(follower.results), worker, 120)
    finally:
        worker.stop()
    progress.done()
    lat = {"profile": profile_latencies(sent, follower.changes)}
    for card in sorted(follower.results):
        lat[f"card {card}"] = card_latencies(sent, follower.results[card])
    rows: list[list[Any]] = [["to", "events with it", "p50 s", "p95 s", "p99 s"]]
    for name, values in lat.items():
        rows.append([name, len(values), *(round(percentile(values, q), 3) for q in (50, 95, 99))])
    result.tables[f"latency at {rate:,} events/s over {users:,} profiles ({len(sent):,} events sent)"] = rows
    result.contenders = {
        "broker round trip": [{"p50_ms": percentile(base, 50) * 1000, "p99_ms": percentile(base, 99) * 1000}],
        "worker": [{"events_per_s_during_run": kept_up}],
    }
    result.targets = [target("event → profile p99 s", percentile(lat["profile"], 99), "<=", 0.5)]
    result.targets += [
        target(f"event → {name} p99 s", percentile(v, 99), "<=", 2)
        for name, v in lat.items()
        if name.startswith("card ")
    ]
    missing = [name for name, values in lat.items() if len(values) < len(sent)]
    if missing:
        result.notes.append(f"events that never reached a result in time: {missing}")
    return result
