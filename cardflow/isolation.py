"""Isolation of user code: a time budget per call, and read-only views of other scripts' fields.

The budget interrupts a profile script that runs too long (an endless loop, a pathological
input) with :class:`ScriptTimeout`. A watchdog thread notices the overrun and sends a signal
to the main thread, whose handler raises there, but only while a script is still running (the
handler checks on the main thread, so a script that just returned is never interrupted).
Python code is interrupted at its next bytecode and blocking calls (``time.sleep``, socket
reads) by the signal; one C call that holds the GIL without returning (a catastrophic regex)
cannot be interrupted in-process: the worker's liveness probe reports it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

# A real-time signal: SIGALRM is pytest-timeout's and mode's, SIGUSR1/2 are mode's.
BUDGET_SIGNAL = signal.SIGRTMIN + 3


class ScriptTimeout(BaseException):
    """A script overran its time budget. A BaseException, so a script's own ``except Exception``
    does not swallow it."""

    def __init__(self, script: str, budget_s: float, elapsed_s: float) -> None:
        super().__init__(f"profile script {script!r} ran {elapsed_s * 1000:.0f} ms on one event; "
                         f"the budget is {budget_s * 1000:.0f} ms (profile_script_timeout_ms)")
        self.script = script


class Budget:
    """The time budget of one call; arm with ``started``/``script`` before the call, disarm with
    ``script = None`` after (two attribute writes: the main thread pays nothing more)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.script: str | None = None  # the script running now; None: no script is running
        self.started = 0.0
        self._fired = 0.0  # the start of the call already signalled (once per call)
        self._stop = threading.Event()
        self._main = threading.main_thread().ident

    def start(self) -> bool:
        """Install the handler and start the watchdog; False (with a warning) off the main thread,
        where Python cannot run signal handlers."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("profile scripts run off the main thread: their time budget is not enforced")
            return False
        signal.signal(BUDGET_SIGNAL, self._on_signal)
        threading.Thread(target=self._watch, name="cardflow-script-budget", daemon=True).start()
        return True

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        period = max(self.seconds / 4, 0.002)
        while not self._stop.wait(period):
            started = self.started
            if (self.script is not None and started != self._fired
                    and time.perf_counter() - started > self.seconds):
                self._fired = started
                signal.pthread_kill(self._main, BUDGET_SIGNAL)  # type: ignore[arg-type]

    def _on_signal(self, signum: int, frame: Any) -> None:
        script = self.script
        elapsed = time.perf_counter() - self.started
        if script is not None and elapsed > self.seconds:
            self.script = None  # disarmed here, on the main thread: one raise per call
            raise ScriptTimeout(script, self.seconds, elapsed)


def frozen(value: Any) -> Any:
    """``value`` for reading only: dicts and lists wrapped (lazily, level by level), others as they are."""
    if isinstance(value, dict):
        return ReadOnlyDict(value)
    if isinstance(value, list):
        return ReadOnlyList(value)
    return value


class ReadOnlyDict(Mapping[str, Any]):
    """A dict another script owns: readable, not writable (no ``__setitem__``, values frozen too)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return frozen(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"ReadOnlyDict({self._data!r})"


class ReadOnlyList(Sequence[Any]):
    __slots__ = ("_data",)

    def __init__(self, data: list[Any]) -> None:
        self._data = data

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return ReadOnlyList(self._data[index])
        return frozen(self._data[index])

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ReadOnlyList):
            other = other._data
        return self._data == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ReadOnlyList({self._data!r})"


class ReadOnlyFieldError(TypeError):
    pass


class ScriptView(dict):  # type: ignore[type-arg]
    """A script's own fields (a dict it writes) that also reads, never writes, the fields of the
    scripts it ``requires`` (``others``): ``profile["events"]``, ``.get``, ``in``."""

    __slots__ = ("others", "owner")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.others: Mapping[str, tuple[str, Any]] = {}  # field → (owning script, value)
        self.owner = ""

    def __getitem__(self, key: str) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        if key in self.others:
            return frozen(self.others[key][1])
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[key] if key in self else default

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self.others

    def _refuse(self, key: str) -> None:
        if key in self.others and not dict.__contains__(self, key):
            raise ReadOnlyFieldError(f"profile script {self.owner!r} cannot write field {key!r}: it belongs "
                                     f"to profile script {self.others[key][0]!r} (read-only here)")

    def __setitem__(self, key: str, value: Any) -> None:
        self._refuse(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._refuse(key)
        dict.__delitem__(self, key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        self[key] = default
        return default

    def pop(self, key: str, *default: Any) -> Any:
        self._refuse(key)
        return dict.pop(self, key, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value
