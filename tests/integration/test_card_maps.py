"""Card maps in their child process, over a real RocksDB written by this test as the worker would:
results follow the primary's writes, a raising card and a looping card become error partials,
and the child is replaced after an overrun."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from rocksdict import Options, Rdict

from cardflow.agents.card_maps import MapProcess
from cardflow.agents.card_metrics import CardMetrics
from cardflow.batches import FAUST_KEY_PREFIX
from cardflow.cards import decode_partial, load_cards
from cardflow.config import Settings
from cardflow.profile_values import encode_value

CARDS = ("cardflow.builtin_cards:TopEvents,tests.integration.extra_cards:Broken,"
         "tests.integration.extra_cards:Forever,tests.integration.extra_cards:Quitter")


def put(db: Rdict, uid: str, events: dict[str, int], offset: int) -> None:
    meta = {"offset": offset, "ids": {}, "version": 1, "max_ts": offset}
    value = {"profile": {"events": events}, "meta": meta}
    db[uid.encode()] = encode_value(value)


def test_maps_follow_writes_and_survive_bad_cards(tmp_path: Path, settings: Settings) -> None:
    settings = settings.replace(cards=CARDS)
    cards = {c.id: c for c in load_cards(settings.cards, ["standard"])}
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    path = tmp_path / "profiles-0.db"
    db = Rdict(str(path), options)
    db[FAUST_KEY_PREFIX + b"\x00offset__"] = b"41"
    put(db, "a", {"view": 2}, 10)
    put(db, "b", {"view": 1, "buy": 1}, 12)
    process = MapProcess(settings, cards, CardMetrics(CollectorRegistry()), settings.data_dir / "maps")
    try:
        partials, overran = process.run(0, path, ["quitter", "top-events", "broken", "forever"])
        by_card = {p.card_id: p for p in partials}
        assert overran == ["quitter", "forever"]
        assert "ended the map process (exit code 3)" in (by_card["quitter"].error or "")
        assert decode_partial(by_card["top-events"].partial)["counts"] == {"view": 3, "buy": 1}
        assert (by_card["top-events"].offset, by_card["top-events"].max_ts) == (12, 12)
        assert "ZeroDivisionError: this card always fails" in (by_card["broken"].error or "")
        assert "longer than its budget of 2s over 2 profiles" in (by_card["forever"].error or "")

        # A new child; the writes made since are seen (the secondary catches up with the primary).
        put(db, "c", {"buy": 5}, 20)
        partials, overran = process.run(0, path, ["top-events"])
        assert not overran
        assert decode_partial(partials[0].partial)["counts"] == {"view": 3, "buy": 6}
        assert partials[0].offset == 20
        # Kept profiles: only the profiles the worker sends change; None reads the whole partition.
        put(db, "a", {"view": 10}, 21)
        put(db, "d", {"buy": 1}, 22)
        partials, _ = process.run(0, path, ["top-events"], changed=[(b"d", db.get(b"d"))])
        assert decode_partial(partials[0].partial)["counts"] == {"view": 3, "buy": 7}
        assert partials[0].offset == 22
        partials, _ = process.run(0, path, ["top-events"], changed=None)
        assert decode_partial(partials[0].partial)["counts"] == {"view": 11, "buy": 7}
        del db[b"d"]
        partials, _ = process.run(0, path, ["top-events"], changed=[(b"d", None)])
        assert decode_partial(partials[0].partial)["counts"] == {"view": 11, "buy": 6}
        # The child is its own lean interpreter: none of the worker's libraries (Faust, the Kafka
        # clients, pydantic) are loaded in it; their native modules would be mapped if they were.
        assert process.pid is not None
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "rocksdict" in maps  # what it does use
        for library in ("pydantic_core", "confluent_kafka", "aiokafka", "faust"):
            assert library not in maps, library
        # A partition with no database yet is an empty partial, not an error.
        partials, _ = process.run(1, tmp_path / "profiles-1.db", ["top-events"])
        assert partials[0].error is None and partials[0].offset == -1
    finally:
        process.close()
        db.close()
