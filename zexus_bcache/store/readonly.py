"""Caller-written SQL on SQLite that can only read: an authorizer refuses anything else before it runs."""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

from ..errors import StoreError

# sqlite3's authorizer action codes by name, for the message that says what a read-only query tried.
_AUTH_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in [
        "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
        "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE",
        "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW",
        "INSERT", "PRAGMA", "READ", "SELECT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE",
        "REINDEX", "ANALYZE", "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE",
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


def read_only_authorizer(
    refused: list[str], action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    """Allow reading only; remember what was refused first (SQLite then fails "not authorized")."""
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
    conn: sqlite3.Connection, statement: str, params: dict[str, Any], name: str
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``statement`` on a ``mode=ro`` connection under ``query_only`` and the authorizer."""
    conn.execute("PRAGMA query_only = ON")
    refused: list[str] = []
    conn.set_authorizer(functools.partial(read_only_authorizer, refused))
    try:
        cursor = conn.execute(statement, params)
        rows = cursor.fetchall()
    except sqlite3.Error as exc:
        if refused or "readonly database" in str(exc):
            what = refused[0] if refused else "a write"
            raise StoreError(f"{name}: read-only query refused: {what} is not allowed") from exc
        raise
    return [column[0] for column in cursor.description or ()], rows
