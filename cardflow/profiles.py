"""Profile scripts and the fold of a user's events into their profile.

A profile script is a named, versioned fold ``(profile, event) -> None`` (or
returning a new profile dict). Every script must be order-independent:
folding the same events in any order must give the same profile.

    from cardflow.profiles import profile_script

    @profile_script("plans", version="1")
    def plans(profile, event):
        if event.event == "purchase":
            bought = profile.setdefault("plans_bought", {})
            plan = event.properties.get("plan", "?")
            bought[plan] = bought.get(plan, 0) + 1

The stored value keeps bookkeeping beside the profile: the last folded
offset (exact dedup of re-delivered records) and recent event ids (dedup of
re-sent events within the horizon).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from cardflow.events import Event
from cardflow.plugins import objects_at

Fold = Callable[[dict[str, Any], Event], "dict[str, Any] | None"]
ID_CHARS = 12  # 48 bits of the event id: collisions among one user's recent ids are negligible
DAY_MS = 86_400_000
MAX_IDS = 20_000  # bound per profile, whatever the horizon


class ProfileScriptError(ImportError):
    """A profile script module cannot be loaded or holds no scripts."""


@dataclass(frozen=True)
class ProfileScript:
    name: str
    version: str
    fold: Fold

    def __call__(self, profile: dict[str, Any], event: Event) -> dict[str, Any]:
        result = self.fold(profile, event)
        return profile if result is None else result


def profile_script(name: str, version: str) -> Callable[[Fold], ProfileScript]:
    """Decorator turning a fold function into a :class:`ProfileScript`."""

    def wrap(fold: Fold) -> ProfileScript:
        return ProfileScript(name, version, fold)

    return wrap


def load_scripts(paths: Iterable[str]) -> tuple[ProfileScript, ...]:
    """Scripts from ``module`` (every ProfileScript in it) or ``module:attribute`` paths."""
    scripts: dict[str, ProfileScript] = {}
    for path in paths:
        try:
            found = objects_at(path, "CARDFLOW_PROFILE_SCRIPTS")
        except ImportError as exc:
            raise ProfileScriptError(f"profile script {exc}") from exc
        found = [s for s in found if isinstance(s, ProfileScript)]
        if not found:
            raise ProfileScriptError(f"{path!r} holds no ProfileScript (use @profile_script)")
        for script in found:
            if script.name in scripts and scripts[script.name] is not script:
                raise ProfileScriptError(f"two profile scripts are named {script.name!r}")
            scripts[script.name] = script
    return tuple(scripts.values())


class FoldResult:
    """What folding one user's events of a batch gave (a plain class: one is made per user per batch)."""

    __slots__ = ("value", "folded", "duplicates", "failed", "changed", "max_ts")

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value
        self.folded = 0
        self.duplicates = 0
        self.failed: list[tuple[Event, int, str, BaseException]] = []
        self.changed: list[str] = []
        self.max_ts = 0


def new_value() -> dict[str, Any]:
    return {"profile": {}, "meta": {"offset": -1, "ids": {}, "version": 0, "max_ts": 0}}


_HEADER = struct.Struct(">Iqq")  # profile JSON length, last folded offset, max event time


def encode_value(value: dict[str, Any]) -> bytes:
    """The stored form: a header (profile length and the watermark), the profile's JSON, then
    the bookkeeping's JSON, so readers (cards) get the profile and watermark without parsing
    the (larger) dedup ids."""
    profile = orjson.dumps(value["profile"])
    meta = value["meta"]
    return _HEADER.pack(len(profile), meta["offset"], meta["max_ts"]) + profile + orjson.dumps(meta)


def decode_profile(stored: bytes) -> dict[str, Any]:
    size = _HEADER.unpack_from(stored)[0]
    profile: dict[str, Any] = orjson.loads(stored[_HEADER.size:_HEADER.size + size])
    return profile


def decode_watermark(stored: bytes) -> tuple[int, int]:
    """``(offset, max_ts)``: the last events offset folded into this profile and its latest event time."""
    _, offset, max_ts = _HEADER.unpack_from(stored)
    return offset, max_ts


def decode_value(stored: bytes) -> dict[str, Any]:
    size = _HEADER.unpack_from(stored)[0]
    start = _HEADER.size
    return {"profile": orjson.loads(stored[start:start + size]), "meta": orjson.loads(stored[start + size:])}


