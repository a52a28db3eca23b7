"""Caller-written SQL on SQLite that can only read, for a bounded time: an authorizer refuses
anything else (writes, DDL, ATTACH, PRAGMAs that set, functions not on a list) before it runs;
a progress handler stops it at its time limit or on Ctrl-C; no value may grow past a size."""

from __future__ import annotations

import functools
import sqlite3
import time
from typing import Any

from ..errors import StoreError

# sqlite3's authorizer action codes by name, for the message that says what a read-only query tried.
_AUTH_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in [
        "CREATE_INDEX",
        "CREATE_TABLE",
        "CREATE_TEMP_INDEX",
        "CREATE_TEMP_TABLE",
        "CREATE_TEMP_TRIGGER",
        "CREATE_TEMP_VIEW",
        "CREATE_TRIGGER",
        "CREATE_VIEW",
        "DELETE",
        "DROP_INDEX",
        "DROP_TABLE",
        "DROP_TEMP_INDEX",
        "DROP_TEMP_TABLE",
        "DROP_TEMP_TRIGGER",
        "DROP_TEMP_VIEW",
        "DROP_TRIGGER",
        "DROP_VIEW",
        "INSERT",
        "PRAGMA",
        "READ",
        "SELECT",
        "TRANSACTION",
        "UPDATE",
        "ATTACH",
        "DETACH",
        "ALTER_TABLE",
        "REINDEX",
        "ANALYZE",
        "CREATE_VTABLE",
        "DROP_VTABLE",
        "FUNCTION",
        "SAVEPOINT",
        "RECURSIVE",
    ]
    if hasattr(sqlite3, f"SQLITE_{name}")
}
_READ_ACTIONS = frozenset(
    getattr(sqlite3, f"SQLITE_{name}")
    for name in ("SELECT", "READ", "FUNCTION", "RECURSIVE")
    if hasattr(sqlite3, f"SQLITE_{name}")
)
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master", "sqlite_schema", "sqlite_temp_schema"})
# PRAGMAs whose argument names what to read rather than a value to set.
_READ_PRAGMAS_WITH_ARGUMENT = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
     "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check"}
)  # fmt: skip


DEFAULT_TIMEOUT_S = 10.0
"""How long a caller-written query may run (it holds a read transaction, which pins the WAL)."""

MAX_VALUE_BYTES = 65 * 1024 * 1024
"""The largest string or blob a query may make (SQLITE_LIMIT_LENGTH): above a payload's largest
(the codec's 64 MiB), far below what ``randomblob(1e9)`` would take."""

PROGRESS_OPS = 1000  # virtual machine steps between checks of the time limit and of Ctrl-C

# The SQL functions a query may call: SQLite's core, aggregate, window, date, math and JSON
# functions. Not: load_extension, fts3_tokenizer (leaks addresses), readfile/writefile, or any
# function an extension or the application registered.
ALLOWED_FUNCTIONS = frozenset(
    [
        "abs",
        "changes",
        "char",
        "coalesce",
        "concat",
        "concat_ws",
        "format",
        "glob",
        "hex",
        "ifnull",
        "iif",
        "instr",
        "last_insert_rowid",
        "length",
        "like",
        "likelihood",
        "likely",
        "lower",
        "ltrim",
        "max",
        "min",
        "nullif",
        "octet_length",
        "printf",
        "quote",
        "random",
        "randomblob",
        "replace",
        "round",
        "rtrim",
        "sign",
        "soundex",
        "sqlite_source_id",
        "sqlite_version",
        "substr",
        "substring",
        "total_changes",
        "trim",
        "typeof",
        "unhex",
        "unicode",
        "unlikely",
        "upper",
        "zeroblob",
        "avg",
        "count",
        "group_concat",
        "string_agg",
        "sum",
        "total",
        "row_number",
        "rank",
        "dense_rank",
        "percent_rank",
        "cume_dist",
        "ntile",
        "lag",
        "lead",
        "first_value",
        "last_value",
        "nth_value",
        "date",
        "time",
        "datetime",
        "julianday",
        "unixepoch",
        "strftime",
        "timediff",
        "current_date",
        "current_time",
        "current_timestamp",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atan2",
        "atanh",
        "ceil",
        "ceiling",
        "cos",
        "cosh",
        "degrees",
        "exp",
        "floor",
        "ln",
        "log",
        "log10",
        "log2",
        "mod",
        "pi",
        "pow",
        "power",
        "radians",
        "sin",
        "sinh",
        "sqrt",
        "tan",
        "tanh",
        "trunc",
        "json",
        "json_array",
        "json_array_length",
        "json_extract",
        "json_insert",
        "json_object",
        "json_patch",
        "json_remove",
        "json_replace",
        "json_set",
        "json_type",
        "json_valid",
        "json_quote",
        "json_group_array",
        "json_group_object",
        "jsonb",
        "json_pretty",
        "json_error_position",
    ]
)


