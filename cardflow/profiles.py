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

A script may say which events it wants: ``events`` (names or glob patterns
such as ``"video.*"``) and ``where`` (a predicate on the event); it is not
called for the others, so a script interested in few events costs little::

    @profile_script("video", version="1", events=["video.*", "play"],
                    where=lambda e: e.properties.get("length", 0) > 10)
    def video(profile, event):
        profile["videos"] = profile.get("videos", 0) + 1

The stored value (cardflow/profile_values.py) keeps bookkeeping beside the
profile: the last folded offset (exact dedup of re-delivered records) and
recent event ids (dedup of re-sent events within the horizon; cardflow/dedup.py).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from cardflow.dedup import bucketed, contains, dedup_id
from cardflow.errors import ProfileScriptError
from cardflow.events import Event
from cardflow.plugins import objects_at
from cardflow.profile_values import split_value

Fold = Callable[[dict[str, Any], Event], "dict[str, Any] | None"]
DAY_MS = 86_400_000


@dataclass(frozen=True)
class ProfileScript:
    name: str
    version: str
    fold: Fold
    events: tuple[str, ...] | None = None  # names or glob patterns; None: every event
    where: Callable[[Event], bool] | None = None  # and only events this is true for
    _names: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)  # name → wanted
    matcher: re.Pattern[str] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.events is not None:
            if isinstance(self.events, str) or not all(isinstance(e, str) and e for e in self.events):
                raise ProfileScriptError(f"profile script {self.name!r}: events must be a list of event "
                                         f"names or glob patterns such as 'video.*', got {self.events!r}")
            object.__setattr__(self, "events", tuple(self.events))
            pattern = re.compile("|".join(fnmatch.translate(e) for e in self.events))
            object.__setattr__(self, "matcher", pattern)

    def wants(self, event: Event) -> bool:
        """Whether the script is called for ``event`` (its ``events`` and ``where``)."""
        if self.matcher is not None:
            wanted = self._names.get(event.event)
            if wanted is None:  # names repeat: each is matched once
                wanted = self._names[event.event] = self.matcher.match(event.event) is not None
            if not wanted:
                return False
        return self.where is None or bool(self.where(event))

    def __call__(self, profile: dict[str, Any], event: Event) -> dict[str, Any]:
        if not self.wants(event):
            return profile
        result = self.fold(profile, event)
        return profile if result is None else result


def profile_script(name: str, version: str, events: Iterable[str] | None = None,
                   where: Callable[[Event], bool] | None = None) -> Callable[[Fold], ProfileScript]:
    """Decorator turning a fold function into a :class:`ProfileScript`, called only for the events
    ``events`` names (names or glob patterns) and ``where`` accepts, when given."""

    def wrap(fold: Fold) -> ProfileScript:
        chosen: Any = events if events is None or isinstance(events, str) else tuple(events)
        return ProfileScript(name, version, fold, chosen, where)  # a str is refused there

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

    __slots__ = ("value", "folded", "duplicates", "failed", "changed", "max_ts", "redelivered")

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value
        self.folded = 0
        self.duplicates = 0
        self.failed: list[tuple[Event, int, str, BaseException]] = []
        self.changed: list[str] = []
        self.max_ts = 0
        self.redelivered = False


def fold_events(
    stored: bytes | None,
    events: list[tuple[Event, int]],
    scripts: tuple[ProfileScript, ...],
    horizon_ms: int,
) -> FoldResult:
    """Fold one user's events of a batch (``(event, offset)`` in offset order) into their stored value."""
    value, profile_json = split_value(stored)
    return fold_value(value, profile_json, events, scripts, horizon_ms)


