"""Read commands: stats, ls, show, sql, tables and schema (they never create or migrate a database)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from .. import constants, maintenance, render
from ..constants import KINDS
from ..errors import BcacheError
from ..render import Column
from ._common import clean_errors, display_path, duration, formats, open_store, plural

# -- stats ---------------------------------------------------------------------------------------

_COUNTER_LABELS = {
    "front_hits": "hits (memory tier)",
    "store_hits": "hits (store tier)",
    "shared_hits": "hits (shared tier)",
    "puts": "stores",
    "corrupt": "corrupt entries",
    "write_errors": "write errors",
    "shared_misses": "shared tier misses",
    "shared_puts": "shared tier puts",
    "shared_dropped": "shared puts dropped",
    "shared_errors": "shared tier errors",
    "auth_failures": "shared auth failures",
    "file_hits": "file lookups hit",
    "file_misses": "file lookups missed",
    "pattern_hits": "pattern hits",
    "oversized": "too large for memory",
}
_STATS_FIELDS = [
    Column("location"),
    Column("schema_revision", "schema revision"),
    Column("entries"),
    Column("entries_used_percent", "entries used", lambda v: "-" if v is None else f"{v:g}% of max entries"),
    Column("total_bytes", "stored bytes", render.size),
    Column("bytes_used_percent", "bytes used", lambda v: "-" if v is None else f"{v:g}% of max bytes"),
    Column("file_bytes", "database file", render.size),
    *(Column(name, _COUNTER_LABELS.get(name, name.replace("_", " "))) for name in constants.HIT_COUNTERS),
    Column("hits", "hits (total)"),
    Column("misses"),
    Column("hit_rate", "hit rate", render.percent),
    *(
        Column(name, _COUNTER_LABELS.get(name, name.replace("_", " ")))
        for name in constants.COUNTERS
        if name not in (*constants.HIT_COUNTERS, "misses")
    ),
    Column("counters_zeroed_at", "counters since", lambda v: "-" if v is None else render.when(v)),
    Column("max_entries", "max entries", render.limit),
    Column("max_bytes", "max bytes", render.byte_limit),
    Column("policy"),
]


@click.command()
@click.option("-z", "--zero", is_flag=True, help="Reset the counters to zero (after showing them).")
@formats()
@click.pass_context
@clean_errors
def stats(ctx: click.Context, zero: bool, fmt: str) -> None:
    """Show hits, misses, sizes, usage against the limits, and the schema revision.

    Counters are summed over every process that used the cache; -z zeroes them (the entries stay).
    """
    with open_store(ctx, write=zero) as store:
        counters = store.counters()
        settings = store.get_settings()
        hits = sum(counters[name] for name in constants.HIT_COUNTERS)
        entries, total = store.count(), store.total_bytes()
        data = {
            "location": store.name,
            "schema_revision": store.revision(),
            "entries": entries,
            "total_bytes": total,
            "file_bytes": store.file_size(),
            **{name: counters[name] for name in constants.COUNTERS},
            "hits": hits,
            "hit_rate": constants.hit_rate(hits, counters["misses"]),
            **maintenance.usage(entries, total, settings),
            "counters_zeroed_at": store.counters_zeroed_at(),
            **settings,
        }
        if zero:
            store.reset_counters()
    shown = {**data, "hit_rate": data["hit_rate"] if hits + counters["misses"] else None}
    render.record(data if fmt == "json" else shown, fmt, _STATS_FIELDS)
    if zero:
        click.echo("counters zeroed", err=True)


# -- ls --------------------------------------------------------------------------------------------

ENTRY_COLUMNS = [
    Column("key", "key", render.short_key, wrap=False),
    Column("kind", wrap=False),
    Column("source_path", "source", display_path, wrap=False),
    Column("payload_size", "size", render.size, "right", wrap=False),
    Column("n_instructions", "instrs", justify="right", wrap=False),
    Column("last_access", "last-used", render.age, "right", wrap=False),
    Column("access_count", "uses", justify="right", wrap=False),
]
SORTS = {  # the names ls sorts by: its column headers (and created), and the store's order for each
    "last-used": "last_access",
    "uses": "access_count",
    "size": "size",
    "instrs": "n_instructions",
    "key": "key",
    "source": "source_path",
    "created": "created_at",
}
_OLD_SORTS = {"last_access": "last-used", "access_count": "uses", "source_path": "source", "created_at": "created"}


class _SortChoice(click.Choice):
    """The sort names, also accepting the store's column names that earlier versions documented."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return super().convert(_OLD_SORTS.get(value, value), param, ctx)


