"""The people topology on the real broker: order independence, dedup, crashes, recovery, rebalances."""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from cardflow.codec import AvroCodec
from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.connectors.kafka_read import read_topic
from cardflow.local_kafka import free_port

from ..helpers import http, read_table, start_api, wait_until

T0 = 1_780_000_000_000  # 2026-05-28; events span 90 days after it, all in the past
DAY = 86_400_000
NAMES = ["page_view"] * 6 + ["feature_used"] * 3 + ["purchase", "signup"]


def make_events(n: int, users: int, seed: int = 1) -> list[dict[str, Any]]:
    """Zipf-ish activity; every ($set) event of a user has its own time, so the truth needs no tiebreak."""
    rng = random.Random(seed)
    used: set[tuple[str, int]] = set()
    events = []
    for i in range(n):
        uid = f"u{min(int(rng.paretovariate(1.1)) - 1, users - 1)}"
        ts = T0 + rng.randrange(90 * DAY)
        while (uid, ts) in used:
            ts += 1
        used.add((uid, ts))
        event: dict[str, Any] = {"uid": uid, "event": rng.choice(NAMES), "ts": ts, "properties": {"i": i}}
        if rng.random() < 0.2:
            event["$set"] = {"plan": rng.choice(["free", "team", "pro"]), "country": rng.choice("ABCDE")}
        events.append(event)
    return events


def truth(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What each profile must hold, computed here from the events alone."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        p = out.setdefault(e["uid"], {"first_seen": e["ts"], "last_seen": e["ts"], "events": {},
                                      "properties": {}})
        p["first_seen"] = min(p["first_seen"], e["ts"])
        p["last_seen"] = max(p["last_seen"], e["ts"])
        p["events"][e["event"]] = p["events"].get(e["event"], 0) + 1
        for k, v in e.get("$set", {}).items():
            if k not in p["properties"] or e["ts"] > p["properties"][k][1]:
                p["properties"][k] = (v, e["ts"])
    for p in out.values():
        p["properties"] = {k: v for k, (v, _) in p["properties"].items()}
    return out


def summary(profile: dict[str, Any]) -> dict[str, Any]:
    return {"first_seen": profile["first_seen"], "last_seen": profile["last_seen"],
            "events": profile["events"],
            "properties": {k: v[0] for k, v in profile.get("properties", {}).items()}}


def produce(settings: Settings, events: list[dict[str, Any]], rate: float | None = None) -> None:
    producer = Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random",
                         "linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
    topic = settings.topic("events")
    started = time.monotonic()
    for i, event in enumerate(events):
        producer.produce(topic, key=event["uid"].encode(), value=orjson.dumps(event))
        if i % 1000 == 0:
            producer.poll(0)
            if rate:
                time.sleep(max(0.0, started + i / rate - time.monotonic()))
    assert producer.flush(60) == 0


def metrics(settings: Settings) -> dict[str, float]:
    """The worker's counters; empty while its web server is not up yet."""
    try:
        status, _, text = http("GET", f"http://127.0.0.1:{settings.worker_web_port}/metrics/")
    except OSError:
        return {}
    assert status == 200, text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cardflow_people_") and "_total" in line:
            name, value = line.rsplit(" ", 1)
            values[name] = values.get(name, 0.0) + float(value)
    return values


def latest_changes(settings: Settings) -> dict[str, int]:
    """The highest profile version each user's profile changes name, read from the topic."""
    latest: dict[str, int] = {}
    for msg in read_topic(settings, settings.topic("profile-changes"), f"changes-{time.monotonic_ns()}"):
        change = AvroCodec.named("ProfileChange").decode(msg.value())
        latest[change["uid"]] = max(latest.get(change["uid"], 0), change["version"])
    return latest


