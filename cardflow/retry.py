"""Retrying a sink that does not answer, for as long as it takes: never skip, never crash."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Counter, Gauge

T = TypeVar("T")
log = logging.getLogger(__name__)


def until_done(attempt: Callable[[], T], retriable: type[BaseException] | tuple[type[BaseException], ...],
               what: str, retries: Counter, failing: Gauge, sleep: Callable[[float], None] = time.sleep,
               first: float = 0.2, cap: float = 10.0) -> T:
    """``attempt()`` until it returns, waiting ``first`` s after the first ``retriable`` failure and
    twice as long after each next one, up to ``cap``; counts retries, and ``failing`` is 1 meanwhile.
    Any other exception goes through (a mistake, not an outage)."""
    backoff = first
    while True:
        try:
            result = attempt()
        except retriable as exc:
            retries.inc()
            failing.set(1)
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, backoff)
            sleep(backoff)
            backoff = min(cap, backoff * 2)
            continue
        failing.set(0)
        return result


class Stopping(Exception):  # noqa: N818 - what happened, not an error
    """The process is stopping: a write being retried gives up. Its batch is not acknowledged,
    so the next run reads it again (nothing lost; the writes are idempotent)."""


def stoppable(stop: threading.Event) -> Callable[[float], None]:
    """A ``sleep`` for :func:`until_done` that raises :class:`Stopping` as soon as ``stop`` is set:
    a worker asked to stop while its sink is down exits instead of retrying until it is killed."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            log.info("stopping: the write being retried is given up; its batch is read again next run")
            raise Stopping("stopping while a write was being retried: its batch is read again next run")

    return sleep
