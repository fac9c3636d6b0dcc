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
import functools
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from xxhash import xxh3_128_hexdigest

from cardflow.dedup import bucketed, contains, dedup_id
from cardflow.errors import ProfileScriptError
from cardflow.events import Event
from cardflow.isolation import Budget, ReadOnlyFieldError, ScriptTimeout, ScriptView
from cardflow.plugins import load_named
from cardflow.profile_values import split_value

log = logging.getLogger(__name__)
Fold = Callable[[dict[str, Any], Event], "dict[str, Any] | None"]
DAY_MS = 86_400_000


@dataclass(frozen=True)
class ProfileScript:
    name: str
    version: str
    fold: Fold
    events: tuple[str, ...] | None = None  # names or glob patterns; None: every event
    where: Callable[[Event], bool] | None = None  # and only events this is true for
    requires: tuple[str, ...] = ()  # scripts run before this one, whose fields it reads (read-only)
    fields: tuple[str, ...] | None = None  # the fields it owns; None: shares the undeclared ones
    seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)  # name → wanted
    matcher: re.Pattern[str] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("events", "requires", "fields"):
            given = getattr(self, name)
            if given is None:
                continue
            if isinstance(given, str) or not all(isinstance(e, str) and e for e in given):
                raise ProfileScriptError(f"profile script {self.name!r}: {name} must be a list of "
                                         f"{_LISTS[name]}, got {given!r}")
            object.__setattr__(self, name, tuple(given))
        if self.events is not None:
            pattern = re.compile("|".join(fnmatch.translate(e) for e in self.events))
            object.__setattr__(self, "matcher", pattern)

    @property
    def filtered(self) -> bool:
        return self.matcher is not None or self.where is not None

    def wants_name(self, name: str) -> bool:
        """Whether ``events`` names (or matches) the event name ``name``."""
        if self.matcher is None:
            return True
        wanted = self.seen.get(name)
        if wanted is None:  # names repeat: each is matched once (up to MAX_NAMES of them)
            if len(self.seen) >= MAX_NAMES:
                self.seen.clear()
            wanted = self.seen[name] = self.matcher.match(name) is not None
        return wanted

    def wants(self, event: Event) -> bool:
        """Whether the script is called for ``event`` (its ``events`` and ``where``)."""
        if not self.wants_name(event.event):
            return False
        return self.where is None or bool(self.where(event))

    def __call__(self, profile: dict[str, Any], event: Event) -> dict[str, Any]:
        if not self.wants(event):
            return profile
        result = self.fold(profile, event)
        return profile if result is None else result


_LISTS = {"events": "event names or glob patterns such as 'video.*'", "requires": "profile script names",
          "fields": "top-level profile field names"}


def profile_script(name: str, version: str, events: Iterable[str] | None = None,
                   where: Callable[[Event], bool] | None = None, *, requires: Iterable[str] = (),
                   fields: Iterable[str] | None = None) -> Callable[[Fold], ProfileScript]:
    """Decorator turning a fold function into a :class:`ProfileScript`, called only for the events
    ``events`` names (names or glob patterns) and ``where`` accepts, when given; ``requires``:
    scripts that run first and whose fields this one reads; ``fields``: the fields it owns."""

    def wrap(fold: Fold) -> ProfileScript:
        def listed(given: Any) -> Any:  # a str is refused in ProfileScript, not split into letters
            return given if given is None or isinstance(given, str) else tuple(given)

        return ProfileScript(name, version, fold, listed(events), where, listed(requires), listed(fields))

    return wrap


def load_scripts(paths: Iterable[str]) -> tuple[ProfileScript, ...]:
    """Scripts from ``module`` (every ProfileScript in it) or ``module:attribute`` paths."""
    return tuple(load_named(paths, ProfileScript, "CARDFLOW_PROFILE_SCRIPTS", "profile script",
                            ProfileScriptError, "use @profile_script").values())


REST = ""  # the part of the profile shared by the scripts that declare no fields
MAX_EMITS = 100  # derived events one script may emit on one event
MAX_NAMES = 10_000  # distinct event names whose matching scripts are remembered


