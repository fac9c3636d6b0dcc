"""Where a key lives: the one partition function, the Java client's (murmur2).

Faust, aiokafka, the Java client and librdkafka's ``murmur2_random`` put a key
on the same partition; everything cardflow places by key (a user's events,
profile and dead letters, a card's partials) goes through this function.
"""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2


@functools.lru_cache(maxsize=1 << 20)  # murmur2 in Python costs ~5 µs; users recur in every batch
def partition_of(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` under the Java (murmur2) partitioner."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
