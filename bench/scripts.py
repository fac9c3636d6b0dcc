"""scripts: what a profile script costs the fold, in one process (no Kafka: the fold alone).

The same decoded events (bench Data: 3 % purchases) are folded per user, batch by batch as the
worker groups them, with:
- ``standard``: the standard script alone (the baseline);
- ``+ script, checks the name itself``: plus a script called on every event that returns
  unless the event is a purchase, as a script without filters must;
- ``+ script, events=["purchase"]``: the same script with an event filter: not called for the
  other 97 %;
- ``+ script, budget on``: the filtered script with the 100 ms time budget armed for every call
  (cardflow/isolation.py), to show what isolation costs.
Ratios are against the baseline measured in the same round.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.harness import Bench, Data, Progress, Result, alternate, medians
from cardflow.config import load_settings
from cardflow.events import Event
from cardflow.profile_values import new_value
from cardflow.profiles import ProfileScript, ScriptSet, fold_value
from cardflow.standard import standard

BATCH = 100_000
REPEAT = 5


def spend(profile: dict[str, Any], event: Event) -> None:
    amount = event.properties.get("amount", 0)
    profile["spent"] = profile.get("spent", 0) + amount
    profile["orders"] = profile.get("orders", 0) + 1


def spend_unfiltered(profile: dict[str, Any], event: Event) -> None:
    if event.event != "purchase":
        return
    spend(profile, event)


def batches(bench: Bench) -> list[dict[str, list[tuple[Event, int]]]]:
    data = Data(users=bench.size(20_000, 100_000), events=bench.size(200_000, 1_000_000))
    decode = load_settings(env={}).decoder().record
    records = data.records()
    out: list[dict[str, list[tuple[Event, int]]]] = []
    for start in range(0, data.events, BATCH):
        users: dict[str, list[tuple[Event, int]]] = defaultdict(list)
        for offset, (_, raw) in enumerate(records[start:start + BATCH], start):
            event = decode(raw)
            users[event.uid].append((event, offset))
        out.append(users)
    return out


def fold_all(batches_: list[dict[str, list[tuple[Event, int]]]], scripts: ScriptSet) -> dict[str, float]:
    """The whole fold (dedup, scripts, merge), then the scripts alone (``fold_event``, the part a
    script adds to), alternated ``REPEAT`` times inside the round: one pass is under a second and
    this machine's speed moves more than the differences measured."""
    events = sum(len(e) for users in batches_ for e in users.values())
    fold, scripts_only = [], []
    for _ in range(REPEAT):
        values: dict[str, dict[str, Any]] = {}
        started = time.perf_counter()
        for users in batches_:
            for uid, events_ in users.items():
                value = values.get(uid)
                if value is None:
                    value = values[uid] = new_value()
                fold_value(value, None, events_, scripts, 7 * 86_400_000)
        fold.append(time.perf_counter() - started)
        started = time.perf_counter()
        for users in batches_:
            for events_ in users.values():
                parts = scripts.split({})
                for event, _ in events_:
                    scripts.fold_event(parts, event)
        scripts_only.append(time.perf_counter() - started)
    seconds = statistics.median(fold)
    return {"seconds": seconds, "events_per_s": events / seconds,
            "scripts_ns_per_event": statistics.median(scripts_only) / events * 1e9}


def run(bench: Bench) -> Result:
    progress = Progress("scripts")
    progress("decoding the events")
    data = batches(bench)
    filtered = ProfileScript("spend", "1", spend, events=("purchase",))
    budgeted = ScriptSet((standard, filtered), timeout_s=0.1)
    budgeted.start()
    contenders = {
        "standard": ScriptSet((standard,)),
        "+ script, checks the name itself": ScriptSet((standard, ProfileScript("spend", "1",
                                                                               spend_unfiltered))),
        '+ script, events=["purchase"]': ScriptSet((standard, filtered)),
        "+ script, budget on": budgeted,
    }
    def folding(scripts: ScriptSet) -> Callable[[int], dict[str, float]]:
        return lambda r: fold_all(data, scripts)

    rows = alternate(bench.rounds, {name: folding(s) for name, s in contenders.items()}, progress)
    if budgeted.budget is not None:
        budgeted.budget.stop()
    progress.done()
    result = Result("scripts", {"events": sum(len(e) for u in data for e in u.values()),
                                "users": bench.size(20_000, 100_000), "batch": BATCH})
    result.contenders = rows
    seconds = {name: medians(r)["seconds"] for name, r in rows.items()}
    ns = {name: medians(r)["scripts_ns_per_event"] for name, r in rows.items()}
    base = ns["standard"]
    unfiltered = ns["+ script, checks the name itself"] - base
    with_filter = ns['+ script, events=["purchase"]'] - base
    result.notes.append(f"the added script's cost per event (scripts alone): {unfiltered:.0f} ns called on "
                        f"every event, {with_filter:.0f} ns with its filter")
    if unfiltered > 0:
        result.ratios["script's cost, filtered / unfiltered"] = round(with_filter / unfiltered, 3)
    result.ratios["budget on / off (scripts alone)"] = round(
        ns["+ script, budget on"] / ns['+ script, events=["purchase"]'], 3)
    result.ratios["budget on / off (whole fold)"] = round(
        seconds["+ script, budget on"] / seconds['+ script, events=["purchase"]'], 3)
    result.notes.append("the fold in one process: decode excluded, no RocksDB, no Kafka")
    return result
