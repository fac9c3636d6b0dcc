"""What every scenario shares: seeded data, the one broker, rounds of alternating contenders,
measuring processes, and the results (a printed table and a JSON file).

A scenario is a function ``run(bench: Bench) -> Result``. It measures cardflow and its baselines
in the same invocation, alternating their order round by round, and reports the medians; the
ratios it publishes are between numbers measured minutes apart on the same machine.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from cardflow.config import Settings, load_settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.kafka_clients import producer_config
from cardflow.local_kafka import LocalKafka, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DAY_MS = 86_400_000

# A realistic mix: mostly views, some features and searches, few purchases and sign-ups.
EVENT_MIX = (("page_view", 60), ("feature_used", 25), ("search", 10), ("purchase", 3), ("signup", 2))


# Data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    """Deterministic events: users Zipf-distributed (s = 1: user k weighs 1 / (k + 1)), the event
    mix above, properties on every event, ``$set`` on 5 %, times spread over ``days`` days up to
    ``now_ms``. The same arguments give the same bytes."""

    users: int
    events: int
    days: int = 30
    seed: int = 1
    now_ms: int = 0  # 0: the start of today (UTC), so a day's runs share their data

    def records(self) -> list[tuple[bytes, bytes]]:
        """(key, value) pairs, the value a JSON event as any producer would send it."""
        rng = random.Random(self.seed)
        cum, total = [], 0.0
        for k in range(self.users):
            total += 1.0 / (k + 1)
            cum.append(total)
        picks = rng.choices(range(self.users), cum_weights=cum, k=self.events)
        names = [name for name, weight in EVENT_MIX for _ in range(weight)]
        now = self.now_ms or int(time.time() // 86_400 * DAY_MS)
        span = self.days * DAY_MS
        out = []
        for i, user in enumerate(picks):
            uid = f"user-{user}"
            name = rng.choice(names)
            props: dict[str, Any] = {
                "path": f"/p/{rng.randrange(50)}",
                "n": i,
                "browser": rng.choice(("firefox", "chrome", "safari")),
            }
            if name == "purchase":
                props["amount"] = rng.randrange(1, 500)
            event: dict[str, Any] = {
                "uid": uid,
                "event": name,
                "ts": now - rng.randrange(span),
                "event_id": f"{self.seed}-{i}",
                "properties": props,
            }
            if rng.random() < 0.05:
                event["$set"] = {
                    "plan": rng.choice(("free", "team", "pro")),
                    "country": rng.choice("ABCDEFG"),
                }
            out.append((uid.encode(), orjson.dumps(event)))
        return out

    def distinct_users(self, records: list[tuple[bytes, bytes]]) -> int:
        return len({key for key, _ in records})


def produce(settings: Settings, records: list[tuple[bytes, bytes]], topic: str = "events") -> None:
    """Every record to ``topic`` (keyed, partitioned as the SDK does), waiting for all acks."""
    _produce(_bulk_producer(settings), settings.topic(topic), records)


def produce_held(
    settings: Settings, records: list[tuple[bytes, bytes]], topic: str = "events"
) -> Callable[[], None]:
    """Every record to ``topic`` inside one transaction, left open: a ``read_committed`` consumer
    (the people worker) sees none of them until the returned function commits, and then all at
    once — a backlog that appears at a known moment in front of a worker that is already up."""
    producer = _bulk_producer(
        settings, **{"transactional.id": f"bench-{time.time_ns()}", "transaction.timeout.ms": 900_000}
    )
    producer.init_transactions(60)
    producer.begin_transaction()
    _produce(producer, settings.topic(topic), records)
    return lambda: producer.commit_transaction(120)


def _bulk_producer(settings: Settings, **extra: Any) -> Producer:
    return Producer(
        producer_config(
            settings,
            **{"linger.ms": 50, "batch.num.messages": 10_000, "queue.buffering.max.messages": 2_000_000},
            **extra,
        )
    )


def _produce(producer: Producer, name: str, records: list[tuple[bytes, bytes]]) -> None:
    for key, value in records:
        while True:
            try:
                producer.produce(name, value, key)
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(300) != 0:
        raise RuntimeError(f"{len(producer)} record(s) not acknowledged by the broker")


# Processes -------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def peak_rss_mib(pid: int) -> float:
    """The largest peak resident set of ``pid`` and its children (each process's VmHWM)."""
    peak = 0
    for p in tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        peak = max(
            peak, next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0)
        )
    return peak / 1024


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def counter(port: int, name: str) -> float:
    """A metric's value summed over its label sets (``name`` may carry the labels)."""
    return sum(
        float(line.split()[-1])
        for line in metrics(port).splitlines()
        if line.startswith(name + " ") or (line.startswith(name + "{") and "{" not in name)
    )