def wait_profiles(settings: Settings, expected: dict[str, dict[str, Any]], timeout: float = 180) -> dict:
    last: list[str] = []

    def matches() -> dict | None:
        table = read_table(settings)
        got = {uid: summary(v["profile"]) for uid, v in table.items()}
        if got == expected:
            return table
        wrong = [u for u in expected if got.get(u) != expected[u]]
        extra = sorted(set(got) - set(expected))
        last[:] = [f"{len(got)}/{len(expected)} users, {len(wrong)} differ, extra {extra[:3]}"] + [
            f"{u}: got {got.get(u)} want {expected[u]}" for u in wrong[:2]]
        return None

    try:
        return wait_until(matches, timeout=timeout, interval=2, what="profiles to equal the ground truth")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {' | '.join(last)}") from None


def _pipeline(settings: Settings, service, events: list[dict[str, Any]]) -> tuple[bytes, Settings]:
    ensure_topics(settings)
    worker = service(["worker", "people"], settings)
    produce(settings, events)
    table = wait_profiles(settings, truth(events))
    assert worker.proc.poll() is None
    canonical = orjson.dumps({uid: v["profile"] for uid, v in table.items()}, option=orjson.OPT_SORT_KEYS)
    return canonical, settings


def test_order_independence_and_dedup(settings: Settings, service) -> None:
    events = make_events(10_000, 500)
    outcomes = []
    for order in range(3):
        shuffled = events[:]
        random.Random(order).shuffle(shuffled)
        variant = settings.replace(topic_prefix=f"{settings.topic_prefix}o{order}-",
                                   worker_web_port=free_port())
        outcomes.append(_pipeline(variant, service, shuffled)[0])
    assert outcomes[0] == outcomes[1] == outcomes[2], "profiles differ between orders"

    # Every event twice (some at once, some much later), plus junk and key-less records. The
    # events span 90 days of event time, so the dedup horizon (default 7 days) must cover that.
    doubled = events + events[::-1]
    variant = settings.replace(topic_prefix=f"{settings.topic_prefix}dup-", worker_web_port=free_port(),
                               dedup_horizon_days=120)
    ensure_topics(variant)
    worker = service(["worker", "people"], variant)
    produce(variant, doubled)
    junk = Producer(variant.kafka_client_config())
    for i in range(25):
        junk.produce(variant.topic("events"), value=b"not json %d" % i)
    extra = {"uid": "keyless", "event": "signup", "ts": T0}
    junk.produce(variant.topic("events"), value=json.dumps(extra).encode())
    assert junk.flush(30) == 0
    expected = truth([*events, extra])
    table = wait_profiles(variant, expected)
    without_extra = {uid: v["profile"] for uid, v in table.items() if uid != "keyless"}
    assert orjson.dumps(without_extra, option=orjson.OPT_SORT_KEYS) == outcomes[0]

    def balanced() -> dict[str, float] | None:
        m = metrics(variant)
        out = (m["cardflow_people_folded_total"] + m["cardflow_people_duplicates_total"]
               + m.get('cardflow_people_dead_lettered_total{reason="not_json"}', 0)
               + m["cardflow_people_rerouted_total"])
        return m if m["cardflow_people_consumed_total"] == len(doubled) + 26 + m[
            "cardflow_people_rerouted_total"] and out == m["cardflow_people_consumed_total"] else None

    m = wait_until(balanced, timeout=60, what="one in, one out counters to balance")
    assert m["cardflow_people_folded_total"] == len(events) + 1
    assert m["cardflow_people_duplicates_total"] == len(events)
    assert m['cardflow_people_dead_lettered_total{reason="not_json"}'] == 25
    assert worker.proc.poll() is None


