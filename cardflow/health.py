"""Worker health, answered from a thread so that a blocked event loop is reported, not hidden.

``GET /healthz`` (liveness) is 503 when the event loop has not run for ``liveness_loop_blocked_s``
or a partition with lag (records past what the worker handled) made no progress for
``liveness_stall_s``. ``GET /readyz`` is 200 once the worker joined its group (an assignment was
received; it may be empty when there are more workers than partitions) and no table is being
recovered from its changelog. ``GET /metrics`` has the same as gauges. The server runs on
``worker_web_bind``:``worker_health_port`` (0: off) in a thread of its own: Faust's web server
shares the event loop it would have to report on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from cardflow.batches import BatchingApp
from cardflow.config import Settings
from cardflow.errors import ConfigError

log = logging.getLogger(__name__)
TICK_S = 0.2


class Health:
    """What the probes answer: fed by a loop ticker and the consumer's progress, read from a thread."""

    def __init__(
        self,
        app: BatchingApp,
        loop_blocked_s: float,
        stall_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app, self.loop_blocked_s, self.stall_s, self.clock = app, loop_blocked_s, stall_s, clock
        self.last_tick = clock()
        self.joined = False
        self._moved: dict[Any, tuple[int | None, float]] = {}  # partition → (handled offset, since)
        self.registry = CollectorRegistry()
        self.loop_lag = Gauge(
            "cardflow_worker_loop_lag_seconds", "time since the event loop last ran", registry=self.registry
        )
        self.ready_gauge = Gauge(
            "cardflow_worker_ready", "1 when the worker is ready", registry=self.registry
        )
        self.stalled_gauge = Gauge(
            "cardflow_worker_stalled_partitions",
            "partitions with lag and no progress for liveness_stall_s",
            registry=self.registry,
        )

    async def tick(self) -> None:
        self.last_tick = self.clock()

    def stalled(self) -> list[str]:
        """Partitions with records past the handled offset and no progress for ``stall_s``."""
        now, out = self.clock(), []
        for tp, (handled, high) in self.app.progress().items():
            behind = high is not None and high > (handled if handled is not None else -1) + 1
            before = self._moved.get(tp)
            if not behind or before is None or before[0] != handled:
                self._moved[tp] = (handled, now)
            elif now - before[1] > self.stall_s:
                out.append(
                    f"{tp.topic}[{tp.partition}] at offset {handled} of {high} for {now - before[1]:.0f} s"
                )
        return sorted(out)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        lag = self.clock() - self.last_tick
        stalled = self.stalled()
        self.loop_lag.set(lag)
        self.stalled_gauge.set(len(stalled))
        problems = []
        if lag > self.loop_blocked_s:
            problems.append(
                f"the event loop has not run for {lag:.1f} s (liveness_loop_blocked_s "
                f"{self.loop_blocked_s:g})"
            )
        problems += [f"no progress on {s} (liveness_stall_s {self.stall_s:g})" for s in stalled]
        return not problems, {
            "status": "ok" if not problems else "unhealthy",
            "problems": problems,
            "loop_lag_s": round(lag, 3),
            **self.reports(),
        }

    def reports(self) -> dict[str, Any]:
        """What the app's stages report beside the verdict (e.g. cards behind): never a failure."""
        out = {}
        for name, report in getattr(self.app, "health_reports", {}).items():
            try:
                out[name] = report()
            except Exception as exc:  # noqa: BLE001 - a report must not take the probe down
                out[name] = f"unavailable: {type(exc).__name__}: {exc}"
        return out

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        problems = []
        if not self.joined:
            problems.append("no partition assignment received yet")
        if self.app.recovering:
            problems.append("recovering tables from their changelogs")
        if self.clock() - self.last_tick > self.loop_blocked_s:
            problems.append("the event loop is blocked")
        self.ready_gauge.set(0 if problems else 1)
        return not problems, {"status": "ready" if not problems else "not ready", "problems": problems,
                              **self.reports()}


def watch_health(app: faust.App, settings: Settings) -> Health | None:
    """Feed a Health from ``app`` and serve it on ``worker_health_port`` (None when 0)."""
    if not settings.worker_health_port:
        return None
    assert isinstance(app, BatchingApp)
    health = Health(app, settings.liveness_loop_blocked_s, settings.liveness_stall_s)
    app.timer(TICK_S)(health.tick)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _joined(app: faust.App, assigned: object, **kwargs: object) -> None:
        health.joined = True

    host = settings.worker_web_bind or settings.worker_web_host
    try:
        server = ThreadingHTTPServer((host, settings.worker_health_port), _handler(health))
    except OSError as exc:
        raise ConfigError(
            f"the health server cannot listen on {host}:{settings.worker_health_port} "
            f"({exc.strerror}): set CARDFLOW_WORKER_HEALTH_PORT"
        ) from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    log.info("health on http://%s:%d/healthz and /readyz", host, settings.worker_health_port)
    return health


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/metrics":
                health.liveness()
                health.readiness()
                self._send(200, generate_latest(health.registry), CONTENT_TYPE_LATEST)
                return
            check = {"/healthz": health.liveness, "/readyz": health.readiness}.get(path)
            if check is None:
                self._send(404, b'{"error": "not_found", "message": "try /healthz, /readyz or /metrics"}')
                return
            try:
                ok, body = check()
            except Exception as exc:  # noqa: BLE001 - a probe that cannot tell is a failing probe
                ok, body = False, {"status": "unknown", "problems": [f"health check failed: {exc!r}"]}
            self._send(200 if ok else 503, json.dumps(body).encode())

        def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


__all__ = ["Health", "watch_health"]
