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

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from cardflow.events import Event

Fold = Callable[[dict[str, Any], Event], "dict[str, Any] | None"]
ID_CHARS = 16  # 64 bits of the event id: collisions within one user's horizon are negligible
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
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ProfileScriptError(
                f"profile script module {module_name!r} cannot be imported ({exc}); "
                "check CARDFLOW_PROFILE_SCRIPTS and that the module is on PYTHONPATH"
            ) from exc
        found = ([getattr(module, attr, None)] if attr
                 else [v for v in vars(module).values() if isinstance(v, ProfileScript)])
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
    value = orjson.loads(stored) if stored else new_value()
    meta = value["meta"]
    ids: dict[str, int] = meta["ids"]
    result = FoldResult(value)
    profile = value["profile"]
    ok: list[Event] = []
    for event, offset in events:
        if offset <= meta["offset"]:
            result.duplicates += 1
            continue
        meta["offset"] = offset
        short = event.event_id[:ID_CHARS]
        if short in ids:
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
        if event.ts >= meta["max_ts"] - horizon_ms:
            ids[short] = event.ts
    result.folded = len(ok)
    _prune_ids(ids, meta["max_ts"] - horizon_ms)
    value["profile"] = profile
    before = orjson.loads(stored)["profile"] if stored else {}
    result.changed = sorted(k for k in set(before) | set(profile) if before.get(k) != profile.get(k))
    return result


def _refold(stored: bytes | None, events: list[Event], scripts: tuple[ProfileScript, ...]) -> dict[str, Any]:
    profile: dict[str, Any] = orjson.loads(stored)["profile"] if stored else {}
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


def _prune_ids(ids: dict[str, int], oldest: int) -> None:
    for key in [k for k, ts in ids.items() if ts < oldest]:
        del ids[key]
    if len(ids) > MAX_IDS:
        # Keep the newest by (ts, id): a total order, so the result is order-independent.
        for key, _ in sorted(ids.items(), key=lambda kv: (kv[1], kv[0]))[: len(ids) - MAX_IDS]:
            del ids[key]
