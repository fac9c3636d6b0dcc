"""`cardflow dev`: the whole stack on one machine until Ctrl-C.

Each service runs as its own child process, as it would in production, so a
crash in one is seen and stops the rest instead of hanging.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from cardflow.config import Settings
from cardflow.connectors.kafka_admin import ensure_topics
from cardflow.demo import run_demo, seed_history
from cardflow.local_kafka import LocalKafka, free_port

# The commands of the stack's services; the Helm chart's pods run the same (a test compares them).
SERVICES = {"worker people": ["worker", "people"], "worker archive": ["worker", "archive"],
            "worker warehouse": ["worker", "warehouse"], "api": ["api"]}


def _uses_local_broker(settings: Settings, broker: LocalKafka) -> bool:
    return settings.broker.replace("localhost", "127.0.0.1") == broker.bootstrap


def _spawn(args: list[str], config: str | None, log: Path, **overrides: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **overrides}
    if config:
        env["CARDFLOW_CONFIG"] = str(Path(config).resolve())
    out = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    return subprocess.Popen([sys.executable, "-m", "cardflow", *args], env=env,
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _stop(*procs: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM to all at once, then each is waited for until one shared deadline (stopping them
    one by one added their grace periods up); SIGKILL for any still running at it."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{proc.args!r} did not stop within {grace:.0f} s: killed", file=sys.stderr, flush=True)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


class Watcher:
    """The files of the configured cards and profile scripts (``.py`` paths, directories, and the
    files of modules outside site-packages), and whether any changed since the last look."""

    def __init__(self, settings: Settings) -> None:
        named = (*settings.cards, *settings.profile_scripts)
        self.paths = sorted({p for path in named for p in _files_of(path)})
        self.seen = self._stamps()

    def _stamps(self) -> dict[Path, float]:
        stamps = {}
        for path in self.paths:
            for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
                try:
                    stamps[file] = file.stat().st_mtime
                except OSError:
                    stamps[file] = -1.0  # deleted: a change too
        return stamps

    def changed(self) -> list[Path]:
        now = self._stamps()
        changed = sorted(f for f in now.keys() | self.seen.keys() if now.get(f) != self.seen.get(f))
        self.seen = now
        return changed


def _files_of(path: str) -> list[Path]:
    if path.endswith(".py") or "/" in path:
        return [Path(path).expanduser().resolve()]
    import importlib.util

    try:
        spec = importlib.util.find_spec(path.partition(":")[0])
    except (ImportError, ValueError):
        return []
    if spec is None or spec.origin is None or "site-packages" in spec.origin:
        return []  # installed code does not change under a developer's hands
    return [Path(spec.origin).resolve()]


def run_dev(settings: Settings, rate: float = 20.0, config: str | None = None, watch: bool = False,
            history: int = 60) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code (non-zero when a service died)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    broker = LocalKafka(settings)
    started_broker = False
    if _uses_local_broker(settings, broker):
        started_broker = not broker.status().running
        print(f"Kafka: {broker.start()}", flush=True)
    else:
        print(f"Kafka: using {settings.broker}", flush=True)

    children: dict[str, subprocess.Popen[bytes]] = {}
    demo_error: list[BaseException] = []
    code = 0
    try:
        for name, outcome in sorted(ensure_topics(settings).items()):
            print(f"topic {name}: {outcome}", flush=True)
        if history:
            seeded = seed_history(settings, history)
            print(f"history: {seeded} events over {history} days" if seeded else
                  "history: events are there already; none added", flush=True)
        logs = settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        children["worker people"] = _spawn(SERVICES["worker people"], config, logs / "people.log")
        # Raw events to the local lake (data_dir/lake unless CARDFLOW_LAKE_URL), on a web port of its own.
        children["worker archive"] = _spawn(SERVICES["worker archive"], config, logs / "archive.log",
                                            CARDFLOW_WORKER_WEB_PORT=str(free_port()))
        # Events and users to the warehouse (chDB under data_dir unless CARDFLOW_WAREHOUSE_URL), which
        # owns its directory and answers the API's insights and SQL on its web port.
        warehouse_port = free_port()
        children["worker warehouse"] = _spawn(SERVICES["worker warehouse"], config, logs / "warehouse.log",
                                              CARDFLOW_WORKER_WEB_PORT=str(warehouse_port))
        warehouse_url = settings.warehouse_worker_url or f"http://127.0.0.1:{warehouse_port}"
        children["api"] = _spawn(SERVICES["api"], config, logs / "api.log",
                                 CARDFLOW_WAREHOUSE_WORKER_URL=warehouse_url)
        base = f"http://{settings.api_host}:{settings.api_port}"
        if not _wait_http(f"{base}/healthz", children["api"]):
            print(f"error: the API did not come up; see {logs / 'api.log'}", file=sys.stderr)
            return 1
        print(f"Dashboard: {base}/  insights: {base}/insights  (cards {base}/v1/cards, "
              f"events POST {base}/v1/events, "
              f"profiles {base}/v1/profiles/<uid>, health {base}/healthz, metrics {base}/metrics)")
        print(f"Logs: {logs}. Press Ctrl-C to stop.", flush=True)

        def demo() -> None:
            try:
                run_demo(settings, stop, rate)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                demo_error.append(exc)

        if rate > 0:
            threading.Thread(target=demo, name="demo", daemon=True).start()
        watcher = Watcher(settings) if watch else None
        if watcher is not None:
            print(f"Watching {len(watcher.seen)} files of cards and profile scripts", flush=True)
        while not stop.wait(0.5):
            if watcher is not None and (changed := watcher.changed()):
                # The broker, topics, API and other workers stay; the people worker loads them anew.
                print(f"changed: {', '.join(str(f) for f in changed)}; restarting the people worker",
                      flush=True)
                _stop(children["worker people"])
                children["worker people"] = _spawn(SERVICES["worker people"], config, logs / "people.log")
                continue
            if watcher is not None and children["worker people"].poll() is not None:
                print("error: the people worker stopped (a mistake in a card or script? see "
                      f"{logs / 'people.log'}); waiting for a change to try again", file=sys.stderr,
                      flush=True)
                watcher.changed()
                while not stop.wait(0.5) and not watcher.changed():
                    pass
                children["worker people"] = _spawn(SERVICES["worker people"], config, logs / "people.log")
                continue
            dead = [name for name, proc in children.items() if proc.poll() is not None]
            if dead or demo_error:
                why = demo_error[0] if demo_error else f"{', '.join(dead)} exited"
                print(f"error: {why}; stopping everything. Logs: {logs}", file=sys.stderr)
                code = 1
                break
    finally:
        stop.set()
        _stop(*children.values())
        if started_broker:
            broker.stop()
        print("cardflow dev stopped.", flush=True)
    return code
