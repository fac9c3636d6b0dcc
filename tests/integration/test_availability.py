"""Two people workers under kill -9 every ~10 s (and one lost RocksDB directory) while events
flow: profiles stay exact, and folding stalls for seconds per kill, not a minute.

Progress is measured per partition from the profiles changelog (every folded batch writes its
users' profiles there), so a partition whose worker is dead counts as stalled even while the
other worker folds its own."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from typing import Any

from confluent_kafka import Consumer

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.local_kafka import free_port

from ..helpers import http, wait_until
from .test_people import make_events, produce, truth, wait_profiles

RATE = 3_000  # events/s: 100k events take ~33 s, three kills while they flow
KILL_EVERY = 10.0


class ChangelogWatch(threading.Thread):
    """Notes when each partition of the profiles changelog was last written."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.topic = f"{settings.topic_prefix}people-profiles-changelog"
        self.consumer = Consumer({**settings.kafka_client_config(), "group.id": f"w-{time.monotonic_ns()}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                  "topic.metadata.refresh.interval.ms": 1000})
        self.writes: list[tuple[float, int]] = []  # (monotonic time, partition)
        self.stopping = threading.Event()

    def run(self) -> None:
        self.consumer.subscribe([self.topic])
        while not self.stopping.is_set():
            for msg in self.consumer.consume(10_000, timeout=0.2):
                if msg.error() is None:
                    self.writes.append((time.monotonic(), msg.partition()))
        self.consumer.close()

    def longest_stall(self, start: float, end: float, partitions: int) -> float:
        """The longest time some partition went without a write, over the gaps that begin in
        [start, end] (a stall that began before ``end`` counts whole, however long it lasts)."""
        last = dict.fromkeys(range(partitions), start)
        worst = 0.0
        for at, partition in self.writes:
            if at < start:
                continue
            if last[partition] <= end:
                worst = max(worst, at - last[partition])
            last[partition] = at
        return worst


def test_kill_9_every_10_s_stalls_seconds_not_a_minute(settings: Settings, service) -> None:
    ensure_topics(settings)
    events = make_events(100_000, 5_000, seed=13)
    workers = [settings.replace(worker_name=f"w{i}", worker_web_port=free_port(),
                                data_dir=settings.data_dir / f"w{i}") for i in range(2)]
    running = [service(["worker", "people"], w) for w in workers]
    watch = ChangelogWatch(settings)
    produce(settings, events[:2_000])
    wait_profiles(settings, truth(events[:2_000]), timeout=120)
    watch.start()

    feeder = threading.Thread(target=produce, args=(settings, events[2_000:], RATE))
    started = time.monotonic()
    feeder.start()
    kills: list[float] = []
    killed: list[Any] = []
    victim = 0
    while feeder.is_alive():
        feeder.join(KILL_EVERY)
        if not feeder.is_alive():
            break
        proc = running[victim].proc
        assert proc.poll() is None, running[victim].output()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # the worker alone: its card process must notice by itself
        proc.wait()
        killed.append(running[victim])
        kills.append(time.monotonic())
        if len(kills) == 2:  # the second victim also loses its disk
            shutil.rmtree(workers[victim].data_dir / "workers")
        running[victim] = service(["worker", "people"], workers[victim])
        victim = 1 - victim
    sent = time.monotonic()
    assert len(kills) >= 3, f"the stream ended after {sent - started:.0f}s, {len(kills)} kill(s)"

    table = wait_profiles(settings, truth(events), timeout=240)
    watch.stopping.set()
    watch.join()
    last_write = max(at for at, _ in watch.writes)
    ends = [*kills[1:], sent]  # each kill's stalls are those that begin before the next kill
    stalls = [watch.longest_stall(k, end, settings.partitions) for k, end in zip(kills, ends, strict=True)]
    catch_up = last_write - sent
    print(f"\nsoak: {len(events)} events, {len(kills)} kill -9 (one with a lost RocksDB directory); "
          f"longest per-partition stall after each kill: {', '.join(f'{s:.1f}s' for s in stalls)}; "
          f"last event folded {catch_up:.1f}s after the last was sent")
    assert len(table) == len(truth(events))
    # Bounds, not timing targets (docs/benchmarks.md has the numbers: ~3 s stalls, catch-up
    # under 1 s), far from what Faust's defaults gave on this test (no static membership, 60 s
    # session timeout): stalls of 43-63 s after each kill, catch-up 40 s.
    assert max(stalls) <= 30 and catch_up <= 20, (stalls, catch_up)

    for svc in [*killed, *running]:  # no traceback, also from a killed worker's card process
        assert "Traceback" not in svc.output(), svc.output()[-3000:]
        assert "EOFError" not in svc.output() and "ConnectionResetError" not in svc.output()
    # A clean stop exits 0, also while the group rebalances (a third worker joining).
    third = settings.replace(worker_name="w2", worker_web_port=free_port(), data_dir=settings.data_dir / "w2")
    joining = service(["worker", "people"], third)
    deadline = time.monotonic() + 60
    while "Joined group" not in joining.output() and time.monotonic() < deadline:  # aiokafka's line
        time.sleep(0.05)
    assert "Joined group" in joining.output(), joining.output()[-3000:]
    codes = [running[0].stop(), joining.stop()]  # SIGTERM while the group assigns and recovers
    assert codes == [0, 0], [running[0].output()[-3000:], joining.output()[-3000:]]
    leftovers: list[Any] = [p for w in (workers[0], third) for p in (w.data_dir / "card-maps").glob("*")]
    assert leftovers == [], leftovers

    # Lag gauges name only the partitions a worker holds: w1, alone, holds all four (once the
    # stopped static members' sessions expired); when w0 is back, w1 shows only what it kept.
    wait_until(lambda: len(lag_partitions(workers[1])) == settings.partitions, timeout=60,
               what="the remaining worker to hold every partition")
    running[0] = service(["worker", "people"], workers[0])

    def split() -> bool:
        mine, theirs = lag_partitions(workers[0]), lag_partitions(workers[1])
        return bool(mine and theirs and not mine & theirs and len(mine | theirs) == settings.partitions)

    wait_until(split, timeout=90, what="the two workers' lag gauges to split the partitions")

    # A worker that does not come back: its partitions move after the session timeout, to the
    # worker that keeps standbys of them, while events flow.
    more = make_events(20_000, 5_000, seed=17)
    more = [{**e, "ts": e["ts"] + 1} for e in more]  # other event times: no id shared with events
    watch = ChangelogWatch(settings)
    watch.start()
    feeder = threading.Thread(target=produce, args=(settings, more, 2_000))
    feeder.start()
    time.sleep(2)
    gone = time.monotonic()
    running[0].proc.kill()
    feeder.join()
    sent = time.monotonic()
    wait_profiles(settings, truth(events + more), timeout=240)
    watch.stopping.set()
    watch.join()
    stall = watch.longest_stall(gone, sent, settings.partitions)
    print(f"soak: a worker gone for good: its partitions stalled {stall:.1f}s "
          f"(session_timeout_ms {settings.session_timeout_ms})")
    assert stall <= settings.session_timeout_ms / 1000 + 20, stall


def lag_partitions(worker: Settings) -> set[str]:
    """The partitions a worker's /metrics gives a lag gauge for."""
    try:
        status, _, text = http("GET", f"http://127.0.0.1:{worker.worker_web_port}/metrics/", timeout=5)
    except OSError:
        return set()
    return {line.split('"')[1] for line in text.splitlines() if line.startswith("cardflow_people_lag{")}