class Worker:
    """``cardflow worker <kind>`` (or another cardflow command) as a process, its log kept."""

    def __init__(self, settings: Settings, *args: str, log: Path) -> None:
        self.settings, self.log_path, self.args = settings, log, args
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cardflow", *args],
            env={**os.environ, **settings.to_env()},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"cardflow {' '.join(self.args)} exited ({self.proc.returncode}); the end of its log:\n"
                + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
            )

    def counter(self, name: str) -> float:
        return counter(self.settings.worker_web_port, name)

    def wait_counter(self, name: str, at_least: float, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while (value := self.counter(name)) < at_least:
            self.alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} at {value} after {timeout} s (waited for {at_least})")
            time.sleep(0.05)
        return value

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()


def wait_ready(worker: Worker, timeout: float = 120) -> None:
    """Until the worker's ``/readyz`` answers 200 (it joined its group and holds its partitions)."""
    url = f"http://127.0.0.1:{worker.settings.worker_health_port}/readyz"
    deadline = time.monotonic() + timeout
    while True:
        worker.alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout} s")
        time.sleep(0.02)


def timed_counter(worker: Worker, name: str, n: int, release: Callable[[], None]) -> dict[str, float]:
    """Rate of ``name`` until it reaches ``n``, with the worker's CPU seconds and peak RSS over that
    window, timed from ``release()``, called once the worker is ready: the whole backlog, none of
    the start-up (see ``produce_held``; timed from readiness alone, a worker had folded most of a
    backlog while starting)."""
    wait_ready(worker)
    cpu0 = cpu_seconds(worker.proc.pid)
    release()
    started, first = time.perf_counter(), worker.counter(name)
    worker.wait_counter(name, n)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(worker.proc.pid) - cpu0
    return {
        "events_per_s": (n - first) / elapsed,
        "cpu_s_per_1m": cpu / max(n - first, 1) * 1_000_000,
        "peak_rss_mib": peak_rss_mib(worker.proc.pid),
    }


# Rounds ----------------------------------------------------------------------------------------


class Progress:
    """One line saying what runs now (rewritten in place on a terminal)."""

    def __init__(self, scenario: str) -> None:
        self.scenario, self.started = scenario, time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, what: str) -> None:
        line = f"[{self.scenario} {time.monotonic() - self.started:6.0f}s] {what}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


Contender = Callable[[int], dict[str, float]]


def alternate(
    rounds: int,
    contenders: dict[str, Contender],
    progress: Progress,
    before_round: Callable[[int], None] | None = None,
) -> dict[str, list[dict[str, float]]]:
    """Each contender once per round, the order rotated each round so none always runs first
    (or always right after the broker's busiest moment)."""
    names = list(contenders)
    out: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(rounds):
        if before_round is not None:
            progress(f"round {r + 1}/{rounds}: preparing")
            before_round(r)
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            progress(f"round {r + 1}/{rounds}: {name}")
            out[name].append(contenders[name](r))
    return out


def medians(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k in rows[0] if all(isinstance(r.get(k), int | float) for r in rows)] if rows else []
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


# Results ---------------------------------------------------------------------------------------


@dataclass
class Target:
    what: str
    value: float | None
    target: str  # e.g. ">= 3" or "<= 0.5 s"
    met: bool | None

    def text(self) -> str:
        shown = (
            "—"
            if self.value is None
            else f"{self.value:,.0f}"
            if abs(self.value) >= 100
            else f"{self.value:.3g}"
        )
        verdict = {True: "met", False: "NOT met", None: "not measured"}[self.met]
        return f"{self.what}: {shown} (target {self.target}): {verdict}"


def target(what: str, value: float | None, op: str, bound: float, unit: str = "") -> Target:
    met = None if value is None else (value >= bound if op == ">=" else value <= bound)
    return Target(what, value, f"{op} {bound:g}{unit}", met)


