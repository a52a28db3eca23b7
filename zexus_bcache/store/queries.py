"""The store's SQL as SQLAlchemy Core statements, built from :mod:`.schema` on first use.

Importing this module does not import SQLAlchemy: a warm start on SQLite never builds a Core
statement (it runs the literal SQL of :mod:`.sqlite`, which a test compares with these).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import constants
from ..errors import ConfigError

log = logging.getLogger("zexus_bcache")

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

SORTS = ("last_access", "created_at", "size", "access_count", "key", "source_path", "n_instructions", "instrs")
"""What :meth:`Store.entries` can sort by."""

# Eviction policies are data (diskcache's policy table): the columns in the order entries go
# first; everything else about evicting is shared. Adding a policy is adding a row.
EVICTION_ORDER: dict[str, tuple[str, ...]] = {
    "lru": ("last_access", "key"),
    "lfu": ("access_count", "last_access", "key"),
}
assert set(EVICTION_ORDER) == set(constants.POLICIES)

ENTRY_COLUMNS = (
    "key", "kind", "fingerprint", "codec_version", "checksum", "source_hash", "mem_size", "payload_size",
    "n_instructions", "n_constants", "source_path", "created_at", "last_access", "access_count", "signature",
    "payload",
)  # schema.entries' columns, in order: what a put writes (a test keeps them equal)

META_COLUMNS = ENTRY_COLUMNS[:-1]
"""Every column but the payload: what listings and ``info`` read (never the payload's overflow pages)."""

SETTING_NAMES = ("max_entries", "max_bytes", "policy")  # as the limits statement returns them

REPORT_COLUMNS = ("key", "kind", "source_path", "payload_size", "last_access", "access_count")
"""What an eviction report says about each entry it removes."""

HIT_COLUMNS = ("kind", "fingerprint", "codec_version", "checksum", "source_hash", "mem_size", "signature")
"""The entry columns a hit returns (StoredEntry's fields between the key and the payload)."""

CHUNK = 500  # keys per IN (...) list


def parse_setting(name: str, value: object) -> int | str:
    """Validate one store setting; return it typed (int limits, 0 = unlimited; policy 'lru'|'lfu').

    The store's settings are three of the configuration's: one parser (:mod:`zexus_bcache.config`)
    checks them all, so ``max_bytes = "2G"`` means the same in a file, the environment and here.
    """
    if name not in constants.DEFAULT_SETTINGS:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(constants.DEFAULT_SETTINGS)}")
    from .. import config  # a lower layer; imported here, as most opens never parse a setting

    typed: int | str = config.parse_setting(name, value)
    return typed


def typed_settings(stored: dict[str, Any]) -> dict[str, int | str]:
    """Every setting, typed: what the database holds, the defaults for what it does not.

    A stored value that is not valid (written by hand into the table) is data, not a reason for a
    put or ``stats`` to fail: its default is used, with one warning per bad value and process.
    """
    typed: dict[str, int | str] = {}
    for name, default in constants.DEFAULT_SETTINGS.items():
        value = stored.get(name, default)
        try:
            typed[name] = parse_setting(name, value)
        except ConfigError as exc:
            if (name, repr(value)) not in _WARNED:
                _WARNED.add((name, repr(value)))
                log.warning("the database's setting %s is not valid (%s); using the default, %s", name, exc, default)
            typed[name] = parse_setting(name, default)
    return typed


_WARNED: set[tuple[str, str]] = set()


def chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), CHUNK):
        yield keys[start : start + CHUNK]


class Tables(NamedTuple):
    """The schema's tables, with the eviction orders and sorts over them."""

    entries: sa.Table
    counters: sa.Table
    settings: sa.Table
    totals: sa.Table
    eviction_order: dict[str, tuple[sa.ColumnElement[Any], ...]]
    sorts: dict[str, sa.ColumnElement[Any]]


