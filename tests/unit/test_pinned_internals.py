"""The private names of faust, aiokafka and mode the batch runtime (cardflow/batches.py)
copies or reads exist in the pinned versions: an upgrade that drops one fails here, loudly,
instead of in a worker."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest
from aiokafka.consumer.consumer import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher, FetchResult, PartitionRecords
from faust.transport.consumer import Consumer
from faust.transport.consumer import Fetcher as FaustFetcher
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from mode import Service

pytestmark = pytest.mark.unit

PINNED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "mode-streaming": "0.7.1"}


def _source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def test_the_pinned_versions_are_installed() -> None:
    assert {name: version(name) for name in PINNED} == PINNED


@pytest.mark.parametrize(("owner", "names"), [
    (AIOKafkaDriverConsumer, ["_drain_messages", "_wait_next_records", "_to_message", "_add_gap",
                              "_new_consumer_thread", "wait_first", "flow_active", "should_stop"]),
    (AIOKafkaConsumerThread, ["_create_worker_consumer", "_ensure_consumer", "on_start"]),
    (PartitionRecords, ["_consume_aborted_up_to", "_contains_abort_marker"]),
    (Service, ["should_stop"]),
])
def test_private_methods_exist(owner: type, names: list[str]) -> None:
    assert [n for n in names if not hasattr(owner, n)] == []


@pytest.mark.parametrize(("owner", "attributes"), [
    (Consumer, ["self.callback", "self.suspend_flow", "self._read_offset", "self._committed_offset",
                "self._acked", "self._acked_index",
                "self._n_acked", "self._gap", "self._buffered_partitions"]),
    (PartitionRecords, ["self._tp", "self._records", "self._isolation_level", "self._check_crcs",
                        "self._aborted_producers", "self.next_fetch_offset", "self._records_iterator"]),
    (Fetcher, ["self._records"]),
    (FetchResult, ["self._partition_records"]),
    (AIOKafkaConsumer, ["self._isolation_level", "self._fetcher"]),
    (Service, ["self._stopped"]),
])
def test_private_attributes_are_still_set(owner: type, attributes: list[str]) -> None:
    source = _source(owner)
    assert [a for a in attributes if a + " =" not in source and a + ":" not in source] == []


def test_the_fetcher_path_the_clean_stop_guards_is_unchanged() -> None:
    # BatchingConsumer._drain_messages returns on a cancellation while the app stops, because
    # Faust's fetcher then calls a supervisor a stopping fetcher does not have.
    source = _source(FaustFetcher._fetcher.fun)  # a mode ServiceTask
    assert "consumer._drain_messages(self)" in source and "self.supervisor.wakeup()" in source