def test_kill_9_mid_stream_then_rebuild_from_changelog(settings: Settings, service) -> None:
    ensure_topics(settings)
    events = make_events(200_000, 5_000, seed=7)
    expected = truth(events)
    worker = service(["worker", "people"], settings)
    feeder = threading.Thread(target=produce, args=(settings, events, 40_000))
    feeder.start()
    wait_until(lambda: metrics(settings).get("cardflow_people_folded_total", 0) > 30_000, timeout=120,
               what="the worker to be mid-stream")
    worker.stop(signal.SIGKILL)
    feeder.join()
    worker = service(["worker", "people"], settings)
    table = wait_profiles(settings, expected, timeout=300)
    assert worker.proc.poll() is None
    # Profile changes are at least once through the crash: each user's latest change names the
    # profile's final version (a batch folded but not flushed is re-read, and its changes re-sent).
    assert latest_changes(settings) == {uid: value["meta"]["version"] for uid, value in table.items()}

    # Lose the worker's disk: the profiles come back from the changelog.
    assert worker.stop() == 0
    shutil.rmtree(settings.data_dir / "workers")
    worker = service(["worker", "people"], settings)
    sample = random.Random(3).sample(sorted(expected), 300)

    def served() -> bool:
        for uid in sample:
            try:
                status, _, body = http("GET", f"http://127.0.0.1:{settings.worker_web_port}/profiles/{uid}/",
                                       timeout=5)
            except OSError:
                return False  # not listening yet
            if status != 200 or summary(body["profile"]) != expected[uid]:
                return False
        return True

    wait_until(served, timeout=180, interval=2, what="rebuilt profiles to be served")
    assert worker.proc.poll() is None


def test_profile_changes_lost_with_a_batch_are_sent_again_when_it_is_read_again(settings: Settings,
                                                                              service) -> None:
    # A batch folded into RocksDB whose profile changes the broker refused (their topic deleted):
    # the worker exits before committing; restarted, it reads the batch again as duplicates and
    # must send the changes again (before, they were lost: the users' last change was stale).
    from cardflow.connectors.kafka_admin import admin_client

    ensure_topics(settings)
    worker = service(["worker", "people"], settings)
    events = make_events(200, 10, seed=5)
    produce(settings, events[:100])
    wait_profiles(settings, truth(events[:100]), timeout=60)
    changes = settings.topic("profile-changes")
    admin = admin_client(settings)

    def delete_changes() -> None:
        for future in admin.delete_topics([changes]).values():
            future.result(30)
        wait_until(lambda: changes not in admin.list_topics(timeout=10).topics, timeout=30,
                   what="profile-changes to be deleted")

    delete_changes()
    produce(settings, events[100:])
    wait_until(lambda: worker.proc.poll() is not None, timeout=240,
               what="the worker to stop on the refused writes")
    assert worker.proc.returncode == 70, worker.output()
    # The local broker auto-creates a topic a client asks for, with one partition: the worker's
    # writes to the other partitions were refused. Start again from a topic as it should be.
    if changes in admin.list_topics(timeout=10).topics:
        delete_changes()
    ensure_topics(settings)
    service(["worker", "people"], settings)
    table = wait_profiles(settings, truth(events), timeout=120)

    def latest_versions() -> dict[str, int] | None:
        latest = latest_changes(settings)
        wanted = {uid: value["meta"]["version"] for uid, value in table.items()
                  if uid in {e["uid"] for e in events[100:]}}
        # (Users of earlier batches not committed yet when the worker stopped are re-sent too.)
        return latest if {uid: latest.get(uid) for uid in wanted} == wanted else None

    wait_until(latest_versions, timeout=60, what="every user of the lost batch to have its change sent again")