@click.command("ls")
@click.option(
    "--sort", type=_SortChoice(list(SORTS)), default="last-used", show_default=True, help="Order by this column."
)
@click.option("-r", "--reverse", is_flag=True, help="Ascending: oldest, smallest, least used first.")
@click.option(
    "--path",
    "path_glob",
    metavar="GLOB",
    help="Only entries whose source path matches GLOB (a relative GLOB starts here).",
)
@click.option("--kind", type=click.Choice(KINDS), help="Only entries keyed by source, file or AST.")
@click.option(
    "--older-than", metavar="AGE", callback=duration, help="Only entries unused for AGE (30d, 12h, 45m, 90s)."
)
@click.option("-n", "--limit", type=click.IntRange(min=0), help="At most N entries.")
@formats(csv=True)
@click.pass_context
@clean_errors
def ls(
    ctx: click.Context,
    sort: str,
    reverse: bool,
    path_glob: str | None,
    kind: str | None,
    older_than: float | None,
    limit: int | None,
    fmt: str,
) -> None:
    """List entries, most recently used first, with a total line.

    Key prefix, kind (what the key was computed from), source path, payload size, instruction
    count, last use and uses. --json and --csv give every column, with full keys.
    """
    if path_glob is not None and not os.path.isabs(path_glob) and not path_glob.startswith("*"):
        path_glob = os.path.join(os.getcwd(), path_glob)
    by = SORTS[sort]
    with open_store(ctx) as store:
        entries = store.entries(
            sort=by, descending=not reverse, kind=kind, path_glob=path_glob, older_than=older_than, limit=limit
        )
        in_cache = store.count()
    render.rows(entries, fmt, ENTRY_COLUMNS, empty="(no entries)")
    if fmt == "table" and entries:
        total = render.size(sum(e["payload_size"] for e in entries))
        of = "" if len(entries) == in_cache else f" (of {in_cache} in the cache)"
        click.echo(f"total: {plural(len(entries), 'entry', 'entries')}, {total}{of}")


# -- show ------------------------------------------------------------------------------------------

_SHOW_FIELDS = [
    Column("key"),
    Column("kind"),
    Column("source_path", "source", display_path),
    Column("source_hash", "source hash"),
    Column("fingerprint", "compiler fingerprint"),
    Column("codec_version", "codec version"),
    Column("checksum", "payload checksum"),
    Column("payload_size", "payload", render.size),
    Column("mem_size", "in memory (estimate)", render.size),
    Column("n_instructions", "instructions"),
    Column("n_constants", "constants"),
    Column("created_at", "created", render.when),
    Column("last_access", "last access", render.when),
    Column("access_count", "uses"),
]


@click.command()
@click.argument("key_or_file")
@formats()
@click.pass_context
@clean_errors
def show(ctx: click.Context, key_or_file: str, fmt: str) -> None:
    """Show an entry's metadata and disassembled bytecode.

    KEY_OR_FILE is the start of the entry's key, as `ls` shows it, or a source file (FILE.zx):
    then its most recently used entry. The disassembly covers the program and every function
    compiled inside it.
    """
    from .. import codec

    with open_store(ctx) as store:
        key = _key_of(store, key_or_file)
        info = store.info(key)
        entry = store.get(key)
    if info is None or entry is None:
        raise click.ClickException(f"entry {key[:12]} was removed meanwhile")
    try:
        code = render.code_objects(codec.decode(entry.payload))
    except BcacheError as exc:
        raise click.ClickException(f"entry {key[:12]}: its bytecode cannot be decoded ({exc}); see `doctor`") from None
    if fmt == "json":
        render.write_json({**info, "code": code})
        return
    render.record(info, fmt, _SHOW_FIELDS)
    for obj in code:
        counts = f"{plural(len(obj['instructions']), 'instruction')}, {plural(len(obj['constants']), 'constant')}"
        click.echo(f"\n== {obj['name']}: {counts}")
        click.echo("\n".join(render.disassembly(obj)))


