"""``cardflow bench docs``: docs/benchmarks.md from the JSON results, never typed by hand.

For each scenario the newest full run is shown (a quick run only when no full one exists, and
marked as such): its command, machine and versions, every contender's medians, the extra tables,
the ratios and targets (a missed one says by how much), and the notes. Commentary that needs a
human (where the time goes, what was tried) lives in ``bench/notes.md`` under a ``## <scenario>``
heading and is placed after that scenario's tables; its ``## history`` section closes the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench.harness import ROOT, cell

DOCS = ROOT / "docs" / "benchmarks.md"
NOTES = ROOT / "bench" / "notes.md"
ORDER = ("fold", "scripts", "latency", "cards", "cohort", "bitmaps", "ingest", "archive", "replay",
         "warehouse", "recovery")
RANK = {"full": 0, "quick": 1, "smoke": 2}
SHOWN_VERSIONS = (
    "kafka",
    "confluent-kafka",
    "faust-streaming",
    "aiokafka",
    "rocksdict",
    "chdb",
    "redis-server",
)


def newest(results: Path, smoke: bool = False) -> dict[str, dict[str, Any]]:
    """Per scenario, the newest result of the largest level measured (smoke runs only if asked)."""
    best: dict[str, tuple[tuple[int, str], dict[str, Any]]] = {}
    for path in results.glob("*.json"):
        data = json.loads(path.read_text())
        level = data.get("level", "quick" if data.get("quick") else "full")
        if (level == "smoke" and not smoke) or data.get("missing"):
            continue
        key = (-RANK[level], data["date"])
        if data["scenario"] not in best or key > best[data["scenario"]][0]:
            best[data["scenario"]] = (key, {**data, "level": level})
    return {name: best[name][1] for name in ORDER if name in best}


def notes_by_section(path: Path = NOTES) -> dict[str, str]:
    if not path.exists():
        return {}
    parts = re.split(r"^## (\S+)\s*$", path.read_text(), flags=re.M)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def _table(rows: list[list[Any]]) -> list[str]:
    head, *body = rows
    return [_row(head), "|" + "---|" * len(head), *(_row(r) for r in body)]


def machine_line(m: dict[str, Any]) -> str:
    v = m.get("versions", {})
    shown = ", ".join(f"{k} {v[k]}" for k in SHOWN_VERSIONS if k in v)
    return (
        f"{m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}, "
        f"commit {v.get('cardflow_commit', '?')}; {shown}"
    )


def target_text(t: dict[str, Any]) -> str:
    value, met = t["value"], t["met"]
    shown = "—" if value is None else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if met is None:
        return f"{t['what']}: not measured (target {t['target']})"
    if met:
        return f"{t['what']}: {shown} (target {t['target']}): met"
    bound = float(t["target"].split()[1].rstrip("s%"))
    if t["target"].startswith(">=") and bound:
        gap = f"{value / bound:.2f} of the target"
    else:
        gap = f"{value / bound:.2f}× the bound" if bound else "over the bound"
    return f"{t['what']}: {shown} (target {t['target']}): **not met** ({gap})"


def section(data: dict[str, Any], commentary: str) -> list[str]:
    from bench.cli import SCENARIOS

    name = data["scenario"]
    out = [f"## {name} — {SCENARIOS[name][1]}", ""]
    level = "" if data["level"] == "full" else f" ({data['level']} sizes: no full run yet)"
    out += [
        f"`{data['command']}`{level}, {data['date'][:16].replace('T', ' ')} UTC, {data['seconds']:.0f} s; "
        f"{machine_line(data['machine'])}.",
        "",
        "Parameters: " + ", ".join(f"{k} {cell(v)}" for k, v in data["params"].items()) + ".",
        "",
    ]
    contenders = data["contenders"]
    keys: list[str] = []
    for c in contenders.values():
        keys += [k for k in c["median"] if k not in keys]
    if keys:
        rows: list[list[Any]] = [["contender (median of rounds)", "rounds", *keys]]
        rows += [[n, len(c["rounds"]), *(c["median"].get(k) for k in keys)] for n, c in contenders.items()]
        out += [*_table(rows), ""]
        first_key = next((k for k in keys if k.endswith("_per_s") or k == "seconds"), keys[0])
        if max(len(c["rounds"]) for c in contenders.values()) > 1:
            per_round: list[list[Any]] = [[f"{first_key} by round", *contenders]]
            for r in range(max(len(c["rounds"]) for c in contenders.values())):
                per_round.append(
                    [
                        r + 1,
                        *(
                            c["rounds"][r].get(first_key) if r < len(c["rounds"]) else None
                            for c in contenders.values()
                        ),
                    ]
                )
            out += [*_table(per_round), ""]
    for title, rows in data.get("tables", {}).items():
        out += [f"{title}:", "", *_table(rows), ""]
    if data["ratios"]:
        out += ["Ratios (same run): " + "; ".join(f"{k} **{v:.3f}**" for k, v in data["ratios"].items()), ""]
    out += [f"- {target_text(t)}" for t in data["targets"]]
    out += [f"- {n}" for n in data["notes"]]
    if data["targets"] or data["notes"]:
        out.append("")
    if commentary:
        out += [commentary, ""]
    return out


def render(results: Path, smoke: bool = False) -> str:
    runs = newest(results, smoke)
    notes = notes_by_section()
    out = [
        "# Benchmarks",
        "",
        "Generated by `cardflow bench docs` from the JSON results in `bench/results/` (the commentary",
        "comes from `bench/notes.md`); do not edit by hand. Every scenario measures cardflow and its",
        "baselines in the same invocation on the same machine, alternating their order round by round,",
        "and reports medians; ratios are medians of per-round ratios where rounds pair up. This",
        "machine's speed swings 2–3× within a day: compare a number with its baseline, not with",
        "another run's. Each run starts one Kafka broker (KRaft, loopback) that shares the cores with",
        "the code under test.",
        "",
        "Reproduce: `cardflow bench all` (full sizes, about an hour on 2 cores) or",
        "`cardflow bench all --quick` (under 10 minutes), then `cardflow bench docs`.",
        "",
    ]
    if "intro" in notes:
        out += [notes["intro"], ""]
    for name, data in runs.items():
        out += section(data, notes.get(name, ""))
    missing = [n for n in ORDER if n not in runs]
    if missing:
        out += [f"Not measured yet: {', '.join(missing)}.", ""]
    if "history" in notes:
        out += ["## Earlier measurements", "", notes["history"], ""]
    return "\n".join(out).rstrip() + "\n"


def write_docs(results: Path, to: Path = DOCS) -> Path:
    to.write_text(render(results))
    return to