def fold_events(
    stored: bytes | None,
    events: list[tuple[Event, int]],
    scripts: tuple[ProfileScript, ...],
    horizon_ms: int,
) -> FoldResult:
    """Fold one user's events of a batch (``(event, offset)`` in offset order) into their stored value.

    Re-delivered records (offset at or below the last folded one) and re-sent
    events (an id seen within the horizon) count as duplicates. An event a
    script raises on is left out entirely, so a replay after a fix is safe.
    """
    if stored:
        size = _HEADER.unpack_from(stored)[0]
        profile_json = stored[_HEADER.size:_HEADER.size + size]
        value = {"profile": orjson.loads(profile_json), "meta": orjson.loads(stored[_HEADER.size + size:])}
    else:
        value = new_value()
    meta = value["meta"]
    ids = _IdSet(meta["ids"])
    result = FoldResult(value)
    profile = value["profile"]
    ok: list[Event] = []
    last_offset, version, max_ts = meta["offset"], meta["version"], meta["max_ts"]
    oldest_day = (max_ts - horizon_ms) // DAY_MS
    for event, offset in events:
        if offset <= last_offset:
            result.duplicates += 1
            continue
        last_offset = offset
        ts = event.ts
        short, day = event.event_id[:ID_CHARS], ts // DAY_MS
        if ids.seen(short, day):
            result.duplicates += 1
            continue
        try:
            for script in scripts:
                changed = script.fold(profile, event)
                if changed is not None:
                    profile = changed
        except Exception as exc:  # noqa: BLE001 - the event goes to the DLQ with the script's name
            result.failed.append((event, offset, _failing_script(scripts, stored, ok, event), exc))
            # A script may have changed the profile before raising: fold again without this event.
            profile = _refold(stored, ok, scripts)
            continue
        ok.append(event)
        version += 1
        if ts > max_ts:
            max_ts = ts
            oldest_day = (max_ts - horizon_ms) // DAY_MS
        ids.add(short, day, oldest_day)
    meta["offset"], meta["version"], meta["max_ts"] = last_offset, version, max_ts
    result.folded = len(ok)
    result.max_ts = max((e.ts for e in ok), default=0)
    meta["ids"] = ids.buckets(oldest_day)
    value["profile"] = profile
    if ok:
        before = orjson.loads(profile_json) if stored else {}
        result.changed = sorted([k for k, v in profile.items() if before.get(k, _GONE) != v]
                                + [k for k in before if k not in profile])
    return result


_GONE = object()


class _IdSet:
    """Recent event ids, bucketed by event day, each day's ids sorted and concatenated as
    fixed-width strings.

    Compact (13 bytes an id in JSON) and order-independent: what remains is
    every id whose event day is within the horizon of the latest event,
    trimmed to MAX_IDS by dropping whole oldest days. A re-sent event has its
    original event time, so an id is looked up in its own day's bucket only,
    by binary search in the string: a batch costs O(new ids · log n), not a
    pass over every stored id.
    """

    def __init__(self, stored: dict[str, str]) -> None:
        self._stored = stored
        self._new: dict[int, list[str]] = {}
        self._batch: set[tuple[int, str]] = set()

    def seen(self, short: str, day: int) -> bool:
        if (day, short) in self._batch:
            return True
        chunk = self._stored.get(str(day))
        if not chunk:
            return False
        at = _position(chunk, short)
        return chunk[at:at + ID_CHARS] == short

    def add(self, short: str, day: int, oldest_day: int) -> None:
        if day < oldest_day:
            return
        self._new.setdefault(day, []).append(short)
        self._batch.add((day, short))

    def buckets(self, oldest_day: int) -> dict[str, str]:
        """The stored buckets with this batch's ids merged in and the days out of the horizon
        dropped; days in ascending order, so equal id sets give equal bytes."""
        stored = self._stored
        for day, shorts in self._new.items():
            if day >= oldest_day:
                key = str(day)
                stored[key] = _merge(stored.get(key, ""), sorted(shorts))  # sorted: same ids, same bytes
        days = sorted(stored, key=int)
        if self._new or (days and int(days[0]) < oldest_day):
            total = sum(map(len, stored.values())) // ID_CHARS
            while days and (int(days[0]) < oldest_day or total > MAX_IDS):
                total -= len(stored.pop(days.pop(0))) // ID_CHARS
        if list(stored) != days:
            return {day: stored[day] for day in days}
        return stored


def _position(chunk: str, short: str, lo: int = 0) -> int:
    """Where ``short`` is, or would go, in a sorted chunk of fixed-width ids (a string index)."""
    hi = len(chunk) // ID_CHARS
    lo //= ID_CHARS
    while lo < hi:
        mid = (lo + hi) // 2
        if chunk[mid * ID_CHARS:(mid + 1) * ID_CHARS] < short:
            lo = mid + 1
        else:
            hi = mid
    return lo * ID_CHARS


def _merge(chunk: str, shorts: list[str]) -> str:
    """``chunk`` with the sorted ``shorts`` inserted in order."""
    parts: list[str] = []
    start = 0
    for short in shorts:
        at = _position(chunk, short, start)
        parts += (chunk[start:at], short)
        start = at
    parts.append(chunk[start:])
    return "".join(parts)


def _refold(stored: bytes | None, events: list[Event], scripts: tuple[ProfileScript, ...]) -> dict[str, Any]:
    profile: dict[str, Any] = decode_profile(stored) if stored else {}
    for event in events:
        for script in scripts:
            profile = script(profile, event)
    return profile


def _failing_script(scripts: tuple[ProfileScript, ...], stored: bytes | None, ok: list[Event],
                    event: Event) -> str:
    """Name of the first script that raises on ``event``, found on a scratch profile."""
    scratch = _refold(stored, ok, scripts)
    for script in scripts:
        try:
            scratch = script(scratch, event)
        except Exception:  # noqa: BLE001 - finding which one raised
            return script.name
    return "unknown"
