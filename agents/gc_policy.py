"""The cyclic garbage collector's schedule in a worker that holds many long-lived objects."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator


class BatchCollector:
    """The cyclic GC's schedule in a worker that holds many long-lived objects.

    A batch allocates ~10 objects a record that live until it ends, and the
    profile cache keeps ~10 a user: generational collections kept re-scanning
    both (8-20 % of a busy worker). So the GC is paused while a batch is
    processed, everything alive after it is frozen out of the GC (our values
    are acyclic, freed by reference counting), and every ``full_every``
    seconds one full collection, over the unfrozen heap, reclaims any cyclic
    garbage that was frozen meanwhile.
    """

    def __init__(self, full_every: float = 300.0) -> None:
        self.full_every = full_every
        self.last_full = time.monotonic()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        gc.disable()
        try:
            yield
        finally:
            if time.monotonic() - self.last_full > self.full_every:
                gc.unfreeze()
                gc.collect()
                self.last_full = time.monotonic()
            gc.freeze()
            gc.enable()
