"""bitmapist's bitmaps, served from the warehouse: period bitmaps, bit operations, counts.

The warehouse keeps one roaring bitmap of user ids per (event, period) — hour, day, ISO week,
month — and one per unique flag (tables ``bitmaps`` and ``bitmap_flags``, migration 3, filled
from every loaded event with an integer uid). A request names bitmaps the way bitmapist does
(event + year/month/week/day/hour, or a flag) and nests ``and``/``or``/``xor``/``not`` over them;
the leaves are read in one query per table and the operations run here on pyroaring bitmaps.

Exactly bitmapist's answers, including its corners: a period that never existed (month 13, ISO
week 53 of a 52-week year) is an empty bitmap; a year is the OR of its twelve months; ``not``
flips the bits up to the byte length of its operand as Redis's BITOP NOT does — a bitmap's length
is its highest id ever set (for a flag: ever set or unset) rounded up to whole bytes, and an
operation's is the longest of its operands'.
"""

from __future__ import annotations

import array
import itertools
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from pyroaring import BitMap

from cardflow.errors import QueryError

KINDS = {"hour": "H", "day": "D", "week": "W", "month": "M"}
PERIODS = (*KINDS, "year", "unique")
OPS = ("and", "or", "xor", "not")
MAX_ID = 2**32 - 1
IMPORT_SLICE = 64 * 1024  # bytes of a Redis bitmap per import request: at most 512k ids to insert


@dataclass(frozen=True)
class Limits:
    """What one request may ask (``bitmaps_*`` settings)."""

    queries: int = 20_000  # expressions in one request
    nodes: int = 200_000  # operations and leaves over all its expressions
    depth: int = 64  # nesting of one expression
    leaves: int = 5_000  # distinct bitmaps read
    members: int = 100_000  # ids in the pages of members of one request
    contains: int = 100_000  # ids asked about in one expression


Leaf = tuple[str, str, str]  # (event, kind, start as 'YYYY-MM-DD HH:00:00' or '' for a flag)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError(where, f"must be an integer, got {value!r}")
    return value


def _start(period: str, node: dict[str, Any], where: str) -> datetime | None:
    """The UTC start of a bitmapist period, or None when bitmapist's key for it can never be
    marked (it names no real period)."""
    year = _int(node.get("year"), f"{where}.year")
    try:
        if period == "month":
            return datetime(year, _int(node.get("month"), f"{where}.month"), 1, tzinfo=UTC)
        if period == "day":
            return datetime(
                year,
                _int(node.get("month"), f"{where}.month"),
                _int(node.get("day"), f"{where}.day"),
                tzinfo=UTC,
            )
        if period == "hour":
            return datetime(
                year,
                _int(node.get("month"), f"{where}.month"),
                _int(node.get("day"), f"{where}.day"),
                _int(node.get("hour"), f"{where}.hour"),
                tzinfo=UTC,
            )
        if period == "week":
            week = _int(node.get("week"), f"{where}.week")
            monday = date.fromisocalendar(year, week, 1)
            return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    except (ValueError, OverflowError):  # month 13, 30 February, week 53 of a 52-week year, year 0
        return None
    raise AssertionError(period)


