"""Retrying a sink: as long as it takes, except when the worker is stopping."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from cardflow.errors import WarehouseError
from cardflow.retry import Stopping, stoppable, until_done

pytestmark = pytest.mark.unit


def metrics() -> tuple[Counter, Gauge]:
    registry = CollectorRegistry()
    return Counter("r", "retries", registry=registry), Gauge("f", "failing", registry=registry)


def test_a_write_retried_until_it_is_taken() -> None:
    calls = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise WarehouseError("down")
        return "done"

    retries, failing = metrics()
    assert until_done(attempt, WarehouseError, "the warehouse", retries, failing, lambda s: None) == "done"
    assert retries._value.get() == 3 and failing._value.get() == 0  # noqa: SLF001 - prometheus values


def test_a_stopping_worker_gives_the_write_up_between_attempts() -> None:
    stop = threading.Event()
    attempts = []

    def attempt() -> None:
        attempts.append(1)
        threading.Timer(0.05, stop.set).start()  # SIGTERM arrives while the sink is down
        raise WarehouseError("down")

    retries, failing = metrics()
    with pytest.raises(Stopping, match="read again next run"):
        until_done(attempt, WarehouseError, "the warehouse", retries, failing, stoppable(stop), first=60)
    assert len(attempts) == 1  # the 60 s backoff was cut short, not waited out
    with pytest.raises(ValueError):  # a mistake is not an outage: never retried, stopping or not
        until_done(lambda: int("x"), WarehouseError, "the warehouse", retries, failing, stoppable(stop))