def test_second_worker_joins_and_leaves_while_events_flow(settings: Settings, service) -> None:
    ensure_topics(settings)
    events = make_events(60_000, 2_000, seed=11)
    first = settings.replace(worker_web_port=free_port())
    second = settings.replace(worker_web_port=free_port(), data_dir=settings.data_dir / "second")
    api_settings = settings.replace(worker_urls=(f"http://127.0.0.1:{first.worker_web_port}",
                                                 f"http://127.0.0.1:{second.worker_web_port}"))
    w1 = service(["worker", "people"], first)
    produce(settings, events[:5_000])
    base = start_api(service, api_settings)
    wait_until(lambda: http("GET", f"{base}/v1/profiles/u0")[0] == 200, timeout=90,
               what="the first profile")

    failures: list[Any] = []
    lookups = 0
    stop = threading.Event()

    def look_up() -> None:
        nonlocal lookups
        while not stop.is_set():
            status, _, body = http("GET", f"{base}/v1/profiles/u0", timeout=30)
            lookups += 1
            if status != 200:
                failures.append((status, body))
            time.sleep(0.05)

    looker = threading.Thread(target=look_up)
    looker.start()
    feeder = threading.Thread(target=produce, args=(settings, events[5_000:], 5_000))
    feeder.start()
    time.sleep(3)
    w2 = service(["worker", "people"], second)
    wait_until(lambda: metrics(second).get("cardflow_people_consumed_total", 0) > 0, timeout=60,
               what="the second worker to take partitions and fold")
    assert w2.proc.poll() is None
    assert w2.stop() == 0  # leaves while events still flow
    feeder.join()
    wait_profiles(settings, truth(events), timeout=240)
    stop.set()
    looker.join()
    assert w1.proc.poll() is None
    assert lookups > 50 and failures == [], failures[:3]


def test_lookup_and_read_your_writes(settings: Settings, service) -> None:
    ensure_topics(settings)
    service(["worker", "people"], settings)
    base = start_api(service, settings.replace(worker_urls=(f"http://127.0.0.1:{settings.worker_web_port}",)))
    assert http("GET", f"{base}/v1/profiles/nobody")[0] == 404
    batch = [{"uid": "ryw", "event": "view", "ts": T0 + i} for i in range(5)]
    status, _, body = http("POST", f"{base}/v1/events?wait=true", json.dumps(batch).encode(),
                           {"Content-Type": "application/json"})
    assert status == 202, body
    # No polling: the answer came only once the profile held all five events.
    status, _, found = http("GET", f"{base}/v1/profiles/ryw")
    assert status == 200 and found["profile"]["events"] == {"view": 5}


def test_wait_times_out_with_504_but_keeps_the_events(settings: Settings, service) -> None:
    ensure_topics(settings)
    base = start_api(service, settings.replace(wait_timeout_ms=1500, worker_urls=(
        f"http://127.0.0.1:{free_port()}",)))  # no worker: nothing folds
    status, _, body = http("POST", f"{base}/v1/events?wait=true",
                           json.dumps({"uid": "x", "event": "v", "ts": T0}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 504 and body["error"] == "not_yet_folded" and body["accepted"] == 1


def test_a_raising_profile_script_dead_letters_the_event(settings: Settings, service) -> None:
    from ..helpers import consume_all

    ensure_topics(settings)
    scripted = settings.replace(
        profile_scripts="cardflow.standard,tests.integration.fragile_scripts")
    worker = service(["worker", "people"], scripted)
    events = [{"uid": "f", "event": "view", "ts": T0 + i, "properties": {"explode": i == 1}}
              for i in range(3)]
    produce(settings, events)
    [letter] = [AvroCodec.named("DeadLetter").decode(m.value())
                for m in consume_all(settings, "events-dlq", 1)]
    assert letter["reason"] == "profile_script_error" and letter["detail"] == "fragile"
    assert "ZeroDivisionError" in letter["message"] and orjson.loads(letter["value"]) == events[1]
    table = wait_until(lambda: read_table(settings).get("f"), timeout=60, what="the profile")
    assert table["profile"]["events"] == {"view": 2} and table["profile"]["fragile_seen"] == 2
    assert worker.proc.poll() is None


def test_sent_event_ids_count_once_each_and_dedup_on_resend(settings: Settings, service) -> None:
    # Ids as clients send them: shared prefixes, short ones, long ones; each event sent twice.
    ensure_topics(settings)
    service(["worker", "people"], settings)
    ids = [f"evt_{n:010d}" for n in range(300)] + ["a", "b", "ajs-next-1f", "ajs-next-2e", "x" * 300]
    events = [{"uid": f"s{n % 3}", "event": "view", "ts": T0 + n * 1000, "event_id": event_id}
              for n, event_id in enumerate(ids)]
    produce(settings, events + events[::-1])
    expected = {f"s{k}": sum(1 for n in range(len(ids)) if n % 3 == k) for k in range(3)}

    def counted() -> dict[str, float] | None:
        m = metrics(settings)
        return m if m.get("cardflow_people_consumed_total") == 2 * len(ids) else None

    m = wait_until(counted, timeout=90, what="every record consumed")
    assert (m["cardflow_people_folded_total"], m["cardflow_people_duplicates_total"]) == (len(ids), len(ids))
    def views() -> dict[str, int] | None:
        table = read_table(settings)  # the changelog: written before the batch is acknowledged
        got = {uid: table[uid]["profile"]["events"]["view"] for uid in expected if uid in table}
        return got if got == expected else None

    wait_until(views, timeout=30, what="the profiles to count every sent id once")


def transactional_producer(settings: Settings) -> Producer:
    producer = Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random",
                         "transactional.id": f"{settings.topic_prefix}tx"})
    producer.init_transactions(30)
    return producer


