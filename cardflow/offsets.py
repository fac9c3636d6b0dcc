"""The push API's ``offsets`` (``partition:offset,…``): how far a client's events went in
``events``. ``POST /v1/events`` answers them; whatever waits for those events reads them back as
``after`` (card results, bitmaps)."""

from __future__ import annotations

import re
from collections.abc import Mapping

_PAIRS = re.compile(r"\d{1,9}:\d{1,19}(,\d{1,9}:\d{1,19})*")


def parse_offsets(text: str) -> dict[int, int] | None:
    """Partition → the highest offset ``text`` names; None when it is not that form."""
    if not _PAIRS.fullmatch(text):
        return None
    offsets: dict[int, int] = {}
    for pair in text.split(","):
        partition, offset = (int(x) for x in pair.split(":"))
        offsets[partition] = max(offset, offsets.get(partition, -1))
    return offsets


def format_offsets(offsets: Mapping[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))