class _Folding:
    """The script call in progress, for :func:`emit` (the fold runs on one thread)."""

    __slots__ = ("script", "out")

    def __init__(self) -> None:
        self.script = ""
        self.out: list[tuple[str, str, dict[str, Any]]] | None = None  # None: emits are not kept


_FOLDING = _Folding()


def emit(event: str, properties: dict[str, Any] | None = None) -> None:
    """From a profile script, while it folds an event: a derived event for the same user, sent to
    ``events`` once the fold is stored, with a deterministic ``event_id`` (from the source
    event's id, the script, the name and how many of that name it emitted before on it), the source
    event's time and a ``derived_from`` lineage. Cards and the warehouse see it like any event.
    A chain longer than ``max_derived_depth`` stops: the event that would exceed it is
    dead-lettered as ``derived_too_deep``."""
    out = _FOLDING.out
    if not _FOLDING.script:
        raise ProfileScriptError("emit() is called from a profile script while it folds an event")
    if not isinstance(event, str) or not event:
        raise ProfileScriptError(f"emit(): the event name must be a non-empty string, got {event!r}")
    if properties is not None and not isinstance(properties, dict):
        raise ProfileScriptError(f"emit(): properties must be a dict, got {type(properties).__name__}")
    if out is None:
        return  # a refold of events already folded: their emits were kept then
    if sum(1 for script, *_ in out if script == _FOLDING.script) >= MAX_EMITS:
        raise ProfileScriptError(f"profile script {_FOLDING.script!r} emitted more than {MAX_EMITS} events "
                                 "on one event")
    out.append((_FOLDING.script, event, properties or {}))


def derived_event(source: Event, script: str, name: str, properties: dict[str, Any],
                  n: int) -> dict[str, Any]:
    """The ``n``-th ``name`` event ``script`` emitted on ``source``: the same for the same inputs."""
    digest = xxh3_128_hexdigest(f"{source.event_id}\0{script}\0{name}\0{n}".encode())
    return {"event_id": f"d-{digest}", "uid": source.uid, "event": name, "ts": source.ts,
            "properties": properties, "source": "derived",
            "derived_from": {"event_id": source.event_id, "event": source.event, "script": script,
                             "depth": source.depth + 1}}