def test_transaction_markers_do_not_hold_commits_back(settings: Settings, service) -> None:
    # A transactional producer's commit marker takes an offset in every partition it wrote. Read
    # as "no record" (before), a marker past a batch's last record looked like a backlog to fill
    # (nothing was folded in 180 s), and one nobody acknowledges holds Faust's commits back.
    ensure_topics(settings)
    service(["worker", "people"], settings)
    topic = settings.topic("events")
    producer = transactional_producer(settings)
    events = make_events(600, 40, seed=7)
    for start in range(0, len(events), 30):  # 20 transactions, ~20 markers a partition
        producer.begin_transaction()
        for event in events[start:start + 30]:
            producer.produce(topic, key=event["uid"].encode(), value=orjson.dumps(event))
        producer.commit_transaction(30)
    wait_profiles(settings, truth(events))
    m = metrics(settings)
    assert m["cardflow_people_consumed_total"] == m["cardflow_people_folded_total"] == len(events)
    # A commit passes every marker at once (left unacknowledged: one marker a commit interval of
    # 2.8 s, ~55 s for these).
    wait_commits_at_end(settings)


def wait_commits_at_end(settings: Settings, timeout: float = 15) -> None:
    """Wait until the worker's group has committed every partition of events up to its end."""
    topic = settings.topic("events")
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.topic_prefix + "people"})
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        lagging: dict[int, tuple[int, int]] = {}  # partition → (committed, end)

        def caught_up() -> bool:
            committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
            lagging.clear()
            lagging.update({p: (committed[p], end) for p, end in ends.items() if end and committed[p] < end})
            return not lagging

        try:
            wait_until(caught_up, timeout=timeout, what="commits at the end of every partition")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; (committed, end) per partition: {lagging}") from None
    finally:
        consumer.close()


def test_aborted_transactions_are_not_folded_and_open_ones_do_not_stall(settings: Settings,
                                                                          service) -> None:
    # Read uncommitted (before), the events of aborted transactions were folded; reading
    # committed, a batch must also end at the last stable offset, not wait for the records of
    # a transaction still open to fill it. All is written before the worker starts, so its
    # first batch meets the open transaction.
    ensure_topics(settings)
    topic = settings.topic("events")
    producer = transactional_producer(settings)
    events = make_events(900, 40, seed=11)
    kept: list[dict[str, Any]] = []

    def transaction(part: list[dict[str, Any]]) -> None:
        producer.begin_transaction()
        for event in part:
            producer.produce(topic, key=event["uid"].encode(), value=orjson.dumps(event))
        producer.flush(30)  # stored before the outcome, so aborted records are in the log

    for n, start in enumerate(range(0, 600, 30)):  # 20 transactions, every other one aborted
        transaction(events[start:start + 30])
        if n % 2:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            kept += events[start:start + 30]
    transaction(events[600:])  # left open: every partition's last stable offset stops before it
    service(["worker", "people"], settings)
    wait_profiles(settings, truth(kept), timeout=60)
    producer.commit_transaction(30)
    kept += events[600:]
    wait_profiles(settings, truth(kept), timeout=60)
    m = metrics(settings)
    assert m["cardflow_people_consumed_total"] == m["cardflow_people_folded_total"] == len(kept)
    wait_commits_at_end(settings)  # past the aborted records too