@dataclass
class Result:
    """One scenario's run: every contender's rounds and medians, ratios, targets, notes."""

    scenario: str
    params: dict[str, Any]
    contenders: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: str | None = None  # the component this scenario measures does not exist
    tables: dict[str, list[list[Any]]] = field(default_factory=dict)  # extra tables: title → rows

    def as_json(self, machine_info: dict[str, Any], command: str, seconds: float) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": command,
            "seconds": round(seconds, 1),
            "machine": machine_info,
            "params": self.params,
            "missing": self.missing,
            "contenders": {
                name: {"rounds": rows, "median": medians(rows)} for name, rows in self.contenders.items()
            },
            "ratios": self.ratios,
            "targets": [t.__dict__ for t in self.targets],
            "notes": self.notes,
            "tables": self.tables,
        }


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": mem,
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import confluent_kafka

    out = {"kafka": load_settings(env={}).kafka_version, "librdkafka": confluent_kafka.libversion()[0]}
    for dist in (
        "cardflow",
        "confluent-kafka",
        "faust-streaming",
        "aiokafka",
        "rocksdict",
        "chdb",
        "bitmapist",
        "redis",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    try:
        out["cardflow_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    if shutil.which("redis-server"):
        out["redis-server"] = (
            subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
            .stdout.split("v=")[-1]
            .split()[0]
        )
    return out


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return "—" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def table(result: Result) -> str:
    """The printed form: one row per contender (its medians), then ratios, targets, notes."""
    lines = [f"== {result.scenario} =="]
    if result.missing:
        return "\n".join([*lines, f"not measured: {result.missing}"])
    keys: list[str] = []
    for rows in result.contenders.values():
        keys += [k for k in medians(rows) if k not in keys]
    lines.append(" | ".join(["contender (median of rounds)", *keys]))
    for name, rows in result.contenders.items():
        m = medians(rows)
        lines.append(" | ".join([f"{name} ×{len(rows)}", *(cell(m.get(k)) for k in keys)]))
    for title, extra in result.tables.items():
        lines.append(f"-- {title}")
        lines += [" | ".join(cell(c) for c in row) for row in extra]
    lines += [f"ratio {k}: {v:.3f}" for k, v in result.ratios.items()]
    lines += [t.text() for t in result.targets]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


# The bench -------------------------------------------------------------------------------------


LEVELS = ("smoke", "quick", "full")  # smoke: tiny sizes, one round, for the test that keeps this honest


class Bench:
    """One invocation: a temporary directory, one broker shared by every scenario (started here on
    free loopback ports unless ``broker`` names a running one), the sizes (``level``), and where
    results go."""

    def __init__(
        self, level: str, rounds: int | None, out: Path, keep: bool = False, broker: str | None = None
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.level, self.quick, self.out, self.keep = level, level != "full", out, keep
        self.rounds = rounds if rounds is not None else {"smoke": 1, "quick": 2, "full": 3}[level]
        self.tmp = Path(tempfile.mkdtemp(prefix="cardflow-bench-"))
        self._external = broker
        self._broker: LocalKafka | None = None
        self._base: Settings | None = None
        self._n = 0
        self._moto: Any = None
        self.moto_url = ""

    def size(self, quick: int, full: int, smoke: int | None = None) -> int:
        """The size for this level (smoke: ``smoke``, else a fiftieth of quick)."""
        if self.level == "smoke":
            return smoke if smoke is not None else max(1, quick // 50)
        return quick if self.quick else full

    @property
    def base(self) -> Settings:
        if self._base is None:
            port = free_port()
            self._base = load_settings(
                env={},
                data_dir=self.tmp,
                kafka_port=port,
                kafka_controller_port=free_port(),
                broker=self._external or f"127.0.0.1:{port}",
                partitions=8,
                worker_web_port=free_port(),
                api_port=free_port(),
                worker_health_port=free_port(),
                log_level="warning",
                kafka_heap="1g",
                cards=(),
            )
            if self._external is None:
                self._broker = LocalKafka(self._base)
                self._broker.start()
        return self._base

    def settings(self, name: str, **overrides: Any) -> Settings:
        """Fresh topics (their own prefix), data directory and ports for one run."""
        self._n += 1
        data_dir = self.tmp / f"{name}-{self._n}"
        data_dir.mkdir(parents=True)
        here = self.base.replace(
            topic_prefix=f"{name}{self._n}-",
            data_dir=data_dir,
            worker_web_port=free_port(),
            api_port=free_port(),
            worker_health_port=free_port(),
            **overrides,
        )
        ensure_topics(here)
        return here

    def s3(self) -> str:
        """The endpoint of moto's S3 server (started once, on a free loopback port)."""
        if self._moto is None:
            from moto.server import ThreadedMotoServer

            os.environ.update(
                AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
            )
            port = free_port()
            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            self._moto.start()
            self.moto_url = f"http://127.0.0.1:{port}"
            import boto3

            boto3.client("s3", endpoint_url=self.moto_url).create_bucket(Bucket="bench")
        return self.moto_url

    def close(self) -> None:
        if self._moto is not None:
            self._moto.stop()
        if self._broker is not None:
            self._broker.stop()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, result: Result, command: str, seconds: float) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        day = dt.date.today().isoformat()
        suffix = "" if self.level == "full" else f"-{self.level}"
        path = self.out / f"{result.scenario}-{day}{suffix}.json"
        data = result.as_json(machine(), command, seconds)
        data["level"] = self.level
        path.write_text(json.dumps(data, indent=1, default=str) + "\n")
        return path


def lines_of(proc: subprocess.Popen[str], prefix: str = "BENCH ") -> Iterator[dict[str, Any]]:
    """The JSON lines a peer process prints (``BENCH {...}``), other output skipped."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            yield json.loads(line[len(prefix) :])