@functools.cache
def tables() -> Tables:
    """The tables (imports SQLAlchemy)."""
    from . import schema

    e = schema.entries.c
    order: dict[str, tuple[sa.ColumnElement[Any], ...]] = {
        policy: tuple(e[name] for name in names) for policy, names in EVICTION_ORDER.items()
    }
    sort_columns = {"size": "payload_size", "instrs": "n_instructions"}
    sorts: dict[str, sa.ColumnElement[Any]] = {name: e[sort_columns.get(name, name)] for name in SORTS}
    return Tables(schema.entries, schema.counters, schema.settings, schema.totals, order, sorts)


class Statements(NamedTuple):
    """The store's Core statements for one dialect (on SQLite the hot ones run as literal SQL)."""

    insert: Callable[..., Any]  # the dialect's INSERT, which has on_conflict_do_update
    put_entry: Any
    insert_entry: Any
    select_entry: Any
    touch: Any
    bump: Any
    limits: Any
    victims: dict[str, Any]
    delete_key: Any


@functools.cache
def statements(dialect: str) -> Statements:
    """Build the Core statements of ``dialect`` ("sqlite" or "postgresql") from the schema."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql, sqlite

    insert: Callable[..., Any] = sqlite.insert if dialect == "sqlite" else postgresql.insert
    t = tables()
    entries, e = t.entries, t.entries.c
    entry = insert(entries)
    kept = ("key", "created_at", "access_count", "last_access")
    replaced: dict[str, Any] = {c.name: entry.excluded[c.name] for c in e if c.name not in kept}
    # A put is a use, but never moves last_access back: a put that waited for the write lock
    # commits after hits of other processes that were flushed meanwhile (LRU order would regress).
    new_access = entry.excluded.last_access
    replaced["last_access"] = sa.case((e.last_access > new_access, e.last_access), else_=new_access)
    put_entry = entry.on_conflict_do_update(index_elements=[e.key], set_=replaced)
    # RETURNING says whether it inserted (rowcount is -1 for this statement on psycopg).
    insert_entry = insert(entries).on_conflict_do_nothing(index_elements=[e.key]).returning(e.key)
    # The row's own key, read from the row: a damaged key index that leads to another entry's row
    # is then seen (SQLite would read entries.key from the index that was followed, so it reads
    # the row by rowid; a server reads the row anyway).
    own: sa.ColumnElement[Any] = e.key
    if dialect == "sqlite":
        row = entries.alias("own")
        same_row = sa.literal_column("own.rowid") == sa.literal_column("entries.rowid")
        own = sa.select(row.c.key).where(same_row).scalar_subquery()
    hit_columns = [e[name] for name in HIT_COLUMNS] + [own.label("own_key"), e.payload]
    select_entry = sa.select(*hit_columns).where(e.key == sa.bindparam("key"))
    when = sa.bindparam("t", type_=sa.Float)
    touch = (
        sa.update(entries)
        .where(e.key == sa.bindparam("k"))
        .values(
            last_access=sa.case((e.last_access < when, when), else_=e.last_access),
            access_count=e.access_count + sa.bindparam("n", type_=sa.Integer),
        )
    )
    counters = t.counters
    # An upsert: a counter that a database does not have yet starts there (no migration needed).
    counter = insert(counters).values(name=sa.bindparam("c"), value=sa.bindparam("d", type_=sa.BigInteger))
    bump = counter.on_conflict_do_update(
        index_elements=[counters.c.name], set_={"value": counters.c.value + counter.excluded.value}
    )
    s = t.settings.c

    def setting(name: str) -> sa.ScalarSelect[Any]:
        return sa.select(s.value).where(s.name == name).scalar_subquery()

    # What a put reads to know whether it went over a limit: the totals and the settings, fresh.
    totals = t.totals.c
    limits = sa.select(totals.n_entries, totals.total_bytes, *(setting(name) for name in SETTING_NAMES))
    victims = {
        policy: sa.select(e.key, e.payload_size).order_by(*order).limit(sa.bindparam("n", type_=sa.Integer))
        for policy, order in t.eviction_order.items()
    }
    delete_key = sa.delete(entries).where(e.key == sa.bindparam("k"))
    return Statements(insert, put_entry, insert_entry, select_entry, touch, bump, limits, victims, delete_key)


@functools.cache
def select_limited(dialect: str) -> sa.Select[Any]:
    """The hit row of a key, with the payload only if it is at most ``:max`` bytes, and its size last.

    A server's row is data: its size is read without transferring (nor detoasting) the payload,
    so a huge payload swapped in on the server costs the reader nothing.
    """
    import sqlalchemy as sa

    columns = list(statements(dialect).select_entry.selected_columns)
    entries = tables().entries
    size = (sa.func.length if dialect == "sqlite" else sa.func.octet_length)(entries.c.payload)
    limited = sa.case((size <= sa.bindparam("max", type_=sa.BigInteger), entries.c.payload), else_=sa.null())
    return sa.select(*columns[:-1], limited.label("payload"), size.label("size")).where(
        entries.c.key == sa.bindparam("key")
    )


def filters(
    *,
    fingerprint: str | None = None,
    older_than: float | None = None,
    source_path: str | os.PathLike[str] | None = None,
    kind: str | None = None,
    other_than_fingerprints: Collection[str] | None = None,
    prefix: str | None = None,
) -> list[sa.ColumnElement[bool]]:
    """The WHERE conditions on entries that select what every given criterion matches."""
    e = tables().entries.c
    conditions: list[sa.ColumnElement[bool]] = []
    if fingerprint is not None:
        conditions.append(e.fingerprint == fingerprint)
    if other_than_fingerprints is not None:
        conditions.append(e.fingerprint.not_in(list(other_than_fingerprints)))
    if prefix is not None:
        conditions.append(e.key.startswith(prefix, autoescape=True))
    if older_than is not None:
        conditions.append(e.last_access < time.time() - float(older_than))
    if source_path is not None:
        conditions.append(e.source_path == os.fspath(source_path))
    if kind is not None:
        conditions.append(e.kind == kind)
    return conditions


def read_settings(conn: Connection) -> dict[str, int | str]:
    """The settings as every process sees them now."""
    import sqlalchemy as sa

    settings = tables().settings
    return typed_settings(dict(conn.execute(sa.select(settings.c.name, settings.c.value)).all()))


def upsert_setting(dialect: str, name: str, value: str) -> Any:
    settings = tables().settings
    upsert = statements(dialect).insert(settings).values(name=name, value=value)
    return upsert.on_conflict_do_update(index_elements=[settings.c.name], set_={"value": upsert.excluded.value})


def delete_entries(conditions: Iterable[sa.ColumnElement[bool]] = ()) -> sa.Delete:
    import sqlalchemy as sa

    return sa.delete(tables().entries).where(*conditions)


def delete_keys(keys: list[str]) -> sa.Delete:
    return delete_entries([tables().entries.c.key.in_(keys)])


def too_old(older_than: float) -> tuple[sa.Select[Any], sa.ColumnElement[bool]]:
    """Entries unused for ``older_than`` seconds, oldest first (report columns), and the condition."""
    import sqlalchemy as sa

    entries = tables().entries
    (condition,) = filters(older_than=older_than)
    query = sa.select(*(entries.c[name] for name in REPORT_COLUMNS)).where(condition)
    return query.order_by(entries.c.last_access, entries.c.key), condition


def victims(
    conn: Connection, max_entries: int, max_bytes: int, policy: str, among: Iterable[sa.ColumnElement[bool]] = ()
) -> list[dict[str, Any]]:
    """Entries beyond the limits, in eviction order: rank and running size over the keep order.

    Keeping the newest (LRU) or most used (LFU) entries first, an entry goes when its rank is past
    max_entries or the entries kept up to it pass max_bytes: "evict in policy order until it fits".
    Only the entries matching ``among`` count. Rows as :meth:`Store.evict_report` returns them.
    """
    import sqlalchemy as sa

    t = tables()
    entries = t.entries
    if not max_entries and not max_bytes:
        return []
    order = t.eviction_order[policy]
    keep_order = [column.desc() for column in order]
    size = entries.c.payload_size
    # An entry larger than the whole budget goes alone; it does not push every older one out.
    fitting_size = sa.case((size > max_bytes, 0), else_=size) if max_bytes else size
    ranked = (
        sa.select(
            *(entries.c[name] for name in REPORT_COLUMNS),
            sa.func.row_number().over(order_by=keep_order).label("rank"),
            sa.func.sum(fitting_size).over(order_by=keep_order, rows=(None, 0)).label("kept_bytes"),
        )
        .where(*among)
        .subquery()
    )
    beyond = []
    if max_entries:
        beyond.append(ranked.c.rank > max_entries)
    if max_bytes:
        beyond += [ranked.c.payload_size > max_bytes, ranked.c.kept_bytes > max_bytes]
    query = (
        sa.select(*(ranked.c[name] for name in REPORT_COLUMNS))
        .where(sa.or_(*beyond))
        .order_by(*(ranked.c[column.name] for column in order))
    )
    return [dict(row._mapping, reason="limits") for row in conn.execute(query)]


def totals() -> sa.Select[Any]:
    """The entries' count and byte total as the triggers keep them (no scan)."""
    import sqlalchemy as sa

    t = tables().totals.c
    return sa.select(t.n_entries, t.total_bytes)


