"""Card maps in a child process, and its supervisor.

The child (agents/map_child.py) reads the partitions' profiles and keeps the incremental
cards' partials; one partial per card comes back.
A child process, not a thread, because a card that loops forever must be
stopped: the parent (``MapProcess``) kills the child when a card overruns its
budget, publishes an error partial for it and starts a new child. It also
keeps card code off the worker's event loop and GIL.
"""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cardflow.agents.card_metrics import CardMetrics
from cardflow.batches import FAUST_KEY_PREFIX
from cardflow.card_results import Partial
from cardflow.cards import Card

if TYPE_CHECKING:
    from cardflow.config import Settings

LOAD_TIMEOUT_S = 120.0  # reading and decoding one partition; card budgets start after it


class MapProcess:
    """Runs card maps in a child process; kills and restarts it when a card overruns its budget.

    ``run`` blocks: call it from a thread (the scheduler uses a one-thread executor).
    """

    def __init__(self, settings: Settings, cards: dict[str, Card], metrics: CardMetrics,
                 workdir: Path) -> None:
        self.settings = settings
        self.cards = cards
        self.metrics = metrics
        # The child's secondary RocksDB instances. Under the worker's own data directory, not the
        # system's temp: a killed worker's is removed by the next start (close() removes it too).
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        self._workdir = str(workdir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    def _start(self) -> Connection:
        # A fresh interpreter running map_child, not multiprocessing's spawn: never fork a process
        # running asyncio and librdkafka, and spawn would import the worker's main script (the
        # `cardflow` command: Faust, aiokafka, pydantic; ~40 MiB) into the child for nothing.
        parent, child = multiprocessing.Pipe()
        command = [sys.executable, "-m", "cardflow.agents.map_child", str(child.fileno())]
        self._proc = subprocess.Popen(command, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        s = self.settings
        parent.send((sys.path, s.cards, s.profile_scripts, s.card_params, self._workdir, s.cards_incremental,
                     FAUST_KEY_PREFIX))
        self._conn = parent
        return parent

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before its first job or after a kill)."""
        return self._proc.pid if self._proc is not None else None

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None:
            proc.kill()
            proc.wait(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        self._kill()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def run(self, partition: int, db_path: Path, card_ids: list[str],
            on_partial: Callable[[Partial], Any] | None = None,
            changed: list[tuple[bytes, bytes | None]] | None = None,
            resting: frozenset[str] = frozenset()) -> tuple[list[Partial], list[str]]:
        """Partials for ``card_ids`` over one partition, and the ids of the cards that overran their
        budget or ended the map process (each gets an error partial).
        ``on_partial`` (from this thread) gets each partial as soon as it is made. ``changed``: the
        profiles changed since this partition's last run, ``(key, stored value or None)`` as the
        worker's table has them, or None to read them all. Every
        incremental card takes the changes, due or not (the child keeps one previous version of
        each profile, so all must move together) but those ``resting`` after an overrun (they are
        built again from the whole partition when they next run); only ``card_ids`` publish."""
        partials: list[Partial] = []
        due = set(card_ids)

        def keep(partial: Partial) -> None:
            partials.append(partial)
            if on_partial is not None:
                on_partial(partial)

        overran: list[str] = []
        kept = self.settings.cards_incremental
        pending = list(card_ids) + [c for c, card in self.cards.items()
                                    if kept and card.incremental() and c not in due and c not in resting]
        while pending:
            conn = self._conn if self._alive() else None
            if conn is None:
                self._kill()
                conn = self._start()  # a new child has no profiles cached: it reads them all
            conn.send((partition, str(db_path), pending, due, changed))
            if not conn.poll(LOAD_TIMEOUT_S):
                self._kill()
                raise TimeoutError(f"card maps: reading partition {partition} took over {LOAD_TIMEOUT_S}s")
            _, count, seconds, offset, max_ts = conn.recv()
            self.metrics.load_seconds.observe(seconds)
            while pending:
                card = self.cards[pending[0]]
                problem = None
                if not conn.poll(card.budget):
                    problem = (f"map ran longer than its budget of {card.budget:g}s over {count} profiles; "
                               "stopped (make it faster or raise the card's budget)")
                else:
                    try:
                        data = conn.recv_bytes()
                        partial = Partial.decode(data) if data else None
                    except (EOFError, OSError):
                        code = self._proc.wait(5) if self._proc is not None else None
                        problem = (f"map ended the map process (exit code {code}), e.g. by "
                                   "sys.exit() or a crash in native code")
                if problem is not None:
                    # Stop the card (a new map process starts) and go on with the rest.
                    self._kill()
                    pending.pop(0)
                    overran.append(card.id)
                    self.metrics.maps.labels(card.id, "overran" if "budget" in problem else "crashed").inc()
                    keep(Partial(card.id, card.version, partition, b"null", max_ts, offset,
                                 int(time.time() * 1000), card.budget * 1000, problem, card.config))
                    break
                pending.pop(0)
                if partial is None:
                    continue  # brought up to date, not due
                keep(partial)
                self.metrics.maps.labels(card.id, "error" if partial.error else "ok").inc()
                self.metrics.map_seconds.labels(card.id).observe(partial.run_ms / 1000)
        return partials, overran