def fold_value(
    value: dict[str, Any],
    profile_json: bytes | None,
    events: list[tuple[Event, int]],
    scripts: tuple[ProfileScript, ...],
    horizon_ms: int,
) -> FoldResult:
    """Fold one user's events into their decoded value, in place (``profile_json``: the profile
    as stored, None for a new user).

    Re-delivered records (offset at or below the last folded one) and re-sent
    events (an id seen within the horizon) count as duplicates; a re-delivered
    record makes every field count as changed. An event a script raises on is
    left out entirely, so a replay after a fix is safe.
    """
    meta = value["meta"]
    stored_ids: dict[str, str] = meta["ids"]
    result = FoldResult(value)
    profile = value["profile"]
    ok: list[Event] = []
    last_offset, version, max_ts = meta["offset"], meta["version"], meta["max_ts"]
    oldest_day = (max_ts - horizon_ms) // DAY_MS
    new_ids: dict[int, set[str]] = {}  # this batch's ids per day: also its in-batch dedup
    batch_max_ts = 0
    redelivered = False
    for event, offset in events:
        if offset <= last_offset:
            result.duplicates += 1
            redelivered = True
            continue
        last_offset = offset
        ts = event.ts
        day = ts // DAY_MS
        short = dedup_id(event.event_id)
        fresh = new_ids.get(day)
        if fresh is not None and short in fresh:
            result.duplicates += 1
            continue
        chunk = stored_ids.get(str(day))
        if chunk and contains(chunk, short):
            result.duplicates += 1
            continue
        try:
            for script in scripts:
                if (script.events is not None or script.where is not None) and not script.wants(event):
                    continue
                folded = script.fold(profile, event)
                if folded is not None:
                    profile = folded
        except Exception as exc:  # noqa: BLE001 - the event goes to the DLQ with the script's name
            result.failed.append((event, offset, _failing_script(scripts, profile_json, ok, event), exc))
            # A script may have changed the profile before raising: fold again without this event.
            profile = _refold(profile_json, ok, scripts)
            continue
        ok.append(event)
        version += 1
        if ts > batch_max_ts:
            batch_max_ts = ts
            if ts > max_ts:
                max_ts = ts
                oldest_day = (max_ts - horizon_ms) // DAY_MS
        if day >= oldest_day:
            if fresh is None:
                new_ids[day] = {short}
            else:
                fresh.add(short)
    meta["offset"], meta["version"], meta["max_ts"] = last_offset, version, max_ts
    result.folded = len(ok)
    result.max_ts = batch_max_ts
    if stored_ids or new_ids:
        meta["ids"] = bucketed(stored_ids, new_ids, oldest_day)
    value["profile"] = profile
    result.redelivered = redelivered
    if ok:
        result.changed = changed_fields(profile_json, profile)
    if redelivered:
        # Records are read again only when their batch was not acknowledged (a crash, a
        # rebalance): its changes may never have been announced, and what they were is not
        # known any more, so every field counts as changed.
        result.changed = sorted(profile)
    return result


def changed_fields(profile_json: bytes | None, profile: dict[str, Any]) -> list[str]:
    """The profile's top-level fields that differ from ``profile_json`` (None: a new user), sorted."""
    before = orjson.loads(profile_json) if profile_json is not None else {}
    changed = [k for k, v in profile.items() if before.get(k, _GONE) != v]
    if not before.keys() <= profile.keys():  # a script dropped a field (rare)
        changed += [k for k in before if k not in profile]
    changed.sort()
    return changed


def _refold(profile_json: bytes | None, events: list[Event],
            scripts: tuple[ProfileScript, ...]) -> dict[str, Any]:
    profile: dict[str, Any] = orjson.loads(profile_json) if profile_json is not None else {}
    for event in events:
        for script in scripts:
            profile = script(profile, event)
    return profile


def _failing_script(scripts: tuple[ProfileScript, ...], profile_json: bytes | None, ok: list[Event],
                    event: Event) -> str:
    """Name of the first script that raises on ``event``, found on a scratch profile."""
    scratch = _refold(profile_json, ok, scripts)
    for script in scripts:
        try:
            scratch = script(scratch, event)
        except Exception:  # noqa: BLE001 - finding which one raised
            return script.name
    return "unknown"


_GONE = object()