def recount() -> tuple[sa.Delete, sa.Insert]:
    """Replace the totals row with what a scan of the entries says."""
    import sqlalchemy as sa

    t = tables()
    scan = sa.select(sa.literal(1), sa.func.count(), sa.func.coalesce(sa.func.sum(t.entries.c.payload_size), 0))
    fresh = sa.insert(t.totals).from_select(["id", "n_entries", "total_bytes"], scan)
    return sa.delete(t.totals), fresh


def keys(kind: str | None, prefix: str | None) -> sa.Select[Any]:
    import sqlalchemy as sa

    e = tables().entries.c
    return sa.select(e.key).where(*filters(kind=kind, prefix=prefix)).order_by(e.key)


def info(key: str) -> sa.Select[Any]:
    import sqlalchemy as sa

    return sa.select(*meta()).where(tables().entries.c.key == key)


def listing(
    sort: str, descending: bool, limit: int | None, path_glob: str | None, **criteria: Any
) -> sa.Select[Any]:
    """Entries (every column) matching ``criteria``, sorted; limited here unless a glob filters later."""
    import sqlalchemy as sa

    t = tables()
    entries = t.entries
    if sort not in t.sorts:
        raise ConfigError(f"sort must be one of {', '.join(t.sorts)}, not {sort!r}")
    column = t.sorts[sort]
    order = [column.desc(), entries.c.key.desc()] if descending else [column, entries.c.key]
    query = sa.select(*meta()).where(*filters(**criteria)).order_by(*order)
    if path_glob is None:
        return query.limit(limit)
    return query.where(entries.c.source_path.is_not(None))


