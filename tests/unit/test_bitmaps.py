"""cardflow.bitmaps' own logic against a model of Redis's strings: BITOP's lengths, NOT's flip,
shared nodes, refs and limits (the warehouse side is tested end to end in test_bitmapist)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from cardflow.bitmaps import Limits, Plan, answer, bits_to_ids, parse
from cardflow.errors import QueryError

LEAVES = [{"event": f"e{i}", "period": "unique"} for i in range(4)]


def redis_eval(node: Any, strings: dict[str, bytes]) -> bytes:
    """What Redis's BITOP leaves in the destination key (bytes), for a node of our JSON."""
    if "op" not in node:
        return strings[node["event"]]
    args = [redis_eval(a, strings) for a in node["args"]]
    length = max(len(a) for a in args)
    padded = [int.from_bytes(a.ljust(length, b"\0"), "big") for a in args]
    if node["op"] == "not":
        value = ~padded[0] & ((1 << (8 * length)) - 1)
    else:
        value = padded[0]
        for p in padded[1:]:
            value = {"and": value & p, "or": value | p, "xor": value ^ p}[node["op"]]
    return value.to_bytes(length, "big") if length else b""


def to_bytes(ids: set[int], length: int) -> bytes:
    value = 0
    for i in ids:
        value |= 1 << (8 * length - 1 - i)
    return value.to_bytes(length, "big") if length else b""