class ScriptSet:
    """Profile scripts as the fold runs them, isolated from each other and from the worker.

    - Order: each script after the scripts it ``requires`` (load order otherwise).
    - Fields: a script that declares ``fields`` owns them: it is handed only those, and no other
      script writes them; scripts without ``fields`` share the undeclared ones. A script reads
      the fields of the scripts it ``requires`` through its ``profile``, read-only.
    - Time: each call on one event gets ``timeout_s`` (0: no budget; cardflow/isolation.py).
    - Failures: a script that fails (raises, overruns, writes a field it does not own) on
      ``max_failures`` events in a row is disabled (0: never): logged, ``on_disable`` called,
      and from then on skipped, so the other scripts keep folding (its fields stop changing
      until the worker restarts with a fix; a replay rebuilds them).
    """

    def __init__(self, scripts: Iterable[ProfileScript], timeout_s: float = 0.0, max_failures: int = 0,
                 on_disable: Callable[[str, str], None] | None = None, max_derived_depth: int = 3) -> None:
        self.scripts = _ordered(tuple(scripts))
        self.owner: dict[str, str] = {}  # declared field → its script
        for script in self.scripts:
            for name in script.fields or ():
                if name in self.owner:
                    raise ProfileScriptError(f"profile scripts {self.owner[name]!r} and {script.name!r} "
                                             f"both declare field {name!r}; a field has one owner")
                self.owner[name] = script.name
        self.part_of = [REST if s.fields is None else s.name for s in self.scripts]
        self.keys = list(dict.fromkeys(self.part_of))
        self.own = [frozenset(s.fields) if s.fields is not None else None for s in self.scripts]
        by_name = {s.name: i for i, s in enumerate(self.scripts)}
        # The parts each script reads (besides its own): those of the scripts it requires.
        self.reads = [[p for p in (self.part_of[by_name[r]] for r in s.requires) if p != self.part_of[i]]
                      for i, s in enumerate(self.scripts)]
        self.viewed = {self.part_of[i] for i, reads in enumerate(self.reads) if reads}
        # Per script, what fold_event needs, looked up once; per event name, the scripts it reaches.
        self.plan = [(i, s, s.fold, self.part_of[i], s.where, self.part_of[i] in self.viewed)
                     for i, s in enumerate(self.scripts)]
        self.by_name: dict[str, list[tuple[Any, ...]]] = {}
        self.budget = Budget(timeout_s) if timeout_s > 0 else None
        self.max_failures = max_failures
        self.max_derived_depth = max_derived_depth
        self.on_disable = on_disable
        self.streak = [0] * len(self.scripts)
        self.disabled: set[int] = set()
        self.skipped: dict[str, int] = {}  # disabled script → events it missed since last read

    def start(self) -> bool:
        """Enforce the time budget from now on (call on the main thread); False when it cannot be."""
        return self.budget is not None and self.budget.start()

    def split(self, profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The profile cut into each script's part (one part: the profile itself)."""
        if len(self.keys) == 1 and not self.viewed:
            key = self.keys[0]
            if key == REST or profile.keys() <= self.own[0]:  # type: ignore[operator]
                return {key: profile}
        parts: dict[str, dict[str, Any]] = {k: ScriptView() if k in self.viewed else {} for k in self.keys}
        rest = parts.get(REST)
        for name, value in profile.items():
            owner = self.owner.get(name, REST)
            if owner == REST and rest is None:  # a field of no loaded script: kept as it is
                rest = parts[REST] = {}
            parts[owner][name] = value
        return parts

    def merge(self, parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if len(parts) == 1:
            (part,) = parts.values()
            return part if type(part) is dict else dict(part)
        rest = parts.get(REST)
        if rest and self.owner and not rest.keys().isdisjoint(self.owner):
            taken = sorted(rest.keys() & self.owner.keys())
            raise ProfileScriptError(f"a profile script without declared fields wrote {taken}, which belong "
                                     f"to {sorted({self.owner[t] for t in taken})}")
        profile: dict[str, Any] = {}
        for part in parts.values():
            profile.update(part)
        return profile

    def fold_event(self, parts: dict[str, dict[str, Any]], event: Event) -> tuple[str, BaseException] | None:
        """Run every script on ``event``; on the first failure, ``(script, exception)`` (the parts
        are then partly folded: refold them)."""
        budget, disabled, streak, folding = self.budget, self.disabled, self.streak, _FOLDING
        plan = self.by_name.get(event.event)
        if plan is None:
            plan = self._plan_for(event.event)
        for i, script, fold, key, where, viewed in plan:  # only the scripts whose `events` match
            if disabled and i in disabled:
                self.skipped[script.name] = self.skipped.get(script.name, 0) + 1
                continue
            part = parts[key]
            folding.script = script.name
            try:
                try:
                    if budget is not None:
                        budget.started = time.perf_counter()
                        budget.script = script.name
                    if where is not None and not where(event):
                        if budget is not None:
                            budget.script = None
                        continue
                    if viewed:
                        self._show(i, part, parts)  # type: ignore[arg-type]
                    size = len(part)
                    result = fold(part, event)
                    if budget is not None:
                        budget.script = None
                except Exception as exc:  # noqa: BLE001 - the event's failure, with the script's name
                    if budget is not None:
                        budget.script = None
                    return self._failed(i, exc)
            except ScriptTimeout as exc:  # also when it fires just after a script raised
                return self._failed(i, exc)
            if result is not None:
                if not isinstance(result, dict):
                    return self._failed(i, ProfileScriptError(
                        f"profile script {script.name!r} returned {type(result).__name__}; return None "
                        "(after changing profile in place) or a dict"))
                part = parts[key] = self._as_part(key, result)
            if len(part) > size and (wrong := self._foreign(i, part)):
                return self._failed(i, ReadOnlyFieldError(
                    f"profile script {script.name!r} wrote {wrong}, "
                    + (f"outside its declared fields {sorted(script.fields)}" if script.fields is not None
                       else f"which belong to {sorted({self.owner[w] for w in wrong})}")))
            if streak[i]:
                streak[i] = 0
        return None

    def _plan_for(self, name: str) -> list[tuple[Any, ...]]:
        if len(self.by_name) >= MAX_NAMES:  # names are the senders': never an unbounded cache
            self.by_name.clear()
        plan = self.by_name[name] = [p for p in self.plan if p[1].wants_name(name)]
        return plan

    def refold(self, profile_json: bytes | None, events: list[Event]) -> dict[str, dict[str, Any]]:
        """The parts after folding ``events`` (which folded before) into ``profile_json``."""
        parts = self.split(orjson.loads(profile_json) if profile_json is not None else {})
        kept, _FOLDING.out = _FOLDING.out, None  # their emits were kept when they folded
        try:
            for event in events:
                failure = self.fold_event(parts, event)
                if failure is not None:  # it folded a moment ago: a script that is not deterministic
                    raise ProfileScriptError(f"profile script {failure[0]!r} failed on an event it folded "
                                             f"before ({failure[1]!r}); scripts must be deterministic")
        finally:
            _FOLDING.out = kept
        return parts

    def take_skipped(self) -> dict[str, int]:
        skipped, self.skipped = self.skipped, {}
        return skipped

    def _show(self, i: int, part: ScriptView, parts: dict[str, dict[str, Any]]) -> None:
        part.owner = self.scripts[i].name
        part.others = {name: (self.owner.get(name, "(scripts without fields)"), value)
                       for key in self.reads[i] for name, value in parts.get(key, {}).items()}

    def _as_part(self, key: str, result: dict[str, Any]) -> dict[str, Any]:
        return ScriptView(result) if key in self.viewed and not isinstance(result, ScriptView) else result

    def _foreign(self, i: int, part: dict[str, Any]) -> list[str]:
        own = self.own[i]
        if own is not None:
            return sorted(part.keys() - own) if not part.keys() <= own else []
        return sorted(part.keys() & self.owner.keys()) if self.owner else []

    def _failed(self, i: int, exc: BaseException) -> tuple[str, BaseException]:
        name = self.scripts[i].name
        self.streak[i] += 1
        if self.max_failures and self.streak[i] >= self.max_failures and i not in self.disabled:
            self.disabled.add(i)
            why = f"{type(exc).__name__}: {exc}"
            log.error("profile script %r disabled after failing on %d events in a row (last: %s); it is "
                      "skipped from now on and its fields stop changing; fix it, restart the worker, and "
                      "replay the period to rebuild them", name, self.streak[i], why)
            if self.on_disable is not None:
                self.on_disable(name, why)
        return name, exc


def _ordered(scripts: tuple[ProfileScript, ...]) -> tuple[ProfileScript, ...]:
    """``scripts`` with each after the ones it requires (load order otherwise); unknown names and
    cycles are errors."""
    by_name = {s.name: s for s in scripts}
    for script in scripts:
        missing = [r for r in script.requires if r not in by_name]
        if missing:
            raise ProfileScriptError(f"profile script {script.name!r} requires {missing}, which are not "
                                     f"loaded (loaded: {sorted(by_name)}; see profile_scripts)")
    done: dict[str, ProfileScript] = {}

    def visit(script: ProfileScript, path: tuple[str, ...]) -> None:
        if script.name in done:
            return
        if script.name in path:
            cycle = " → ".join(path[path.index(script.name):] + (script.name,))
            raise ProfileScriptError(f"profile scripts require each other in a cycle: {cycle}")
        for required in script.requires:
            visit(by_name[required], path + (script.name,))
        done[script.name] = script

    for script in scripts:
        visit(script, ())
    return tuple(done.values())


@functools.lru_cache(maxsize=64)
def script_set(scripts: tuple[ProfileScript, ...]) -> ScriptSet:
    """A ScriptSet without budget or disabling, for plain tuples of scripts (tests, tools)."""
    return ScriptSet(scripts)


class FoldResult:
    """What folding one user's events of a batch gave (a plain class: one is made per user per batch)."""

    __slots__ = ("value", "folded", "duplicates", "failed", "changed", "max_ts", "redelivered", "derived",
                 "too_deep")

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value
        self.folded = 0
        self.duplicates = 0
        self.failed: list[tuple[Event, int, str, BaseException]] = []
        self.changed: list[str] = []
        self.max_ts = 0
        self.redelivered = False
        self.derived: list[tuple[int, dict[str, Any]]] = []  # (source offset, derived event)
        self.too_deep: list[tuple[int, dict[str, Any]]] = []  # past max_derived_depth: dead letters

    def emit(self, source: Event, offset: int, emitted: list[tuple[str, str, dict[str, Any]]],
             max_depth: int) -> None:
        """Keep the derived events the scripts emitted on ``source`` (at ``offset``)."""
        counts: dict[tuple[str, str], int] = {}
        for script, name, properties in emitted:
            n = counts[script, name] = counts.get((script, name), -1) + 1
            derived = derived_event(source, script, name, properties, n)
            (self.derived if source.depth < max_depth else self.too_deep).append((offset, derived))


def fold_events(
    stored: bytes | None,
    events: list[tuple[Event, int]],
    scripts: ScriptSet | tuple[ProfileScript, ...],
    horizon_ms: int,
) -> FoldResult:
    """Fold one user's events of a batch (``(event, offset)`` in offset order) into their stored value."""
    value, profile_json = split_value(stored)
    return fold_value(value, profile_json, events, scripts, horizon_ms)


def fold_value(
    value: dict[str, Any],
    profile_json: bytes | None,
    events: list[tuple[Event, int]],
    scripts: ScriptSet | tuple[ProfileScript, ...],
    horizon_ms: int,
) -> FoldResult:
    """Fold one user's events into their decoded value, in place (``profile_json``: the profile
    as stored, None for a new user).

    Re-delivered records (offset at or below the last folded one) and re-sent
    events (an id seen within the horizon) count as duplicates; a re-delivered
    record makes every field count as changed. An event a script fails on (raises,
    overruns its budget, writes another script's field) is left out entirely, with
    what the scripts emitted on it, so a replay after a fix is safe.
    """
    meta = value["meta"]
    stored_ids: dict[str, str] = meta["ids"]
    result = FoldResult(value)
    runner = scripts if isinstance(scripts, ScriptSet) else script_set(tuple(scripts))
    parts = runner.split(value["profile"])
    ok: list[Event] = []
    last_offset, version, max_ts = meta["offset"], meta["version"], meta["max_ts"]
    oldest_day = (max_ts - horizon_ms) // DAY_MS
    new_ids: dict[int, set[str]] = {}  # this batch's ids per day: also its in-batch dedup
    batch_max_ts = 0
    redelivered = False
    emitted: list[tuple[str, str, dict[str, Any]]] = []  # what the scripts emit: (script, name, properties)
    _FOLDING.out = emitted
    try:
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
            failure = runner.fold_event(parts, event)
            if failure is not None:
                result.failed.append((event, offset, failure[0], failure[1]))
                emitted.clear()
                # The scripts before the failing one changed their parts: fold again without this event.
                parts = runner.refold(profile_json, ok)
                continue
            if emitted:
                result.emit(event, offset, emitted, runner.max_derived_depth)
                emitted.clear()
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
    finally:
        _FOLDING.out, _FOLDING.script = None, ""
    meta["offset"], meta["version"], meta["max_ts"] = last_offset, version, max_ts
    result.folded = len(ok)
    result.max_ts = batch_max_ts
    if stored_ids or new_ids:
        meta["ids"] = bucketed(stored_ids, new_ids, oldest_day)
    value["profile"] = profile = runner.merge(parts)
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


_GONE = object()
