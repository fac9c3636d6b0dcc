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
from dataclasses import dataclass, field
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


@dataclass
class FoldResult:
    value: dict[str, Any]
    folded: int = 0
    duplicates: int = 0
    failed: list[tuple[Event, int, str, BaseException]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    max_ts: int = 0


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
    value = decode_value(stored) if stored else new_value()
    meta = value["meta"]
    ids = _IdSet(meta["ids"])
    result = FoldResult(value)
    profile = value["profile"]
    ok: list[Event] = []
    for event, offset in events:
        if offset <= meta["offset"]:
            result.duplicates += 1
            continue
        meta["offset"] = offset
        short, day = event.event_id[:ID_CHARS], event.ts // DAY_MS
        if ids.seen(short, day):
            result.duplicates += 1
            continue
        try:
            for script in scripts:
                profile = script(profile, event)
        except Exception as exc:  # noqa: BLE001 - the event goes to the DLQ with the script's name
            result.failed.append((event, offset, _failing_script(scripts, stored, ok, event), exc))
            # A script may have changed the profile before raising: fold again without this event.
            profile = _refold(stored, ok, scripts)
            continue
        ok.append(event)
        meta["version"] += 1
        meta["max_ts"] = max(meta["max_ts"], event.ts)
        result.max_ts = max(result.max_ts, event.ts)
        ids.add(short, day, (meta["max_ts"] - horizon_ms) // DAY_MS)
    result.folded = len(ok)
    meta["ids"] = ids.buckets((meta["max_ts"] - horizon_ms) // DAY_MS)
    value["profile"] = profile
    before = decode_profile(stored) if stored else {}
    result.changed = sorted(k for k in set(before) | set(profile) if before.get(k) != profile.get(k))
    return result


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
        merged = {int(day): chunk for day, chunk in self._stored.items() if int(day) >= oldest_day}
        for day, shorts in self._new.items():
            if day >= oldest_day:
                merged[day] = _merge(merged.get(day, ""), sorted(shorts))  # sorted: same ids, same bytes
        days = sorted(merged)
        total = sum(len(c) for c in merged.values()) // ID_CHARS
        while total > MAX_IDS and days:
            total -= len(merged.pop(days.pop(0))) // ID_CHARS
        return {str(day): merged[day] for day in sorted(merged)}


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
