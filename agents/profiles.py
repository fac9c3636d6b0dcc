"""The profiles agent: whole fetched batches of ``events``, folded one at a time.

Batches come from the batch runtime (``BatchingApp.batches``, cardflow/batches.py),
one at a time, as a ``concurrency=1`` agent would get them, without Faust's
per-record stream path; ``ProfileFolder`` (agents/folder.py) folds each.
An unexpected error, or a record the broker did not store, ends the process
at once, before anything commits; the batch is then consumed again and
deduplicated, and each profile is written back, so the changelog catches up
with the local store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Iterator
from typing import Any

import faust

from cardflow.agents.folder import ProfileFolder
from cardflow.agents.gc_policy import BatchCollector
from cardflow.batches import BatchingApp, RecordRun

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 60.0


@contextlib.contextmanager
def _exit_on_failure() -> Iterator[None]:
    """End the process at once on an unexpected error, before the batch's offsets commit."""
    try:
        yield
    except asyncio.CancelledError:
        raise
    except BaseException:
        log.critical("profiles batch failed; exiting before its offsets commit", exc_info=True)
        logging.shutdown()
        os._exit(70)


def fold_profiles(app: BatchingApp, events: faust.TopicT, folder: ProfileFolder) -> None:
    """The profiles stage: whole fetched batches of ``events`` (see cardflow/batches.py), one at
    a time, so it has the ``concurrency=1`` a table-updating agent needs; ``folder`` writes the
    profiles table, profile-changes and events-dlq."""

    collector = BatchCollector()
    committing: asyncio.Future[None] | None = None  # the last batch with derived events: its commit

    async def fold(runs: list[RecordRun]) -> Awaitable[None]:
        nonlocal committing
        started = time.perf_counter()
        if folder.derived is not None and folder.derived.stale:  # first, as ledgers are read
            with _exit_on_failure():
                await asyncio.get_running_loop().run_in_executor(None, folder.derived.load_marks)
        with _exit_on_failure():
            with collector.paused():
                folder.process(runs)
            derived = folder.derived.take() if folder.derived is not None else None
        before, commit = committing, None
        if derived is not None:  # derived events commit one batch at a time, in batch order
            commit = committing = asyncio.get_running_loop().create_future()
        # Acknowledged once written; the next batch is fetched meanwhile.
        return asyncio.ensure_future(written(started, derived, before, commit))

    async def written(started: float, derived: Any, before: asyncio.Future[None] | None,
                      commit: asyncio.Future[None] | None) -> None:
        loop = asyncio.get_running_loop()
        with _exit_on_failure():
            try:
                await loop.run_in_executor(None, folder.sink.flush, FLUSH_TIMEOUT_S)
            except asyncio.CancelledError:
                # Stopping: finish the batch's writes, then let the cancellation through (unacked;
                # its derived events are sent again from the ledger: agents/derived.py).
                folder.sink.flush(FLUSH_TIMEOUT_S)
                if commit is not None:
                    commit.cancel()  # later batches' derived events wait for this one: unacked too
                raise
            folder.note_delivered()
            if derived is not None:
                assert folder.derived is not None and commit is not None
                if before is not None:
                    await before  # the previous batch's transaction first: marks only grow
                await loop.run_in_executor(None, folder.derived.commit, derived)
                commit.set_result(None)
        folder.metrics.batch_seconds.observe(time.perf_counter() - started)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _forget_cache(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        # Partitions may have been written by another worker (or recovered) since: re-read all.
        # No batch runs meanwhile (a rebalance waits for the one in flight; the flow is stopped).
        folder.cache.clear()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _marks_stale(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        # Before every rebalance's assignment (awaited, unlike the assigned signal's handlers,
        # before fetching resumes): partitions may come with marks other workers committed.
        if folder.derived is not None:
            folder.derived.stale = True

    app.batches(events, fold)