def read_only_authorizer(
    refused: list[str], action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    """Allow reading only; remember what was refused first (SQLite then fails "not authorized")."""
    if action == sqlite3.SQLITE_FUNCTION:
        if (arg2 or "").lower() in ALLOWED_FUNCTIONS:
            return sqlite3.SQLITE_OK
        refused.append(f"the function {arg2}()")
        return sqlite3.SQLITE_DENY
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg2 is None or (arg1 or "").lower() in _READ_PRAGMAS_WITH_ARGUMENT):
        return sqlite3.SQLITE_OK
    # Preparing a table-valued PRAGMA function (SELECT ... FROM pragma_table_info('t')) asks for
    # these; a real UPDATE of the schema table is refused by SQLite itself and by mode=ro.
    if action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA_TABLES:
        return sqlite3.SQLITE_OK
    if arg1 in _SCHEMA_TABLES:  # CREATE and DROP are first seen as edits of the schema table
        refused.append("a schema change (CREATE, DROP)")
    elif action == sqlite3.SQLITE_PRAGMA:
        refused.append(f"PRAGMA {arg1} = {arg2}")
    else:
        what = _AUTH_ACTIONS.get(action, f"action {action}")
        refused.append(f"{what} ({arg1})" if arg1 else what)
    return sqlite3.SQLITE_DENY


def read_only_query(
    conn: sqlite3.Connection, statement: str, params: dict[str, Any], name: str, timeout: float | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``statement`` on a ``mode=ro`` connection under ``query_only``, the authorizer, a time
    limit (``timeout`` seconds, default :data:`DEFAULT_TIMEOUT_S`; StoreError when reached) and
    Ctrl-C (KeyboardInterrupt, the query stopped)."""
    first = statement.lstrip().split(None, 1)[0].rstrip(";").upper() if statement.strip() else ""
    if first == "VACUUM":  # SQLite first asks to ATTACH for it: name what was really asked
        raise StoreError(f"{name}: read-only query refused: VACUUM is not allowed (use the vacuum command)")
    limit = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
    conn.execute("PRAGMA query_only = ON")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    refused: list[str] = []
    conn.set_authorizer(functools.partial(read_only_authorizer, refused))
    stopped: list[str] = []
    deadline = time.monotonic() + limit

    def progress() -> int:
        # Runs in this thread between VM steps: Ctrl-C's KeyboardInterrupt is raised here, and any
        # exception (or a true result) makes SQLite stop the query ("interrupted").
        try:
            if time.monotonic() > deadline:
                stopped.append("timeout")
                return 1
            return 0
        except KeyboardInterrupt:
            stopped.append("cancelled")
            return 1

    conn.set_progress_handler(progress, PROGRESS_OPS)
    try:
        cursor = conn.execute(statement, params)
        rows = cursor.fetchall()
    except sqlite3.Error as exc:
        if refused or "readonly database" in str(exc):
            what = refused[0] if refused else "a write"
            raise StoreError(f"{name}: read-only query refused: {what} is not allowed") from exc
        if "interrupted" in str(exc):
            if stopped == ["timeout"]:
                raise StoreError(f"{name}: the query was stopped after its time limit of {limit:g} s") from None
            raise KeyboardInterrupt from None  # Ctrl-C: the query is stopped, its transaction ended
        if "too big" in str(exc):
            raise StoreError(f"{name}: the query makes a value over {MAX_VALUE_BYTES} bytes; refused") from None
        raise
    finally:
        conn.set_progress_handler(None, 0)
    return [column[0] for column in cursor.description or ()], rows
