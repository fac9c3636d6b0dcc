"""cards: produce → card result at a fixed rate over many profiles, incremental cards beside the
full-map code path (``cards_incremental=false``: every card maps its whole partition each round),
in the same run.

Per (profiles, mode): one people worker with the built-in cards; every profile is made first and
the run waits until every card's result is complete over them; then events flow at ``rate``/s
for ``seconds``. Per card: p50/p95/p99 from an event's send to the first result whose offsets
include it; the map process's resident memory (peak and at the end, per profile) and its CPU
seconds per second of stream.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, Progress, Result, Worker, percentile, target
from bench.latency import Sent, card_latencies, drain, follow, seed, sustained
from cardflow.config import Settings, load_settings

MODES = {"incremental": True, "full map": False}


def map_process(worker: Worker) -> int | None:
    """The pid of the worker's card map process (agents/map_child.py)."""
    from bench.harness import tree

    for pid in tree(worker.proc.pid)[1:]:
        try:
            if b"cardflow.agents.map_child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def memory_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(field + ":"))


def cpu_s(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def covered(settings: Settings, cards: list[str], events: int) -> bool:
    """Whether every card's latest result is complete and includes the first ``events`` events."""
    from cardflow.card_results import CARD_RESULT
    from cardflow.connectors.kafka_read import read_topic

    latest: dict[str, dict[str, Any]] = {}
    try:
        for msg in read_topic(settings, settings.topic("results"), f"cover-{time.monotonic_ns()}"):
            latest[(msg.key() or b"").decode()] = CARD_RESULT.decode(msg.value() or b"")
    except RuntimeError:
        return False
    return all(
        c in latest and latest[c]["complete"] and sum(o + 1 for o in latest[c]["offsets"].values()) >= events
        for c in cards
    )


def one_run(
    bench: Bench, profiles: int, incremental: bool, rate: int, seconds: int, progress: Progress
) -> dict[str, Any]:
    from cardflow.cards import load_cards
    from cardflow.profiles import load_scripts

    cards_setting = load_settings(env={}).cards
    ids = [c.id for c in load_cards(cards_setting, [s.name for s in load_scripts(("cardflow.standard",))])]
    here = bench.settings("cards", cards=cards_setting, cards_incremental=incremental)
    worker = Worker(here, "worker", "people", log=here.data_dir / "people.log")
    label = f"{profiles:,} profiles, {'incremental' if incremental else 'full map'}"
    try:
        progress(f"{label}: making the profiles")
        seed(here, profiles)
        started = time.monotonic()
        while not covered(here, ids, profiles):
            worker.alive()
            if time.monotonic() - started > 1800:
                raise TimeoutError(f"{label}: the cards did not cover the profiles in 30 minutes")
            time.sleep(2)
        first_pass = time.monotonic() - started
        pid = map_process(worker)
        follower = follow(here)
        sent: Sent = []
        progress(f"{label}: {rate:,} events/s for {seconds} s")
        cpu0 = cpu_s(pid) if pid else 0.0
        sustained(here, profiles, rate, seconds, sent)
        cpu = (cpu_s(pid) - cpu0) / seconds if pid else None
        progress(f"{label}: waiting for the last events' results")
        drain(follower, sent, lambda: ids, worker, 300)
        rss = memory_kib(pid, "VmRSS") if pid else 0
        hwm = memory_kib(pid, "VmHWM") if pid else 0
    finally:
        worker.stop()
    out: dict[str, Any] = {
        "first_pass_s": round(first_pass, 1),
        "map_rss_mib": round(rss / 1024, 1),
        "map_peak_rss_mib": round(hwm / 1024, 1),
        "map_bytes_per_profile": round(rss * 1024 / profiles, 1),
        "map_cpu_s_per_s": None if cpu is None else round(cpu, 3),
        "sent": len(sent),
        "latency": {c: card_latencies(sent, follower.results.get(c, [])) for c in ids},
    }
    return out


def run(bench: Bench) -> Result:
    progress = Progress("cards")
    sizes = sorted({bench.size(20_000, 100_000, 1_000), bench.size(20_000, 1_000_000, 1_000)})
    rate, seconds = bench.size(5000, 5000, 300), bench.size(20, 60, 4)
    result = Result(
        "cards", {"profiles": sizes, "rate": rate, "seconds": seconds, "partitions": bench.base.partitions}
    )
    rows: list[list[Any]] = [["profiles", "mode", "card", "events with it", "p50 s", "p95 s", "p99 s"]]
    memory: list[list[Any]] = [
        ["profiles", "mode", "first pass s", "map RSS MiB (peak)", "map RSS bytes/profile", "map CPU s per s"]
    ]
    for profiles in sizes:
        for mode, incremental in MODES.items():
            run_ = one_run(bench, profiles, incremental, rate, seconds, progress)
            p99s = []
            for card, values in sorted(run_["latency"].items()):
                qs = [round(percentile(values, q), 3) for q in (50, 95, 99)]
                rows.append([profiles, mode, card, len(values), *qs])
                p99s.append(qs[2])
                if incremental:
                    bound = 1 if profiles <= 100_000 else 2
                    result.targets.append(
                        target(f"{card} p99 s at {profiles:,} profiles", qs[2], "<=", bound)
                    )
                if len(values) < run_["sent"]:
                    result.notes.append(
                        f"{mode}, {profiles:,}: {run_['sent'] - len(values)} events never "
                        f"reached {card}'s result in time"
                    )
            if incremental and profiles >= 1_000_000:
                result.targets.append(
                    target(f"map RSS bytes/profile at {profiles:,}", run_["map_bytes_per_profile"], "<=", 200)
                )
            memory.append(
                [
                    profiles,
                    mode,
                    run_["first_pass_s"],
                    f"{run_['map_rss_mib']} ({run_['map_peak_rss_mib']})",
                    run_["map_bytes_per_profile"],
                    run_["map_cpu_s_per_s"],
                ]
            )
            result.contenders.setdefault(f"{mode}, {profiles:,} profiles", []).append(
                {
                    "worst_p99_s": max(p99s),
                    "map_rss_mib": run_["map_rss_mib"],
                    "map_cpu_s_per_s": run_["map_cpu_s_per_s"] or 0.0,
                }
            )
    progress.done()
    result.tables[f"produce → card result at {rate:,} events/s for {seconds} s"] = rows
    result.tables["the map process"] = memory
    for profiles in sizes:
        inc = result.contenders[f"incremental, {profiles:,} profiles"][0]
        full = result.contenders[f"full map, {profiles:,} profiles"][0]
        if inc["worst_p99_s"]:
            result.ratios[f"full-map / incremental worst p99, {profiles:,} profiles"] = round(
                full["worst_p99_s"] / inc["worst_p99_s"], 2
            )
    return result
