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


def keys(client: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for raw in client.scan_iter(match="trackist_*", count=1000):
        key = raw.decode(errors="replace")
        expr = parse_key(key)
        if expr is not None:
            yield key, expr


def run(redis_url: str, post: Callable[[str, Any], Any], dry_run: bool, echo: Callable[[str], None]) -> int:
    """Import (or with ``dry_run`` list) every bitmapist key; returns how many keys."""
    try:
        import redis
    except ImportError:
        raise CardflowError("reading bitmapist's Redis needs redis-py: "
                            "pip install 'cardflow[bitmapist]'") from None

    try:
        client: Any = redis.Redis.from_url(redis_url)
    except ValueError as exc:
        raise CardflowError(f"--redis {redis_url!r}: {exc}") from None
    count = 0
    for key, expr in sorted(keys(client)):
        length = client.strlen(key)
        count += 1
        if dry_run:
            echo(f"{key}: {client.bitcount(key)} ids, {length} bytes → {expr}")
            continue
        ids = 0
        for offset in range(0, max(length, 1), SLICE):
            data = client.getrange(key, offset, offset + SLICE - 1) if length else b""
            last = offset + len(data) >= length
            if any(data) or last:  # the last slice always goes: it carries the key's length
                answer = post("/v1/bitmaps/import", {"expr": expr, "offset": offset, "length": length,
                                                     "bits": base64.b64encode(data).decode()})
                ids += answer["imported"]
        echo(f"{key}: {ids} ids imported")
    return count
