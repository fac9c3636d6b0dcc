"""The dedup-id index kept in each profile: recent event ids, bucketed by event day.

A re-sent event (same ``event_id``) within the horizon of the user's latest event is a
duplicate. Ids are kept as fixed-width digests, each day's sorted and concatenated into one
string, so the index is compact JSON and a lookup is a search in one day's string.
"""

from __future__ import annotations

from xxhash import xxh3_64_hexdigest

ID_CHARS = 12  # 48 bits of a digest of the event id: collisions among one user's recent ids are negligible
MAX_IDS = 20_000  # bound per profile, whatever the horizon


def dedup_id(event_id: str) -> str:
    """The 48 bits (12 hex chars) an event id is deduplicated by: a digest of the whole id, as
    sent ids share long prefixes ("evt_0000000001", "ajs-next-…") and vary in length, and the
    buckets hold fixed-width ids. Derived ids are digested too, so an event's key does not
    depend on whether its id was sent or derived (the push API sends the derived one).

    XXH3 (64 bits, stable across platforms and versions) rather than a cryptographic digest:
    it runs for every event, and a producer able to craft colliding ids for one user and day
    could as well send that user's events with the same id."""
    return xxh3_64_hexdigest(event_id.encode())[:ID_CHARS]


_SCAN_CHARS = 32 * ID_CHARS  # below this a chunk is searched by str.find, above by bisection


def contains(chunk: str, short: str) -> bool:
    """Whether the sorted chunk of fixed-width ids holds ``short``."""
    if len(chunk) <= _SCAN_CHARS:
        at = chunk.find(short)
        while at >= 0 and at % ID_CHARS:  # a match across two ids does not count
            at = chunk.find(short, at + 1)
        return at >= 0
    at = _position(chunk, short)
    return chunk[at:at + ID_CHARS] == short


def bucketed(ids: dict[str, str], new_ids: dict[int, set[str]], oldest_day: int) -> dict[str, str]:
    """Recent event ids, bucketed by event day, each day's ids sorted and concatenated as
    fixed-width strings (13 bytes an id in JSON); ``ids`` is updated in place.

    Order-independent: what remains is every id whose event day is within the
    horizon of the latest event, trimmed to MAX_IDS by dropping whole oldest
    days; the stored JSON sorts the days (``encode_value``), so equal id sets
    give equal bytes. A re-sent event has its original event time, so an id is
    looked up in its own day's bucket only.
    """
    for day, shorts in new_ids.items():
        key = str(day)
        chunk = ids.get(key)
        ordered = sorted(shorts)
        ids[key] = "".join(ordered) if chunk is None else _merge(chunk, ordered)
    total = sum(map(len, ids.values())) // ID_CHARS
    if total <= MAX_IDS and min(map(int, ids)) >= oldest_day:
        return ids  # the usual case: nothing out of the horizon, nothing over the bound
    days = sorted(ids, key=int)
    while days and (int(days[0]) < oldest_day or total > MAX_IDS):
        total -= len(ids.pop(days.pop(0))) // ID_CHARS
    return ids


def _position(chunk: str, short: str, lo: int = 0) -> int:
    """Where ``short`` is, or would go, in a sorted chunk of fixed-width ids (a string index)."""
    hi = len(chunk) // ID_CHARS
    lo //= ID_CHARS
    while lo < hi:
        mid = (lo + hi) // 2
        if chunk[mid * ID_CHARS:(mid + 1) * ID_CHARS] < short:
            lo = mid + 1
        else:
            hi = mid
    return lo * ID_CHARS


def _merge(chunk: str, shorts: list[str]) -> str:
    """``chunk`` with ``shorts`` (sorted) inserted in order."""
    if len(shorts) == 1:
        at = _position(chunk, shorts[0])
        return chunk[:at] + shorts[0] + chunk[at:]
    parts: list[str] = []
    start = 0
    for short in shorts:
        at = _position(chunk, short, start)
        parts += (chunk[start:at], short)
        start = at
    parts.append(chunk[start:])
    return "".join(parts)