exprs = st.recursive(
    st.sampled_from(LEAVES),
    lambda inner: st.one_of(
        st.builds(lambda a: {"op": "not", "args": [a]}, inner),
        st.builds(
            lambda op, args: {"op": op, "args": args},
            st.sampled_from(["and", "or", "xor"]),
            st.lists(inner, min_size=1, max_size=3),
        ),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    expr=exprs,
    sets=st.lists(st.sets(st.integers(0, 70), max_size=12), min_size=4, max_size=4),
    extra=st.lists(st.integers(0, 3), min_size=4, max_size=4),
)
def test_operations_count_as_redis_bitop_does(expr: Any, sets: list[set[int]], extra: list[int]) -> None:
    # A key's length: its highest bit ever set (or unset: ``extra`` bytes) rounded up to bytes.
    lengths = [(max(s) // 8 + 1 if s else 0) + e for s, e in zip(sets, extra, strict=True)]
    strings = {f"e{i}": to_bytes(s, n) for i, (s, n) in enumerate(zip(sets, lengths, strict=True))}
    plan, queries = parse({"queries": [{"expr": expr, "members": {"limit": 1000}}]}, Limits())
    values = {(f"e{i}", "U", ""): (BitMap(s), n) for i, (s, n) in enumerate(zip(sets, lengths, strict=True))}
    got = answer(plan, queries, values)[0]
    want = redis_eval(expr, strings)
    want_ids = [i for i in range(8 * len(want)) if want[i // 8] >> (7 - i % 8) & 1]
    assert got["count"] == len(want_ids)
    assert got["members"] == want_ids


def test_shared_expressions_are_one_node_and_refs_reuse_them() -> None:
    month = {"event": "a", "period": "month", "year": 2024, "month": 1}
    both = {"op": "and", "args": [month, {"event": "b", "period": "unique"}]}
    plan, queries = parse(
        {"queries": [{"expr": both}, {"expr": both}, {"expr": {"op": "not", "args": [{"ref": 0}]}}]}, Limits()
    )
    assert queries[0].root == queries[1].root and len(plan.nodes) == 4
    year = Plan(Limits())
    root = year.parse({"event": "a", "period": "year", "year": 2024}, "expr", [])
    assert year.nodes[root][0] == "or" and len(year.leaves) == 12  # bitmapist's YearEvents: OR of months


def test_periods_that_never_exist_are_empty_like_bitmapist_keys() -> None:
    plan = Plan(Limits())
    for node in (
        {"event": "a", "period": "month", "year": 2024, "month": 13},
        {"event": "a", "period": "week", "year": 2021, "week": 53},  # 2021 has 52 ISO weeks
        {"event": "a", "period": "day", "year": 2023, "month": 2, "day": 29},
        {"event": "a", "period": "hour", "year": 10**30, "month": 1, "day": 1, "hour": 0},
    ):
        assert plan.nodes[plan.parse(node, "expr", [])] == ("empty",)
    assert plan.nodes[plan.parse({"event": "a", "period": "week", "year": 2020, "week": 53}, "expr", [])] == (
        "leaf",
        ("a", "W", "2020-12-28 00:00:00"),
    )


def test_a_doubling_chain_of_refs_stays_linear() -> None:
    queries = [{"expr": {"event": "a", "period": "unique"}}]
    for i in range(60):
        queries.append(
            {"expr": {"op": "xor", "args": [{"ref": i}, {"ref": i}, {"event": "b", "period": "unique"}]}}
        )
    plan, parsed = parse({"queries": queries}, Limits())
    values = {("a", "U", ""): (BitMap([1, 5]), 1), ("b", "U", ""): (BitMap([2]), 1)}
    assert len(plan.nodes) == 62 and answer(plan, parsed, values)[-1]["count"] == 1


@pytest.mark.parametrize(
    ("body", "field", "limits"),
    [
        ({"queries": [{"expr": {"event": "a", "period": "unique"}}] * 3}, "queries", Limits(queries=2)),
        (
            {"queries": [{"expr": {"op": "not", "args": [{"op": "not", "args": [LEAVES[0]]}]}}]},
            "queries[0].expr",
            Limits(depth=2),
        ),
        ({"queries": [{"expr": {"op": "or", "args": LEAVES}}]}, "queries", Limits(leaves=3)),
        (
            {"queries": [{"expr": LEAVES[0], "members": {"limit": 11}}]},
            "queries[0].members.limit",
            Limits(members=10),
        ),
        (
            {"queries": [{"expr": LEAVES[0], "members": {"limit": 6}}] * 3},
            "queries[1].members.limit",
            Limits(members=10),
        ),
        ({"queries": [{"expr": LEAVES[0], "contains": [2**32]}]}, "queries[0].contains[0]", Limits()),
        ({"queries": [{"expr": LEAVES[0], "colour": 1}]}, "queries[0].colour", Limits()),
        ({"queries": [{"expr": {"event": "a", "period": "decade"}}]}, "queries[0].expr.period", Limits()),
    ],
)
def test_limits_and_bad_fields_name_the_field(body: Any, field: str, limits: Limits) -> None:
    with pytest.raises(QueryError) as caught:
        parse(body, limits)
    assert caught.value.field == field


def test_redis_bits_to_ids_counts_from_the_high_bit() -> None:
    assert bits_to_ids(bytes([0b10000001, 0, 0b01000000]), 0).tolist() == [0, 7, 17]
    assert bits_to_ids(bytes([0b00000001]), 1000).tolist() == [8007]


def test_the_client_says_where_it_could_not_reach_and_refuses_bad_ids() -> None:
    import cardflow.bitmapist as cfb
    from cardflow.local_kafka import free_port

    cfb.setup(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(cfb.BitmapistError, match="cannot reach cardflow's API at http://127.0.0.1"):
            len(cfb.MonthEvents("active", 2024, 1))
        import numpy as np

        for bad in (-1, 2**32, "7", 7.0, True, np.bool_(True), np.int64(-1)):
            with pytest.raises(ValueError, match="integers from 0 to 4294967295"):
                cfb.mark_event("active", bad)  # type: ignore[arg-type]
        assert "x" not in cfb.UniqueEvents("premium")  # not an id, so not a member (no request made)
    finally:
        cfb.setup("http://127.0.0.1:8000")


def test_the_import_command_says_what_it_could_not_read_or_reach(redis_port: int) -> None:
    import redis
    from click.testing import CliRunner

    from cardflow.cli import cli
    from cardflow.local_kafka import free_port

    redis.Redis(port=redis_port, db=11).setbit("trackist_signup_2024-1", 5, 1)
    url = f"redis://127.0.0.1:{redis_port}/11"

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["import", "bitmapist", *args])

    listed = run("--redis", url, "--dry-run")
    assert listed.exit_code == 0 and "trackist_signup_2024-1: 1 ids" in listed.output
    for args, says in (
        (("--redis", "notaurl", "--dry-run"), "Redis URL must specify"),
        (("--redis", f"redis://127.0.0.1:{free_port()}/0"), "cannot read bitmapist's Redis"),
        (("--redis", url, "--api", f"http://127.0.0.1:{free_port()}"), "cannot reach cardflow's API"),
    ):
        got = run(*args)
        assert got.exit_code == 1 and says in got.output and "Traceback" not in got.output, got.output


def test_an_import_slice_is_bounded_and_must_lie_in_its_key() -> None:
    import base64

    from cardflow.bitmaps import IMPORT_SLICE, import_bits

    flag = {"event": "f", "period": "unique"}
    for body, field in (
        ({"expr": flag, "offset": 0, "length": IMPORT_SLICE + 1,
          "bits": base64.b64encode(b"\x01" * (IMPORT_SLICE + 1)).decode()}, "bits"),
        ({"expr": flag, "offset": 3, "length": 4, "bits": base64.b64encode(b"\x01\x01").decode()}, "offset"),
        ({"expr": flag, "offset": 0, "length": 4, "bits": "not base64!"}, "bits"),
        ({"expr": {"op": "not", "args": [flag]}, "offset": 0, "length": 1, "bits": ""}, "expr"),
        ({"expr": {"event": "e", "period": "month", "year": 2020, "month": 13}, "offset": 0, "length": 1,
          "bits": "AQ=="}, "expr"),
    ):
        with pytest.raises(QueryError) as caught:
            import_bits(None, body, Limits())  # refused before the warehouse is touched
        assert caught.value.field == field


def test_chains_of_one_operation_are_flat_and_the_deepest_nesting_allowed_evaluates() -> None:
    import cardflow.bitmapist as cfb
    from cardflow.config import load_settings

    strings = {f"e{i}": to_bytes({i, 5 + i, 40}, 6) for i in range(4)}
    values = {(f"e{i}", "U", ""): (BitMap(ids_of(strings[f"e{i}"])), 6) for i in range(4)}
    # 3 000 ors nested (what a loop `acc = acc | x` sends from other clients): no recursion, one node.
    chain: dict[str, Any] = LEAVES[0]
    for i in range(3000):
        chain = {"op": "or", "args": [chain, LEAVES[i % 4]]}
    plan, parsed = parse({"queries": [{"expr": chain}]}, Limits(depth=2))
    assert max(plan.depths) == 2 and answer(plan, parsed, values)[0]["count"] == 9
    # The deepest nesting the setting allows (and/or alternating: nothing to splice) evaluates as Redis.
    deepest = load_settings(env={}, bitmaps_max_depth=250).bitmaps_max_depth
    nested: dict[str, Any] = LEAVES[0]
    for i in range(deepest - 1):
        nested = {"op": ("and", "or")[i % 2], "args": [nested, LEAVES[(i % 3) + 1]]}
    plan, parsed = parse({"queries": [{"expr": nested}]}, Limits(depth=deepest))
    want = len(ids_of(redis_eval(nested, strings)))
    assert max(plan.depths) == deepest and answer(plan, parsed, values)[0]["count"] == want
    with pytest.raises(QueryError, match="bitmaps_max_depth"):
        parse({"queries": [{"expr": {"op": "not", "args": [nested]}}]}, Limits(depth=deepest))
    with pytest.raises(Exception, match="bitmaps_max_depth"):
        load_settings(env={}, bitmaps_max_depth=deepest + 1)
    # The client sends a loop's chain as one operation; a NOT or another operation inside stays.
    days = [cfb.DayEvents("a", 2024, 1, 1 + d % 28) for d in range(3001)]
    acc: Any = days[0]
    for day in days[1:]:
        acc = acc | day
    assert len(acc.expr()["args"]) == 3001 and acc.expr()["op"] == "or"
    mixed = (days[0] | days[1]) & ~(days[2] | days[3]) & days[4]
    assert mixed.expr() == {"op": "and", "args": [
        {"op": "or", "args": [days[0].expr(), days[1].expr()]},
        {"op": "not", "args": [{"op": "or", "args": [days[2].expr(), days[3].expr()]}]},
        days[4].expr(),
    ]}


def ids_of(data: bytes) -> set[int]:
    return {i for i in range(8 * len(data)) if data[i // 8] >> (7 - i % 8) & 1}