def meta() -> list[sa.ColumnElement[Any]]:
    """entries' columns but the payload."""
    e = tables().entries.c
    return [e[name] for name in META_COLUMNS]


def payload_page(after: str, page: int) -> sa.Select[Any]:
    """Up to ``page`` (key, checksum, payload) rows with keys after ``after``, in key order.

    The payload as bytes whatever its SQLite storage class: a TEXT value written by hand would
    otherwise fail the whole page (not UTF-8), when it is one damaged payload to report.
    """
    import sqlalchemy as sa

    e = tables().entries.c
    payload = sa.cast(e.payload, sa.LargeBinary)
    return sa.select(e.key, e.checksum, payload).where(e.key > after).order_by(e.key).limit(page)


def counters() -> sa.Select[Any]:
    import sqlalchemy as sa

    c = tables().counters.c
    return sa.select(c.name, c.value)


ZEROED_AT = "counters_zeroed_at_ms"
"""The counters row holding when reset_counters last ran (ms since the epoch): not a counter
(Store.counters lists constants.COUNTERS only), and a row of a table every revision has (no migration)."""


def counter(name: str) -> sa.Select[Any]:
    import sqlalchemy as sa

    c = tables().counters.c
    return sa.select(c.value).where(c.name == name)


def reset_counters() -> sa.Update:
    import sqlalchemy as sa

    return sa.update(tables().counters).values(value=0)
