"""The local card runner: ``cardflow card run`` and ``cardflow card test``, no Kafka.

Events (JSON lines, or a JSON array) are decoded with the installation's decoder, folded per
user with the configured profile scripts — the worker's own fold, in memory — and the cards
run over the profiles as the live runtime runs them: one partial per partition (the same
partition function), reduced, rendered. So the numbers are the ones the live card shows for
the same events.

A card may carry ``examples``: ``[{"events": [...], "summary": "...", "total": ...,
"params": {...}}]``; ``cardflow card test`` runs each and compares what is given.
"""

from __future__ import annotations

import html
import inspect
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from cardflow.card_results import CardReducer, map_partition, served
from cardflow.cards import Card, load_cards
from cardflow.config import Settings
from cardflow.errors import CardError, Rejected
from cardflow.events import Event
from cardflow.partitioning import partition_of
from cardflow.plugins import objects_at
from cardflow.profile_values import new_value
from cardflow.profiles import ScriptSet, fold_value, load_scripts

STATIC = Path(__file__).parent / "api" / "static"


@dataclass
class Folded:
    """What the events gave: profiles per partition, and the events that could not be used."""

    profiles: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)  # partition → uid → profile
    rejected: list[str] = field(default_factory=list)  # one line each: where and why
    events: int = 0
    max_ts: int = 0


def read_events(path: Path) -> list[Any]:
    """The events of a JSON-lines file (or one JSON array)."""
    text = path.read_bytes()
    if text.lstrip().startswith(b"["):
        events = orjson.loads(text)
        if not isinstance(events, list):
            raise CardError(f"{path}: a JSON array of events, or one JSON event per line")
        return events
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise CardError(f"{path}:{n}: not JSON ({exc})") from None
    return out


def fold(events: Iterable[Any], settings: Settings, scripts: ScriptSet) -> Folded:
    """Fold ``events`` (decoded JSON values) as the people worker would, in memory."""
    decoder = settings.decoder()
    now = int(time.time() * 1000)
    users: dict[str, list[tuple[Event, int]]] = {}
    out = Folded()
    for n, raw in enumerate(events):
        try:
            event = decoder.object(raw, now)
        except Rejected as exc:
            out.rejected.append(f"event {n + 1}: {exc.reason.value}: {exc.message}")
            continue
        users.setdefault(event.uid, []).append((event, n))
    horizon = int(settings.dedup_horizon_days * 86_400_000)
    values: dict[str, dict[str, Any]] = {}
    offset = len(out.rejected) + sum(map(len, users.values()))
    while users:  # derived events (emit) are folded in turn, as the worker folds them from `events`
        derived: dict[str, list[tuple[Event, int]]] = {}
        for uid, mine in users.items():
            value = values.setdefault(uid, new_value())
            before = orjson.dumps(value["profile"]) if value["meta"]["offset"] >= 0 else None
            result = fold_value(value, before, mine, scripts, horizon)
            for _, at, script, why in result.failed:
                out.rejected.append(f"event {at + 1}: profile script {script!r} failed: {why}")
            for _, deep in result.too_deep:
                out.rejected.append(f"derived {deep['event']!r}: past max_derived_depth")
            out.events += result.folded
            for _, emitted in result.derived:
                decoded = decoder.object(emitted, now)
                derived.setdefault(decoded.uid, []).append((decoded, offset))
                offset += 1
        users = derived
    for uid, value in values.items():
        if value["meta"]["version"]:
            partition = partition_of(uid.encode(), settings.partitions)  # as the worker places it
            out.profiles.setdefault(partition, {})[uid] = {**value["profile"], "uid": uid}  # as maps see it
            out.max_ts = max(out.max_ts, value["meta"]["max_ts"])
    return out


def run(cards: tuple[Card, ...], folded: Folded, partitions: int) -> list[dict[str, Any]]:
    """Each card's result as the API serves it (id, title, summary, widgets, error…)."""
    reducer = CardReducer(cards, partitions)
    for card in cards:
        if not card.maps():
            continue
        for partition in range(partitions):
            profiles = list(folded.profiles.get(partition, {}).values())
            reducer.add(map_partition(card, partition, profiles, folded.max_ts, -1))  # no topic: no offsets
    results = []
    for card in cards:
        results.append({**served(reducer.result(card.id)), "offsets": {}, "total": reducer.total(card.id)})
    return results


