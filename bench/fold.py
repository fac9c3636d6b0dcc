"""fold: events → profiles through the people worker, beside what a user could write instead.

Per round the same events go to fresh topics; then, in an order rotated each round:
- ``cardflow``: one ``cardflow worker people`` (RocksDB table and changelog, dedup, profile
  changes, dead letters; cards off) on its own copy of the events, produced in a transaction
  committed once the worker is ready: timed from the commit to the last event folded;
- ``ceiling``: a plain confluent-kafka consumer, the same decoder and fold, into a dict;
  each peer timed from its first record to its last;
- ``quix``: the same fold as a Quix Streams app (RocksDB state, changelog);
- ``faust``: the same fold as a plain Faust agent, record by record, into a RocksDB table
  (on the first ``faust_events`` only: it is an order of magnitude slower).
Measures events/s, CPU seconds per million events, peak RSS and state bytes per profile.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import (
    ROOT,
    Bench,
    Data,
    Progress,
    Result,
    Worker,
    alternate,
    du,
    lines_of,
    medians,
    produce,
    produce_held,
    target,
    timed_counter,
)

QUIX = "3.28.1"


def quix_python() -> tuple[str | None, str]:
    """A virtual environment with Quix Streams and cardflow (for its decoder and fold), built once
    into the cache: Quix pins confluent-kafka < 2.13 and an older pydantic, so it cannot share ours.
    Returns (its python, "") or (None, why not)."""
    from cardflow.config import load_settings

    home = load_settings(env={}).cache_dir / "bench" / f"quixstreams-{QUIX}"
    python = home / "bin" / "python"
    if (home / ".ready").exists():
        return str(python), ""
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True, capture_output=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        # cardflow's own requirements but the three Quix pins differently; then cardflow itself.
        subprocess.run(
            [
                *pip,
                f"quixstreams=={QUIX}",
                "faust-streaming[rocksdict]==0.15.3",
                "mode-streaming==0.7.1",
                "aiokafka==0.14.0",
                "fastavro==1.13.1",
                "orjson==3.13.0",
                "xxhash==4.1.0",
                "pyroaring==1.2.0",
                "PyYAML",
                "click",
                "aiohttp==3.14.5",
                "prometheus-client==0.26.0",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True, capture_output=True, text=True)
        subprocess.run(
            [str(python), "-c", "import quixstreams, cardflow.standard"],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        return None, f"could not build a Quix Streams {QUIX} environment: {(exc.stderr or '')[-500:]}"
    (home / ".ready").touch()
    return str(python), ""


def run_peer(python: str, kind: str, settings: Any, n: int, state: Path, log: Path) -> dict[str, float]:
    """One peer process until it folded ``n``: its rate between its first and ``n``-th record."""
    cmd = [
        python,
        "-m",
        "bench.peers",
        kind,
        "--broker",
        settings.broker,
        "--topic",
        settings.topic("events"),
        "--group",
        f"{settings.topic_prefix}{kind}",
        "--n",
        str(n),
        "--partitions",
        str(settings.partitions),
        "--state",
        str(state),
    ]
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            for line in lines_of(proc):
                if "first" in line:
                    first = line
                elif "done" in line:
                    last = line
                    if kind != "quix":
                        break
                elif "state" in line and last is not None:  # Quix writes its state at the closing checkpoint
                    last["disk_bytes"] = line["disk_bytes"]
                    break
        finally:
            proc.kill()
            proc.wait(30)
    if first is None or last is None:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"the {kind} peer stopped before folding {n} events; its log ends:\n{tail}")
    return {
        "events_per_s": (n - 1) / (last["done"] - first["first"]),
        "cpu_s_per_1m": (last["cpu"] - first["cpu"]) / n * 1_000_000,
        "peak_rss_mib": last["rss_mib"],
        "state_bytes": last["disk_bytes"],
    }


def run(bench: Bench) -> Result:
    progress = Progress("fold")
    events = bench.size(100_000, 1_000_000)
    data = Data(users=bench.size(10_000, 100_000), events=events, days=30, seed=1)
    faust_events = bench.size(5_000, 30_000, smoke=500)
    progress("generating events")
    records = data.records()
    users = data.distinct_users(records)
    result = Result(
        "fold",
        {
            "events": events,
            "users": data.users,
            "distinct_users": users,
            "partitions": bench.base.partitions,
            "faust_events": faust_events,
            "zipf_s": 1,
            "days": data.days,
        },
    )
    quix, why = quix_python()
    rounds: dict[int, Any] = {}

    def prepare(r: int) -> None:
        rounds[r] = bench.settings(f"fold{r}")
        produce(rounds[r], records)

    def cardflow(r: int) -> dict[str, float]:
        # Its own topics, the round's records held in an open transaction until the worker is up.
        here = bench.settings(f"fold{r}-cardflow")
        commit = produce_held(here, records)
        worker = Worker(here, "worker", "people", log=here.data_dir / "people.log")
        try:
            out = timed_counter(worker, "cardflow_people_folded_total", events, release=commit)
        finally:
            worker.stop()
        out["state_bytes"] = du(here.data_dir / "workers")
        return out

    def peer_of(kind: str, n: int, python: str = sys.executable) -> Any:
        def go(r: int) -> dict[str, float]:
            here = rounds[r]
            return run_peer(
                python, kind, here, n, here.data_dir / f"{kind}-state", here.data_dir / f"{kind}.log"
            )

        return go

    contenders = {"cardflow": cardflow, "ceiling": peer_of("ceiling", events)}
    if quix:
        contenders["quix"] = peer_of("quix", events, quix)
    else:
        result.notes.append(f"Quix Streams not measured: {why}")
    contenders["faust"] = peer_of("faust", faust_events)
    result.contenders = alternate(bench.rounds, contenders, progress, before_round=prepare)
    progress.done()
    for rows in result.contenders.values():
        for row in rows:
            row["bytes_per_profile"] = row.pop("state_bytes") / users
    worker = medians(result.contenders["cardflow"])["events_per_s"]
    for name in contenders:
        if name != "cardflow":
            # Ratio of medians and the median of each round's ratio: the second survives drift.
            per_round = [
                c["events_per_s"] / b["events_per_s"]
                for c, b in zip(result.contenders["cardflow"], result.contenders[name], strict=True)
            ]
            result.ratios[f"cardflow / {name}"] = sorted(per_round)[len(per_round) // 2]
    result.ratios = {k: round(v, 3) for k, v in result.ratios.items()}
    result.targets = [
        target("events/s vs the plain-loop ceiling", result.ratios.get("cardflow / ceiling"), ">=", 0.7),
        target("events/s vs Quix Streams", result.ratios.get("cardflow / quix"), ">=", 3),
        target("events/s vs a plain Faust agent", result.ratios.get("cardflow / faust"), ">=", 20),
    ]
    result.notes.append(f"worker median {worker:,.0f} events/s; ratios are medians of per-round ratios")
    return result
