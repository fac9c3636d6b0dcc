"""Read-only SQL for analysts (``POST /v1/sql``, admin scope), checked before it runs.

ClickHouse parses the statement (``formatQuerySingleLine``, then ``EXPLAIN AST``) and we read its
syntax tree: one SELECT (UNION and WITH allowed), no FORMAT / INTO OUTFILE / SETTINGS clause, no
table function but the generators (``numbers``…), no ``file()``, and no access-control tables. It
then runs the normalised text with ``readonly = 2`` (no writes, no DDL, ``readonly`` cannot be
lowered) and the limits below. The tree is the engine's own reading of the text, so comments,
quoting tricks and multiple statements cannot hide anything from the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cardflow.connectors.warehouse import Warehouse
from cardflow.errors import QueryError, WarehouseError

GENERATORS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generateseries", "generate_series", "values", "null"}
)
FUNCTIONS_REFUSED = frozenset({"file"})  # reads a server file into a string
SYSTEM_REFUSED = frozenset(
    {
        "users",
        "roles",
        "grants",
        "role_grants",
        "quotas",
        "quota_limits",
        "quota_usage",
        "quotas_usage",
        "row_policies",
        "settings_profiles",
        "settings_profile_elements",
        "named_collections",
        "user_directories",
        "enabled_roles",
        "current_roles",
        "user_processes",
    }
)


@dataclass(frozen=True)
class SqlLimits:
    max_chars: int = 100_000
    max_seconds: int = 30
    max_memory_bytes: int = 2 * 2**30
    max_rows: int = 100_000


def check(wh: Warehouse, text: Any, limits: SqlLimits) -> str:
    """The normalised statement when it may run; QueryError("sql", why) otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("sql", "must be a non-empty string holding one SELECT statement")
    if len(text) > limits.max_chars:
        raise QueryError("sql", f"is {len(text)} characters; the limit is {limits.max_chars} (sql_max_chars)")
    try:
        normal = wh.query(
            "SELECT formatQuerySingleLine({q:String}) AS q", {"q": text}, settings={"readonly": 2}
        )[0]["q"]
        tree = [r["explain"] for r in wh.query(f"EXPLAIN AST {normal}")]  # parses only
    except WarehouseError as exc:
        raise QueryError("sql", f"ClickHouse cannot parse it: {exc}") from None
    if not tree or tree[0] != "SelectWithUnionQuery (children 1)":
        raise QueryError(
            "sql",
            "only one SELECT statement is allowed (WITH and UNION too; no INSERT, DDL, SET, "
            "FORMAT or INTO OUTFILE: results come back as JSON)",
        )
    parents: list[str] = []
    for line in tree:
        depth = len(line) - len(line.lstrip(" "))
        node = line.strip()
        del parents[depth:]
        parent = parents[-1] if parents else ""
        parents.append(node)
        kind, _, rest = node.partition(" ")
        name = rest.split(" ", 1)[0]
        if kind == "Set" and parent.startswith("SelectQuery"):
            raise QueryError("sql", "a SETTINGS clause is not allowed: the server sets the limits")
        if kind == "Function" and parent.startswith("TableExpression") and name.lower() not in GENERATORS:
            raise QueryError(
                "sql", f"table function {name}() is not allowed (only {', '.join(sorted(GENERATORS))})"
            )
        if kind == "Function" and name.lower() in FUNCTIONS_REFUSED:
            raise QueryError("sql", f"function {name}() is not allowed")
        if (
            kind == "TableIdentifier"
            and name.lower().startswith("system.")
            and name.split(".", 1)[1].lower() in SYSTEM_REFUSED
        ):
            raise QueryError("sql", f"{name} holds access control and is not readable here")
    return str(normal)


def run_sql(wh: Warehouse, text: Any, limits: SqlLimits) -> dict[str, Any]:
    """Columns and rows of one checked, read-only SELECT (blocking)."""
    statement = check(wh, text, limits)
    settings: dict[str, int | str] = {
        "readonly": 2,
        "max_execution_time": limits.max_seconds,
        "max_memory_usage": limits.max_memory_bytes,
        "max_result_rows": limits.max_rows,
        "result_overflow_mode": "throw",
        "output_format_json_quote_64bit_integers": 0,
    }  # numbers as numbers, from either backend
    try:
        columns, rows = wh.select(statement, settings=settings)
    except WarehouseError as exc:
        if "TOO_MANY_ROWS_OR_BYTES" in str(exc):
            raise QueryError("sql", _too_many(limits)) from None
        raise QueryError("sql", str(exc)) from None
    if len(rows) > limits.max_rows:  # ClickHouse checks max_result_rows per block, not per row
        raise QueryError("sql", _too_many(limits))
    return {"columns": columns, "rows": rows, "statement": statement}


def _too_many(limits: SqlLimits) -> str:
    return f"the result has more than {limits.max_rows} rows (sql_max_rows): add a LIMIT or aggregate"