def load(path: str, settings: Settings, params: Mapping[str, Any] | None = None
         ) -> tuple[tuple[Card, ...], tuple[Card, ...], ScriptSet]:
    """The cards of ``path`` (with ``params``), every card they use (from the configured cards),
    and the configured profile scripts."""
    scripts = ScriptSet(load_scripts(settings.profile_scripts), max_derived_depth=settings.max_derived_depth)
    names = [s.name for s in scripts.scripts]
    mine = load_cards([path], names, {c: dict(params) for c in _ids(path)} if params else None)
    others = {c.id: c for c in load_cards(settings.cards, names, settings.card_params)} if any(
        c.uses for c in mine) else {}
    own = {c.id for c in mine}
    needed: list[Card] = []
    todo = [u for c in mine for u in c.uses if u not in own]
    while todo:
        card_id = todo.pop()
        if card_id in own or any(c.id == card_id for c in needed):
            continue
        if card_id not in others:
            raise CardError(f"a card uses {card_id!r}, which is neither in {path} nor a configured card")
        needed.append(others[card_id])
        todo += list(others[card_id].uses)
    return tuple(mine), tuple(needed), scripts


def _ids(path: str) -> list[str]:
    """The ids of the cards ``path`` defines."""
    return [c.id for c in objects_at(path, "the card file")
            if inspect.isclass(c) and issubclass(c, Card) and c is not Card]


def text(results: list[dict[str, Any]], folded: Folded) -> str:
    """What ``card run`` prints: per card its summary and widgets (or its error)."""
    lines = [f"{folded.events} events folded into {sum(map(len, folded.profiles.values()))} profiles"
             + (f"; {len(folded.rejected)} left out:" if folded.rejected else "")]
    lines += [f"  {why}" for why in folded.rejected[:20]]
    for result in results:
        lines.append("")
        lines.append(f"== {result['title']} ({result['id']})")
        if result["error"]:
            lines.append(f"error: {result['error']}")
            continue
        if result["summary"]:
            lines.append(f"summary: {result['summary']}")
        for widget in result["widgets"]:
            lines.append(orjson.dumps(widget).decode())
    return "\n".join(lines)


def preview(results: list[dict[str, Any]]) -> str:
    """A standalone HTML page drawing ``results`` with the dashboard's own code (inlined: it
    opens from a file, offline)."""
    shown = [{k: v for k, v in r.items() if k != "total"} for r in results]

    def inline(name: str) -> str:
        return (STATIC / name).read_text().replace("</script", "<\\/script")

    page = (STATIC / "index.html").read_text()
    page = page.replace('<link rel="stylesheet" href="/static/dashboard.css">',
                        f"<style>{inline('dashboard.css')}</style>")
    page = page.replace('<script src="/static/chart.umd.min.js"></script>',
                        f"<script>{inline('chart.umd.min.js')}</script>")
    page = page.replace('<script src="/static/chartjs-chart-geo.umd.min.js"></script>',
                        f"<script>{inline('chartjs-chart-geo.umd.min.js')}</script>"
                        f"<script>window.CARDFLOW_GEO = {{atlas: {inline('countries-110m.json')}, "
                        f"numeric: {inline('iso-numeric.json')}}};</script>")
    data = orjson.dumps(shown).decode().replace("</", "<\\/")
    page = page.replace('<script src="/static/dashboard.js" defer></script>', "")
    page = page.replace("</body>", f"<script>window.CARDFLOW_PREVIEW = {data};</script>"  # after the page:
                        f"<script>{inline('dashboard.js')}</script></body>")  # inline, it cannot defer
    return page.replace("<title>cardflow</title>", f"<title>cardflow preview: "
                        f"{html.escape(', '.join(r['id'] for r in results))}</title>")


def examples(cards: tuple[Card, ...], used: tuple[Card, ...], settings: Settings,
             scripts: ScriptSet) -> list[str]:
    """Run every card's ``examples``; the failures, one line each (empty: all passed)."""
    failures = []
    for card in cards:
        for n, example in enumerate(getattr(card, "examples", ()) or (), 1):
            name = f"{card.id} example {n}"
            if not isinstance(example, Mapping) or "events" not in example:
                failures.append(f"{name}: an example is a dict with 'events' (and 'summary' or 'total')")
                continue
            instance = type(card)(**{**card.p, **example.get("params", {})})
            instance.id = card.id  # type: ignore[misc]
            folded = fold(example["events"], settings, scripts)
            results = run((instance, *used), folded, settings.partitions)
            result = next(r for r in results if r["id"] == card.id)
            if result["error"]:
                failures.append(f"{name}: {result['error']}")
                continue
            for key in ("summary", "total"):
                if key in example and _plain(result[key]) != _plain(example[key]):
                    failures.append(f"{name}: {key} is {_plain(result[key])!r}, expected {example[key]!r}")
    return failures


def _plain(value: Any) -> Any:
    """A total as JSON would give it back (Counters as dicts, sets as sorted lists)."""
    return orjson.loads(orjson.dumps(value, default=lambda v: sorted(v) if isinstance(v, set | frozenset)
                                     else list(v)))