class Plan:
    """A request's expressions, parsed into one table of distinct nodes (an operation over the
    same operands is one node, however often it is written or referred to): ``("leaf", key)``,
    ``("empty",)`` or ``(op, child ids)``. Evaluated once each, whatever the sharing."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.nodes: list[tuple[Any, ...]] = []
        self.depths: list[int] = []
        self.ids: dict[tuple[Any, ...], int] = {}
        self.leaves: set[Leaf] = set()
        self.parsed = 0  # objects read, shared or not: what a request costs to parse

    def _add(self, node: tuple[Any, ...], depth: int, where: str) -> int:
        held = self.ids.get(node)
        if held is not None:
            return held
        if depth > self.limits.depth:
            raise QueryError(where, f"nests deeper than {self.limits.depth} (bitmaps_max_depth)")
        if len(self.nodes) >= self.limits.nodes:
            raise QueryError(
                where, f"the request has over {self.limits.nodes} operations and bitmaps (bitmaps_max_nodes)"
            )
        self.ids[node] = len(self.nodes)
        self.nodes.append(node)
        self.depths.append(depth)
        if node[0] == "leaf":
            self.leaves.add(node[1])
        return len(self.nodes) - 1

    @staticmethod
    def _operands(op: str, args: list[Any], where: str) -> Iterator[tuple[Any, str]]:
        """``args`` with operands of the same ``and``/``or``/``xor`` spliced in (each is associative,
        and so is the length BITOP NOT later flips up to: the longest operand's), so a chain such
        as ``((a | b) | c) | …`` is one operation, not nested ones."""
        stack = [(a, f"{where}.args[{i}]") for i, a in reversed(list(enumerate(args)))]
        while stack:
            arg, at = stack.pop()
            inner = arg.get("args") if isinstance(arg, dict) and op != "not" and arg.get("op") == op else None
            if isinstance(inner, list) and inner and "ref" not in arg:
                stack += [(a, f"{at}.args[{i}]") for i, a in reversed(list(enumerate(inner)))]
            else:
                yield arg, at

    def _refs(self, args: list[Any], roots: list[int]) -> tuple[int, ...] | None:
        """The operands when every one is a valid ``{"ref": i}`` (a cohort table's ~8 000 cells),
        taken without a call each; None otherwise (``parse`` then says what is wrong)."""
        if not all(type(a) is dict and len(a) == 1 and type(a.get("ref")) is int for a in args):
            return None
        refs = [a["ref"] for a in args]
        if not 0 <= min(refs) <= max(refs) < len(roots):
            return None
        self.parsed += len(refs)
        return tuple(roots[r] for r in refs)

    def parse(self, node: Any, where: str, roots: list[int]) -> int:
        """The id of ``node``; ``{"ref": i}`` is the expression of the request's query ``i``
        (one before this one) in ``roots``."""
        self.parsed += 1
        if self.parsed > 10 * self.limits.nodes:
            raise QueryError(
                where, f"the request has over {self.limits.nodes} operations and bitmaps (bitmaps_max_nodes)"
            )
        if not isinstance(node, dict):
            raise QueryError(
                where, "must be an object: a bitmap {event, period, …}, an operation {op, args} or {ref}"
            )
        if "ref" in node:
            ref = _int(node["ref"], f"{where}.ref")
            if not 0 <= ref < len(roots):
                raise QueryError(
                    f"{where}.ref", f"must be the index of an earlier query (0 to {len(roots) - 1})"
                )
            return roots[ref]
        if "op" in node:
            op, args = node.get("op"), node.get("args")
            if op not in OPS:
                raise QueryError(f"{where}.op", f"must be one of {', '.join(OPS)}, got {op!r}")
            if not isinstance(args, list) or not args:
                raise QueryError(f"{where}.args", "must be a non-empty list of expressions")
            if op == "not" and len(args) != 1:
                raise QueryError(
                    f"{where}.args", f"'not' takes one expression (as Redis's BITOP NOT), got {len(args)}"
                )
            children = self._refs(args, roots)
            if children is None:
                children = tuple(self.parse(a, w, roots) for a, w in self._operands(op, args, where))
            return self._add((op, children), 1 + max(self.depths[c] for c in children), where)
        event, period = node.get("event"), node.get("period")
        if not isinstance(event, str) or not event:
            raise QueryError(f"{where}.event", "must be a non-empty string (an event or flag name)")
        if period not in PERIODS:
            raise QueryError(f"{where}.period", f"must be one of {', '.join(PERIODS)}, got {period!r}")
        if period == "unique":
            return self._add(("leaf", (event, "U", "")), 1, where)
        if period == "year":  # bitmapist's YearEvents: the OR of the year's months
            year = _int(node.get("year"), f"{where}.year")
            months = tuple(
                self.parse({"event": event, "period": "month", "year": year, "month": m}, where, roots)
                for m in range(1, 13)
            )
            return self._add(("or", months), 2, where)
        start = _start(period, node, where)
        if start is None or not 1970 <= start.year < 2106:  # the warehouse's DateTime range
            return self._add(("empty",), 1, where)
        return self._add(("leaf", (event, KINDS[period], start.strftime("%Y-%m-%d %H:%M:%S"))), 1, where)


@dataclass
class Query:
    root: int
    count: bool
    contains: list[int]
    members_after: int | None  # None: no members wanted
    members_limit: int


def parse(body: Any, limits: Limits) -> tuple[Plan, list[Query]]:
    """The queries of a ``POST /v1/bitmaps/ops`` body; QueryError naming the field otherwise."""
    if not isinstance(body, dict) or not isinstance(body.get("queries"), list) or not body["queries"]:
        raise QueryError("queries", 'give a non-empty list of queries: {"queries": [{"expr": …}]}')
    raw = body["queries"]
    if len(raw) > limits.queries:
        raise QueryError(
            "queries", f"{len(raw)} queries, over the limit of {limits.queries} (bitmaps_max_queries)"
        )
    plan = Plan(limits)
    queries: list[Query] = []
    roots: list[int] = []  # each query's expression, for the later ones' refs
    paged = 0  # ids the request's pages of members may answer, all queries together
    for i, q in enumerate(raw):
        where = f"queries[{i}]"
        if not isinstance(q, dict) or "expr" not in q:
            raise QueryError(where, "must be an object with an expr")
        unknown = set(q) - {"expr", "count", "contains", "members"}
        if unknown:
            raise QueryError(
                f"{where}.{sorted(unknown)[0]}", "is not a query field (expr, count, contains, members)"
            )
        root = plan.parse(q["expr"], f"{where}.expr", roots)
        roots.append(root)
        if len(plan.leaves) > limits.leaves:
            raise QueryError(
                "queries", f"the request reads over {limits.leaves} stored bitmaps (bitmaps_max_leaves)"
            )
        contains = q.get("contains", [])
        if not isinstance(contains, list) or len(contains) > limits.contains:
            raise QueryError(f"{where}.contains", f"must be a list of at most {limits.contains} ids")
        ids = [_id(v, f"{where}.contains[{j}]") for j, v in enumerate(contains)]
        members = q.get("members")
        after, limit = None, 0
        if members is not None:
            if not isinstance(members, dict):
                raise QueryError(f"{where}.members", "must be an object {after, limit}")
            after = _int(members.get("after", -1), f"{where}.members.after")
            limit = _int(members.get("limit", 1000), f"{where}.members.limit")
            if not -1 <= after <= MAX_ID:
                raise QueryError(f"{where}.members.after", "must be an id, or -1 for the first page")
            if not 1 <= limit <= limits.members:
                raise QueryError(f"{where}.members.limit", f"must be from 1 to {limits.members}")
            paged += limit
            if paged > limits.members:  # else one request could ask for queries × members ids
                raise QueryError(f"{where}.members.limit", (
                    f"the request's pages of members add up to over {limits.members} ids "
                    "(bitmaps_max_members): ask for fewer or smaller pages, in several requests"))
        count = q.get("count", True)
        if not isinstance(count, bool):
            raise QueryError(f"{where}.count", "must be true or false")
        queries.append(Query(root, count, ids, after, limit))
    return plan, queries


def _id(value: Any, where: str) -> int:
    """An id as bitmapist takes it: an integer in [0, 2^32)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise QueryError(where, f"must be an integer from 0 to {MAX_ID} (bitmapist's ids), got {value!r}")
    return value


Value = tuple[BitMap, int]  # the bitmap and its length in bytes (what BITOP NOT flips up to)


def _nbytes(bitmap: BitMap) -> int:
    return bitmap.max() // 8 + 1 if bitmap else 0


class Cache:
    """Stored bitmaps kept between requests, each with the state of the table part it was read
    from: its month's partition of ``bitmaps`` (or all of ``bitmap_flags``) as ``system.parts``
    shows it — parts, rows, the highest block number (every insert raises it) and data version
    (every mutation, a delete included, raises it). A bitmap is used again only while that state
    is unchanged, so an insert into this month leaves last month's bitmaps cached. Bounded by
    their serialized size (``bitmaps_cache_mb``), least recently used out first."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held: OrderedDict[Leaf, tuple[Any, Value, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, leaf: Leaf, mark: Any) -> Value | None:
        with self._lock:
            held = self._held.get(leaf)
            if held is None or held[0] != mark:
                self.misses += 1
                return None
            self._held.move_to_end(leaf)
            self.hits += 1
            return held[1]

    def put(self, leaf: Leaf, mark: Any, value: Value) -> None:
        stats = value[0].get_statistics()  # what its containers hold in memory, plus per-container overhead
        size = (stats["n_bytes_array_containers"] + stats["n_bytes_run_containers"]
                + stats["n_bytes_bitset_containers"] + 48 * stats["n_containers"] + 200)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._held.pop(leaf, None)
            if old is not None:
                self._bytes -= old[2]
            self._held[leaf] = (mark, value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, _, dropped) = self._held.popitem(last=False)
                self._bytes -= dropped


class Reader:
    """Reads leaves from the warehouse (blocking: call from a thread), through ``cache`` if any."""

    def __init__(self, wh: Any, cache: Cache | None = None) -> None:
        self.wh, self.cache = wh, cache

    def marks(self) -> dict[tuple[str, str], tuple[int, ...]]:
        """(table, partition id) → the state of its active parts."""
        rows = self.wh.query(
            "SELECT table AS t, partition_id AS p, count() AS parts, sum(rows) AS n, "
            "max(max_block_number) AS block, max(data_version) AS version FROM system.parts "
            "WHERE database = {db:String} AND table IN ('bitmaps', 'bitmap_flags') AND active "
            "GROUP BY table, partition_id",
            {"db": self.wh.database},
        )
        return {(r["t"], r["p"]): (int(r["parts"]), int(r["n"]), int(r["block"]), int(r["version"]))
                for r in rows}

    def read(self, leaves: Iterable[Leaf]) -> dict[Leaf, Value]:
        if self.cache is None:
            return self._fetch(leaves)
        marks = self.marks()

        def mark(leaf: Leaf) -> Any:
            part = ("bitmap_flags", "all") if leaf[1] == "U" else ("bitmaps", leaf[2][:4] + leaf[2][5:7])
            return marks.get(part)

        out: dict[Leaf, Value] = {}
        missing = []
        for leaf in set(leaves):
            held = self.cache.get(leaf, mark(leaf))
            if held is None:
                missing.append(leaf)
            else:
                out[leaf] = held
        for leaf, value in self._fetch(missing).items():
            # Read after the marks: a change in between shows as a new mark next time (a miss).
            self.cache.put(leaf, mark(leaf), value)
            out[leaf] = value
        return out

    def _fetch(self, leaves: Iterable[Leaf]) -> dict[Leaf, Value]:
        leaves = sorted(set(leaves))
        out: dict[Leaf, Value] = {leaf: (BitMap(), 0) for leaf in leaves}
        periods = [leaf for leaf in leaves if leaf[1] != "U"]
        if periods:
            data = self.wh.select_binary(
                "SELECT indexOf(arrayZip({e:Array(String)}, {k:Array(String)}, {s:Array(String)}), "
                "(event, toString(kind), toString(start))) AS i, "
                f"bitmapToArray(groupBitmapMergeState(users)) FROM {self.wh.database}.bitmaps "
                "WHERE event IN {events:Array(String)} AND kind IN {kinds:Array(String)} "
                "AND start BETWEEN {low:DateTime('UTC')} AND {high:DateTime('UTC')} "
                "GROUP BY event, kind, start HAVING i > 0",
                {
                    "e": [e for e, _, _ in periods],
                    "k": [k for _, k, _ in periods],
                    "s": [s for _, _, s in periods],
                    "events": sorted({e for e, _, _ in periods}),
                    "kinds": sorted({k for _, k, _ in periods}),
                    "low": min(s for _, _, s in periods),
                    "high": max(s for _, _, s in periods),
                },
            )
            for i, ids, _ in _rows(data, with_max=False):
                bitmap = BitMap(ids)
                out[periods[i - 1]] = (bitmap, _nbytes(bitmap))
        flags = [leaf for leaf in leaves if leaf[1] == "U"]
        if flags:
            names = [e for e, _, _ in flags]
            data = self.wh.select_binary(
                "SELECT indexOf({names:Array(String)}, event) AS i, "
                "bitmapToArray(groupBitmapStateIf(uid, value = 1)), "
                f"max(uid) FROM {self.wh.database}.bitmap_flags FINAL WHERE event IN {{names:Array(String)}} "
                "GROUP BY event",
                {"names": names},
            )
            for i, ids, top in _rows(data, with_max=True):
                # A flag's length counts ids unset since (Redis's SETBIT 0 grows the key too).
                out[flags[i - 1]] = (BitMap(ids), top // 8 + 1)
        return out


def _rows(data: bytes, with_max: bool) -> Iterable[tuple[int, array.array[int], int]]:
    """RowBinary rows of (UInt64 index, Array(UInt32)[, UInt32 max])."""
    at = 0
    while at < len(data):
        (i,) = struct.unpack_from("<Q", data, at)
        at += 8
        n, shift = 0, 0
        while True:  # the array's length, a LEB128 varint
            byte = data[at]
            at += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        # array.array, not numpy: pyroaring builds a bitmap from it ~10x faster (buffer protocol).
        ids = array.array("I", data[at : at + 4 * n])
        if sys.byteorder == "big":
            ids.byteswap()  # RowBinary is little-endian
        at += 4 * n
        top = 0
        if with_max:
            (top,) = struct.unpack_from("<I", data, at)
            at += 4
        yield i, ids, top


def answer(plan: Plan, queries: list[Query], values: dict[Leaf, Value]) -> list[dict[str, Any]]:
    """Each query's answer: ``count``, ``contains`` (booleans), ``members`` and ``next`` (the
    ``after`` of the next page, or None when this was the last)."""
    memo: list[Value | None] = [None] * len(plan.nodes)

    def value(node_id: int) -> Value:
        held = memo[node_id]
        if held is not None:
            return held
        node = plan.nodes[node_id]
        kind = node[0]
        if kind == "leaf":
            got = values[node[1]]
        elif kind == "empty":
            got = (BitMap(), 0)
        else:
            parts = [value(c) for c in node[1]]
            length = max(n for _, n in parts)
            bitmaps = [b for b, _ in parts]
            if kind == "not":
                got = (bitmaps[0].flip(0, length * 8), length)
            elif kind == "and":
                got = (BitMap.intersection(*bitmaps) if len(bitmaps) > 1 else bitmaps[0], length)
            elif kind == "or":
                got = (BitMap.union(*bitmaps), length)
            else:
                acc = bitmaps[0]
                for b in bitmaps[1:]:
                    acc = acc ^ b
                got = (acc, length)
        memo[node_id] = got
        return got

    def count(node_id: int) -> int:
        node = plan.nodes[node_id]
        # The cohort table's case, an AND of two: counted without building the intersection.
        if node[0] == "and" and len(node[1]) == 2 and memo[node_id] is None:
            return int(value(node[1][0])[0].intersection_cardinality(value(node[1][1])[0]))
        return len(value(node_id)[0])

    out = []
    for q in queries:
        result: dict[str, Any] = {}
        if q.count:
            result["count"] = count(q.root)
        if q.contains:
            bitmap = value(q.root)[0]
            result["contains"] = [i in bitmap for i in q.contains]
        if q.members_after is not None:
            bitmap = value(q.root)[0]
            page = list(
                itertools.islice(bitmap.iter_equal_or_larger(q.members_after + 1), q.members_limit + 1)
            )
            result["members"] = page[: q.members_limit]
            result["next"] = page[q.members_limit - 1] if len(page) > q.members_limit else None
        out.append(result)
    return out


def run(wh: Any, body: Any, limits: Limits, cache: Cache | None = None) -> dict[str, Any]:
    """A ``POST /v1/bitmaps/ops`` body → its answer (blocking)."""
    plan, queries = parse(body, limits)
    return {"results": answer(plan, queries, Reader(wh, cache).read(plan.leaves))}


def delete(wh: Any, body: Any, limits: Limits) -> dict[str, Any]:
    """``POST /v1/bitmaps/delete``: ``{"all": true}`` (bitmapist's delete_all_events) or
    ``{"expr": <one bitmap>}`` (its ``delete()``); a replay of the events marks them again."""
    if isinstance(body, dict) and body.get("all") is True:
        wh.command(f"TRUNCATE TABLE {wh.database}.bitmaps")
        wh.command(f"TRUNCATE TABLE {wh.database}.bitmap_flags")
        return {"deleted": "all"}
    if not isinstance(body, dict) or "expr" not in body:
        raise QueryError("body", 'give {"all": true} or {"expr": <a bitmap>}')
    plan = Plan(limits)
    root = plan.nodes[plan.parse(body["expr"], "expr", [])]
    if root[0] == "or" and isinstance(body["expr"], dict) and body["expr"].get("period") == "year":
        return {"deleted": 0}  # bitmapist's YearEvents.delete() removes its OR's result, not the months
    if root[0] not in ("leaf", "empty"):
        raise QueryError("expr", "only a stored bitmap can be deleted, not an operation")
    for event, kind, start in sorted(plan.leaves):
        if kind == "U":
            wh.command(f"DELETE FROM {wh.database}.bitmap_flags WHERE event = {{e:String}}", {"e": event})
        else:
            wh.command(
                f"ALTER TABLE {wh.database}.bitmaps DELETE WHERE event = {{e:String}} "
                "AND kind = {k:String} AND start = {s:DateTime('UTC')} SETTINGS mutations_sync = 1",
                {"e": event, "k": kind, "s": start},
            )
    return {"deleted": len(plan.leaves)}


def bits_to_ids(data: bytes, byte_offset: int) -> np.ndarray:
    """The ids set in a slice of a Redis bitmap (bit 0 is the high bit of byte 0, as SETBIT counts)."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    return (np.flatnonzero(bits) + byte_offset * 8).astype(np.uint32)


def import_bits(wh: Any, body: Any, limits: Limits) -> dict[str, Any]:
    """``POST /v1/bitmaps/import``: one slice of a bitmapist key, ``{"expr": <one stored bitmap>,
    "offset": its first byte, "bits": base64 of the bytes, "length": the key's length in bytes}``
    (what ``cardflow import bitmapist`` sends). Merged into what is stored (bitmaps are ORed; a
    flag's imported bits are older than any mark since, so a later mark or unmark wins)."""
    import base64
    import binascii

    if not isinstance(body, dict):
        raise QueryError("body", 'give {"expr", "offset", "bits", "length"}')
    plan = Plan(limits)
    root = plan.nodes[plan.parse(body.get("expr"), "expr", [])]
    if root[0] == "empty":
        raise QueryError("expr", "names a period that never exists (such as month 13 or ISO week 53 of a "
                                 "52-week year): cardflow holds no bitmap for it, its reads are empty")
    if root[0] != "leaf":
        raise QueryError("expr", "must name one stored bitmap (an hour, day, week, month or unique flag)")
    offset, length = _int(body.get("offset"), "offset"), _int(body.get("length"), "length")
    try:
        data = base64.b64decode(body.get("bits") or "", validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise QueryError("bits", f"must be base64: {exc}") from None
    if len(data) > IMPORT_SLICE:
        raise QueryError("bits", f"{len(data)} bytes: send slices of at most {IMPORT_SLICE} bytes "
                                 "(as cardflow import bitmapist does)")
    if not 0 <= offset <= length <= (MAX_ID + 1) // 8 or offset + len(data) > length:
        raise QueryError(
            "offset", f"the slice [{offset}, {offset + len(data)}) must lie in the key's {length} bytes"
        )
    ids = bits_to_ids(data, offset).tolist()
    event, kind, start = root[1]
    if kind == "U":
        last = length * 8 - 1  # an unset row there keeps the key's length (what BITOP NOT flips up to)
        if ids:
            wh.command(
                f"INSERT INTO {wh.database}.bitmap_flags "
                "SELECT {e:String}, arrayJoin({ids:Array(UInt32)}), 1, 0",
                {"e": event, "ids": ids},
            )
        if length and not (ids and ids[-1] == last):
            wh.command(
                f"INSERT INTO {wh.database}.bitmap_flags SELECT {{e:String}}, {{u:UInt32}}, 0, 0 "
                f"WHERE NOT EXISTS (SELECT 1 FROM {wh.database}.bitmap_flags WHERE event = {{e:String}} "
                "AND uid = {u:UInt32})",
                {"e": event, "u": last},
            )
    elif ids:
        wh.command(
            f"INSERT INTO {wh.database}.bitmaps SELECT {{e:String}}, {{k:String}}, {{s:DateTime('UTC')}}, "
            "groupBitmapState(arrayJoin({ids:Array(UInt32)}))",
            {"e": event, "k": kind, "s": start, "ids": ids},
        )
    return {"imported": len(ids)}
