"""JSON an event may hold: parsed strictly, nested at most ``max_depth`` levels, numbers kept exactly.

orjson reads 1024 levels but writes only ~250, and reads integers past 64 bits
as floats (``2**70`` becomes ``1.1805916207174113e+21`` without a word). Both
used to end the people worker (a profile it could not write) or change data
silently, so every path — the push API, the SDK, the worker — parses through
:func:`loads` and checks through :func:`check`:

    >>> value, suspect = loads(b'{"a": 18446744073709551616}', max_depth=64)
    >>> suspect
    True
    >>> check(value, 64)
    Traceback (most recent call last):
    ...
    cardflow.reasons.Rejected: the integer 18446744073709551616 does not fit 64 bits; send it as a string

Both checks are cheap on the common event: depth is walked only when the raw
bytes hold at least ``max_depth`` brackets, and the exact parse runs only
when they hold a run of 19 or more digits.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from cardflow.errors import Rejected
from cardflow.reasons import Reason

DEFAULT_MAX_DEPTH = 64
# The 64-bit range orjson reads exactly (signed low end, unsigned high end).
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
# An integer outside the range has 19 digits or more: 2**64 has 20, but -2**63 - 1 has 19 (orjson
# reads -9223372036854775809 as a float; hypothesis found it). Digits mapped to "0" and a substring
# test find such a run five times faster than a regular expression.
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


class _Inexact:
    """An integer JSON number orjson would have turned into a float, left in the value's place."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _exact_int(text: str) -> int | _Inexact:
    number = int(text)
    return number if INT_MIN <= number <= INT_MAX else _Inexact(text)


def loads(raw: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[Any, bool]:
    """Parse strict JSON (UTF-8, no NaN). Returns the value and whether :func:`check` must
    look at it (it may be too deep or hold an integer past 64 bits). Raises Rejected."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit exceeded" in str(exc) or "recursion" in str(exc).lower():
            raise Rejected(Reason.TOO_DEEP, f"JSON nested deeper than orjson reads (1024 levels); "
                           f"the limit is {max_depth}") from None
        raise Rejected(Reason.NOT_JSON, f"not valid JSON: {exc}") from None
    data = raw.encode() if isinstance(raw, str) else raw
    suspect = data.count(b"{") + data.count(b"[") >= max_depth
    if _LONG_RUN in data.translate(_ZERO_DIGITS):
        # Rare: parse again keeping every integer exactly. Depth first, so the stdlib's
        # recursive parser only sees values within the limit.
        check(value, max_depth)
        value = json.loads(data, parse_int=_exact_int)
        suspect = True
    return value, suspect


def check(value: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise Rejected when ``value`` nests deeper than ``max_depth`` (a scalar is depth 0, ``{}``
    and ``[]`` depth 1) or holds an integer that does not fit 64 bits. Iterative: any depth."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        elif isinstance(node, _Inexact):
            raise Rejected(Reason.BAD_NUMBER, f"the integer {node.text[:40]}"
                           f"{'…' if len(node.text) > 40 else ''} does not fit 64 bits; send it as a string")
        elif type(node) is int and not INT_MIN <= node <= INT_MAX:  # built in Python, not parsed
            raise Rejected(Reason.BAD_NUMBER, f"the integer {str(node)[:40]} does not fit 64 bits; "
                           "send it as a string")
        else:
            continue
        depth += 1
        if depth > max_depth:
            raise Rejected(Reason.TOO_DEEP, f"JSON nested more than {max_depth} levels; "
                           "flatten it or raise max_depth")
        stack.extend((child, depth) for child in children)