def test_a_filtered_script_sees_only_matching_events(settings: Settings, service) -> None:
    ensure_topics(settings)
    scripted = settings.replace(profile_scripts="cardflow.standard,tests.integration.fragile_scripts")
    service(["worker", "people"], scripted)
    names = ["video.start", "play", "pause", "video.end", "videos", "view", "play"]
    events = [{"uid": f"v{n % 4}", "event": names[n % len(names)], "ts": T0 + n,
               "properties": {"hd": n % 3 != 0}} for n in range(200)]
    produce(settings, events)
    expected = {uid: sum(1 for e in events if e["uid"] == uid and e["properties"]["hd"]
                         and (e["event"].startswith("video.") or e["event"] == "play"))
                for uid in ("v0", "v1", "v2", "v3")}

    def seen() -> dict[str, int] | None:
        table = read_table(settings)
        got = {uid: table[uid]["profile"].get("video_seen", 0) for uid in expected if uid in table
               and sum(table[uid]["profile"]["events"].values()) == 50}
        return got if len(got) == 4 else None

    assert wait_until(seen, timeout=60, what="every event folded") == expected
    assert 0 < sum(expected.values()) < len(events) / 2


def test_overrunning_and_failing_scripts_are_stopped_and_the_worker_folds_on(settings: Settings,
                                                                              service) -> None:
    from ..helpers import consume_all

    ensure_topics(settings)
    scripted = settings.replace(profile_scripts="cardflow.standard,tests.integration.fragile_scripts",
                                profile_script_timeout_ms=200, profile_script_max_failures=5)
    worker = service(["worker", "people"], scripted)
    normal = make_events(4000, 200, seed=11)
    stuck = [{"uid": f"u{n}", "event": "loop" if n % 2 else "sleep", "ts": T0 + n} for n in range(4)]
    broken = [{"uid": "b", "event": "broken.x", "ts": T0 + n} for n in range(8)]
    produce(settings, normal[:2000] + stuck + broken + normal[2000:])
    letters = [AvroCodec.named("DeadLetter").decode(m.value())
               for m in consume_all(settings, "events-dlq", 9)]
    timeouts = [d for d in letters if d["reason"] == "profile_script_timeout"]
    assert sorted(orjson.loads(d["value"])["ts"] for d in timeouts) == [e["ts"] for e in stuck]
    for letter in timeouts:
        assert letter["detail"] == "stuck" and "the budget is 200 ms" in letter["message"]
        ran_ms = int(letter["message"].split(" ran ")[1].split(" ms")[0])
        assert 200 < ran_ms < 2000  # cut at the budget: the script would run 60 s, or forever
    failed = [d for d in letters if d["reason"] == "profile_script_error"]
    assert [orjson.loads(d["value"])["ts"] for d in failed] == [e["ts"] for e in broken[:5]]
    assert {d["detail"] for d in failed} == {"broken"}
    # Every other event folded; the three after `broken` was disabled folded without it.
    wait_profiles(settings, truth(normal + broken[5:]))
    status, _, text = http("GET", f"http://127.0.0.1:{settings.worker_web_port}/metrics/")
    assert 'cardflow_profile_script_disabled{script="broken"} 1.0' in text
    assert 'cardflow_profile_script_disabled{script="stuck"} 0.0' in text
    assert 'cardflow_profile_script_skipped_total{script="broken"} 3.0' in text
    timeouts_metric = 'cardflow_profile_script_failures_total{reason="profile_script_timeout",script="stuck"}'
    assert f"{timeouts_metric} 4.0" in text
    assert worker.proc.poll() is None
