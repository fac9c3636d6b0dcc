"""``cardflow bench <scenario> [--quick] [--rounds N]``: run scenarios, print their tables, write
their JSON results to bench/results/, and (``cardflow bench docs``) render docs/benchmarks.md."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
import traceback
from pathlib import Path

from bench.harness import RESULTS, Bench, Result, table

# scenario → (module in bench/, what it measures); `all` runs them in this order.
SCENARIOS = {
    "fold": ("bench.fold", "events → profiles: the people worker vs a plain loop, Quix Streams, Faust"),
    "scripts": ("bench.scripts", "the fold with a profile script: filtered vs not, time budget on vs off"),
    "latency": ("bench.latency", "produce → profile and → card result at a fixed rate"),
    "cards": ("bench.cards", "produce → card result over 100k and 1M profiles: incremental vs full maps"),
    "cohort": ("bench.cohort", "a 90-day retention table: the card and the warehouse vs bitmapist on Redis"),
    "bitmaps": ("bench.bitmaps", "bitmapist's API on cardflow vs bitmapist on Redis: memory, cohorts"),
    "ingest": ("bench.ingest", "SDK and push-API events/s vs a raw producer and a bare endpoint"),
    "archive": ("bench.lake", "the archive worker vs a plain consumer writing the same objects"),
    "replay": ("bench.lake", "`cardflow replay` vs a plain loop producing the lake's records"),
    "warehouse": ("bench.warehouse", "the warehouse loader vs a bulk insert; insights query times"),
    "recovery": ("bench.recovery", "rebuilding profiles from the changelog; a second worker taking over"),
}


def run_one(bench: Bench, name: str) -> Result:
    module_name, _ = SCENARIOS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return Result(name, {}, missing=f"{module_name} does not exist yet")
    runner = getattr(module, f"run_{name}", None) or module.run
    return runner(bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cardflow bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n" + "\n".join(f"  {k:10} {v[1]}" for k, v in SCENARIOS.items()),
    )
    parser.add_argument("scenario", nargs="+", choices=[*SCENARIOS, "all", "docs"])
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="small sizes (all of them in under 10 minutes)")
    sizes.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks the harness runs")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds per scenario (default 1 smoke, 2 quick, 3 full)"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"where JSON results go (default {RESULTS})"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    parser.add_argument("--broker", help="use this running broker (host:port) instead of starting one")
    args = parser.parse_args(argv)
    if args.scenario == ["docs"]:
        from bench.report import write_docs

        print(f"wrote {write_docs(args.out)}")
        return 0
    names = list(SCENARIOS) if "all" in args.scenario else [s for s in args.scenario if s != "docs"]
    command = "cardflow bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    level = "smoke" if args.smoke else "quick" if args.quick else "full"
    bench = Bench(level, args.rounds, args.out, args.keep, args.broker)
    failed = []
    try:
        for name in names:
            started = time.monotonic()
            try:
                result = run_one(bench, name)
            except Exception:  # noqa: BLE001 - one scenario's failure is reported; the others still run
                traceback.print_exc()
                failed.append(name)
                continue
            path = bench.write(result, command, time.monotonic() - started)
            print(table(result))
            print(f"({time.monotonic() - started:.0f} s; {path})\n", flush=True)
            if any(t.what.startswith("cells equal") and t.met is False for t in result.targets):
                failed.append(name)  # a wrong answer is a failure, not a slow one
    finally:
        bench.close()
    if "docs" in args.scenario:
        from bench.report import write_docs

        print(f"wrote {write_docs(args.out)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
