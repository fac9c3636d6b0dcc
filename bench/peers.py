"""The fold's baselines, each a process of its own: what a user could write instead of cardflow.

Every one reads the same events topic, decodes each record with cardflow's decoder and folds it
with the standard profile script, so only the machinery around the fold differs:

- ``ceiling``: a plain confluent-kafka consumer folding into a dict (no state store, no changelog);
- ``quix``: a Quix Streams app, its RocksDB state and changelog, the way its docs show a stateful
  ``update``; runs in its own virtual environment (Quix pins older confluent-kafka and pydantic);
- ``faust``: a plain Faust agent iterating its stream record by record into a RocksDB table.

Each prints ``BENCH {"first": ...}`` at its first record and ``BENCH {"done": ...}`` when it has
folded ``--n`` events: monotonic time (shared across processes on Linux), its own CPU seconds,
peak RSS and the bytes of its state on disk.

Run: python -m bench.peers {ceiling,quix,faust} --broker H:P --topic T --group G --n N --state DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

_OUT = os.fdopen(os.dup(1), "w")  # the real stdout: Faust's worker redirects sys.stdout to its log


def report(kind: str, **values: Any) -> None:
    _OUT.write("BENCH " + json.dumps({kind: time.monotonic(), "cpu": time.process_time(), **values}) + "\n")
    _OUT.flush()


def state_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def done(args: argparse.Namespace) -> None:
    # VmHWM, not ru_maxrss: the latter keeps the harness's peak from before exec.
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    report("done", rss_mib=hwm / 1024, disk_bytes=state_bytes(Path(args.state)))


class Fold:
    """Decode and fold, counting; reports the first record and the ``n``-th."""

    def __init__(self, args: argparse.Namespace) -> None:
        from cardflow.events import Decoder
        from cardflow.standard import standard

        self.decoder, self.standard, self.n, self.seen = Decoder(), standard, args.n, 0

    def __call__(self, profile: dict[str, Any] | None, value: bytes) -> dict[str, Any]:
        if self.seen == 0:
            report("first")
        event = self.decoder.record(value)
        self.seen += 1
        return self.standard(profile or {}, event)


def ceiling(args: argparse.Namespace) -> None:
    from confluent_kafka import Consumer

    fold = Fold(args)
    profiles: dict[bytes | None, dict[str, Any]] = {}
    consumer = Consumer(
        {
            "bootstrap.servers": args.broker,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    while fold.seen < args.n:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error():
                continue
            key = msg.key()
            profiles[key] = fold(profiles.get(key), msg.value() or b"")
    done(args)
    consumer.close()


def quix(args: argparse.Namespace) -> None:
    from quixstreams import Application, State

    fold = Fold(args)
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state,
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, key_deserializer="bytes", value_deserializer="bytes")

    def update(value: bytes, state: State) -> None:  # the message's key is the state's key
        state.set("profile", fold(state.get("profile"), value))
        if fold.seen == args.n:
            done(args)
            app.stop()

    app.dataframe(topic).update(update, stateful=True)
    app.run()
    report("state", disk_bytes=state_bytes(Path(args.state)))  # after the closing checkpoint


def faust_agent(args: argparse.Namespace) -> None:
    import faust

    fold = Fold(args)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.broker}",
        store="rocksdb://",
        datadir=args.state,
        topic_partitions=args.partitions,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(
        args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    profiles = app.Table("profiles", default=dict, partitions=args.partitions)

    @app.agent(topic)
    async def folder(stream: Any) -> None:
        async for key, value in stream.items():
            uid = key.decode()
            profiles[uid] = fold(profiles[uid], value)
            if fold.seen == args.n:
                done(args)
                os._exit(0)  # measured; the harness needs no clean shutdown

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=("ceiling", "quix", "faust"))
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--state", required=True)
    args = parser.parse_args()
    {"ceiling": ceiling, "quix": quix, "faust": faust_agent}[args.kind](args)


if __name__ == "__main__":
    main()