def _key_of(store: Any, key_or_file: str) -> str:
    path = Path(key_or_file)
    if path.suffix == ".zx" or os.sep in key_or_file or path.is_file():
        entries = maintenance.entries_for_path(store, path)
        if not entries:
            raise click.ClickException(f"no entry for {key_or_file} (run or warm it first; see `zexus-bcache ls`)")
        if len(entries) > 1:
            click.echo(f"{len(entries)} entries for {key_or_file}: showing the most recently used", err=True)
        return str(entries[0]["key"])
    try:
        return maintenance.find_key(store, key_or_file)
    except BcacheError as exc:
        raise click.ClickException(str(exc)) from None


# -- sql, tables, schema ---------------------------------------------------------------------------


@click.command()
@click.argument("statement")
@click.option(
    "-p",
    "--param",
    "params",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Bind :NAME to VALUE (as text; repeatable).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Stop the query after this long (it holds a read transaction meanwhile).",
)
@formats(csv=True, lines=True)
@click.pass_context
@clean_errors
def sql(ctx: click.Context, statement: str, params: tuple[tuple[str, str], ...], timeout: float, fmt: str) -> None:
    """Run one read-only SQL query on the cache database.

    See `tables` and `schema` for what there is to query. The connection is read-only and
    anything that would write is refused. Parameters are bound, never pasted into the SQL:
    `sql "SELECT * FROM entries WHERE kind = :k" -p k source`. Values are text; SQLite converts
    them for numeric columns (else use CAST(:n AS INTEGER)). A query runs for at most
    --timeout seconds; Ctrl-C stops it.
    """
    words = statement.strip().rstrip(";").split()
    if not words:
        raise click.UsageError("give an SQL statement, e.g. 'SELECT * FROM cache_stats'")
    if words[0].upper() == "VACUUM":
        raise click.ClickException("read-only query refused: VACUUM rewrites the database; run `zexus-bcache vacuum`")
    with open_store(ctx) as store:
        columns, rows = store.query(statement, dict(params), timeout=timeout)
    names = _unique(columns)
    render.rows([dict(zip(names, row, strict=True)) for row in rows], fmt, fields=names, empty="(no rows)")


def _unique(names: list[str]) -> list[str]:
    """Column names made unique (SELECT a, a), so rows can be mappings."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _described(store: Any) -> list[dict[str, Any]]:
    """Every table and view there is to query: name, kind, rows and columns (from the schema's own definition)."""
    from .. import schema

    out: list[dict[str, Any]] = []
    for name, table in schema.metadata.tables.items():
        columns = [f"{c.name} {c.type}" for c in table.columns]
        out.append({"name": name, "type": "table", "columns": columns})
    for name in schema.VIEWS:
        columns = store.query(f"SELECT * FROM {name} LIMIT 0")[0]  # a fixed name of ours, never the user's
        out.append({"name": name, "type": "view", "columns": columns})
    for item in out:
        item["rows"] = int(store.query(f"SELECT COUNT(*) FROM {item['name']}")[1][0][0])
    return out


@click.command()
@formats(csv=True)
@click.pass_context
@clean_errors
def tables(ctx: click.Context, fmt: str) -> None:
    """List the tables and views `sql` can query, with their row counts."""
    with open_store(ctx) as store:
        found = [{k: v for k, v in item.items() if k != "columns"} for item in _described(store)]
    render.rows(found, fmt, [Column("name"), Column("type"), Column("rows", justify="right")])


@click.command()
@click.argument("names", nargs=-1)
@formats()
@click.pass_context
@clean_errors
def schema(ctx: click.Context, names: tuple[str, ...], fmt: str) -> None:
    """Show the columns of every table and view (or of NAMES)."""
    with open_store(ctx) as store:
        found = _described(store)
    unknown = sorted(set(names) - {item["name"] for item in found})
    if unknown:
        known = ", ".join(item["name"] for item in found)
        raise click.ClickException(f"no table or view named {', '.join(unknown)}; there are: {known}")
    chosen = [item for item in found if not names or item["name"] in names]
    if fmt == "json":
        render.write_json(chosen)
        return
    for item in chosen:
        click.echo(f"{item['type']} {item['name']} ({plural(item['rows'], 'row')})")
        click.echo("".join(f"  {column}\n" for column in item["columns"]), nl=False)
