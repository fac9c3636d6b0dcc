"""``cardflow import bitmapist``: a bitmapist keyspace on Redis → cardflow's bitmaps.

Reads bitmapist's keys (``trackist_<event>_<period>``: months ``2024-1``, ISO weeks ``W2024-1``,
days ``2024-1-5``, hours ``2024-1-5-13``, unique flags ``u``; its temporary ``trackist_bitop_*``
results are skipped) and sends each key's bytes, in slices, to ``POST /v1/bitmaps/import``
(admin scope). Slices with no bit set are not sent, so a sparse key with huge ids costs what it
holds. Importing twice changes nothing (bitmaps are ORed).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from typing import Any

from cardflow.bitmaps import IMPORT_SLICE
from cardflow.errors import CardflowError

KEY = re.compile(r"^trackist_(?P<event>.+)_(?P<period>u|W\d{1,4}-\d{1,2}|\d{1,4}-\d{1,2}(?:-\d{1,2}){0,2})$")
SLICE = IMPORT_SLICE  # bytes of a key per request: ≤ 512k ids, well under the API's 1 MB body


def parse_key(key: str) -> dict[str, Any] | None:
    """The bitmap a bitmapist key names, as ``POST /v1/bitmaps/ops`` writes it; None for a key
    that is not bitmapist's (or one of its temporary bit operations)."""
    found = KEY.match(key)
    if found is None or key.startswith("trackist_bitop_"):
        return None
    event, period = found["event"], found["period"]
    if period == "u":
        return {"event": event, "period": "unique"}
    if period.startswith("W"):
        year, week = (int(x) for x in period[1:].split("-"))
        return {"event": event, "period": "week", "year": year, "week": week}
    parts = [int(x) for x in period.split("-")]
    fields = dict(zip(("year", "month", "day", "hour"), parts, strict=False))
    return {"event": event, "period": ("month", "day", "hour")[len(parts) - 2], **fields}


def keys(client: Any, skipped: Callable[[str], None]) -> Iterator[tuple[bytes, str, dict[str, Any]]]:
    """bitmapist's keys: (the key as Redis holds it, its name, the bitmap it names)."""
    for raw in client.scan_iter(match=b"trackist_*", count=1000):
        try:
            key = raw.decode()
        except UnicodeDecodeError:  # bitmapist writes UTF-8 names; a decoded stand-in would rename it
            skipped(f"{raw!r}: not a bitmapist key (its name is not UTF-8)")
            continue
        expr = parse_key(key)
        if expr is not None:
            yield raw, key, expr
        elif not key.startswith("trackist_bitop_"):
            skipped(f"{key}: not a bitmapist key name (trackist_<event>_<period>)")


def run(redis_url: str, post: Callable[[str, Any], Any], dry_run: bool, echo: Callable[[str], None]) -> int:
    """Import (or with ``dry_run`` list) every bitmapist key; returns how many keys.

    A key that cannot be imported (refused by the API as a bad request, not a string in Redis)
    is that key's failure: the others are imported, and a CardflowError listing the failed ones
    ends the run. Anything that would fail every key (Redis or the API unreachable, a token
    without admin scope) ends it at once."""
    try:
        import redis
    except ImportError:
        raise CardflowError("reading bitmapist's Redis needs redis-py: "
                            "pip install 'cardflow[bitmapist]'") from None
    from cardflow.client import ClientError

    try:
        client: Any = redis.Redis.from_url(redis_url)
    except ValueError as exc:
        raise CardflowError(f"--redis {redis_url!r}: {exc}") from None
    skipped: list[str] = []
    failed: list[str] = []
    count = 0
    for raw, key, expr in sorted(keys(client, skipped.append)):
        try:
            if dry_run:
                echo(f"{key}: {client.bitcount(raw)} ids, {client.strlen(raw)} bytes → {expr}")
            else:
                echo(f"{key}: {_import_key(client, raw, expr, post)} ids imported")
            count += 1
        except ClientError as exc:
            if exc.status != 400:
                raise
            failed.append(f"{key}: {exc}")
        except redis.ResponseError as exc:  # e.g. WRONGTYPE: a key under bitmapist's names, not a string
            failed.append(f"{key}: Redis: {exc}")
    for line in skipped:
        echo(f"skipped {line}")
    if failed:
        for line in failed:
            echo(f"NOT imported {line}")
        raise CardflowError(f"{len(failed)} of {len(failed) + count} bitmapist keys could not be "
                            f"{'read' if dry_run else 'imported'} (listed above); the other {count} were")
    return count


def _import_key(client: Any, raw: bytes, expr: dict[str, Any], post: Callable[[str, Any], Any]) -> int:
    length = client.strlen(raw)
    ids = 0
    for offset in range(0, max(length, 1), SLICE):
        data = client.getrange(raw, offset, offset + SLICE - 1) if length else b""
        last = offset + len(data) >= length
        if any(data) or last:  # the last slice always goes: it carries the key's length
            answer = post("/v1/bitmaps/import", {"expr": expr, "offset": offset, "length": length,
                                                 "bits": base64.b64encode(data).decode()})
            ids += answer["imported"]
    return ids
