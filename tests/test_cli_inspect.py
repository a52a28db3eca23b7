"""Read commands: stats, ls, show, sql (and tables, schema)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    ENTRY_SHAPE,
    PROGRAMS,
    SNIPPET,
    NoneType,
    as_json,
    assert_shape,
    clean_error,
    invoke,
    key_of,
    ok,
    stored_keys,
)

from zexus_bcache import codec, constants, pipeline, store
from zexus_bcache.store import Store

pytestmark = pytest.mark.usefixtures("cli_project")


# -- stats -------------------------------------------------------------------------------------------


STATS_SHAPE = {
    "location": str,
    "schema_revision": str,
    "entries": int,
    "total_bytes": int,
    "file_bytes": int,
    "front_hits": int,
    "store_hits": int,
    "hits": int,
    "misses": int,
    "hit_rate": float,
    "puts": int,
    "evictions": int,
    "corrupt": int,
    "write_errors": int,
    "max_entries": int,
    "max_bytes": int,
    "policy": str,
    "shared_hits": int,
    "shared_misses": int,
    "shared_puts": int,
    "shared_dropped": int,
    "shared_errors": int,
    "auth_failures": int,
    **dict.fromkeys(constants.COUNTERS, int),  # every counter the library keeps
    "entries_used_percent": (float, NoneType),
    "bytes_used_percent": (float, NoneType),
    "counters_zeroed_at": (float, NoneType),
}


def test_stats(db: Path) -> None:
    data = as_json(invoke(db, "stats", "--json"))
    assert_shape(data, STATS_SHAPE)
    assert data["entries"] == 4 and data["misses"] == 4 and data["front_hits"] == 1 and data["hits"] == 1
    assert data["hit_rate"] == 20.0 and data["location"] == str(db) and data["schema_revision"] == store.head_revision()
    table = ok(invoke(db, "stats")).stdout
    for label in ("hits (memory tier)", "hits (store tier)", "hit rate", "20.00%", "max bytes", "256.0 MiB", str(db)):
        assert label in table


def test_stats_zero_resets_the_counters(db: Path) -> None:
    result = ok(invoke(db, "stats", "-z", "--json"))
    assert json.loads(result.stdout)["misses"] == 4  # shown, then zeroed
    assert "counters zeroed" in result.stderr
    data = as_json(invoke(db, "stats", "--json"))
    assert data["misses"] == 0 and data["hits"] == 0 and data["entries"] == 4


# -- ls ----------------------------------------------------------------------------------------------


def test_ls(db: Path, sources: list[Path]) -> None:
    table = ok(invoke(db, "ls")).stdout
    rows = json.loads(ok(invoke(db, "ls", "--json")).stdout)
    assert len(rows) == 4
    for row in rows:
        assert_shape(row, ENTRY_SHAPE)
        assert row["key"][:12] in table and row["key"] not in table  # the table shows key prefixes
    assert "src/06_actions_params_returns.zx" in table and "source" in table
    assert rows[0]["source_path"] == str(sources[0])  # the most recently used first
    csv_lines = ok(invoke(db, "ls", "--csv")).stdout.splitlines()
    assert csv_lines[0].split(",") == list(ENTRY_SHAPE) and len(csv_lines) == 5


def test_ls_sorts_filters_and_limits(db: Path, sources: list[Path]) -> None:
    def listed(*args: str) -> list[Any]:
        return json.loads(ok(invoke(db, "ls", "--json", *args)).stdout)

    sizes = [row["payload_size"] for row in listed("--sort", "size")]
    assert sizes == sorted(sizes, reverse=True)
    assert [row["payload_size"] for row in listed("--sort", "size", "-r")] == sorted(sizes)
    assert {row["source_path"] for row in listed("--path", "src/0[36]*")} == {str(sources[1]), str(sources[2])}
    assert {row["source_path"] for row in listed("--path", "*ackermann*")} == {str(sources[1])}
    assert listed("--kind", "ast") == [] and len(listed("--kind", "source")) == 4
    assert listed("--older-than", "1h") == [] and len(listed("--older-than", "0s")) == 4
    assert len(listed("-n", "2")) == 2
    assert "(no entries)" in ok(invoke(db, "ls", "--kind", "file")).stdout
    clean_error(invoke(db, "ls", "--older-than", "soon"), "--older-than", "not a duration")


# -- show --------------------------------------------------------------------------------------------


def test_show_disassembles_the_program_and_its_functions(db: Path) -> None:
    key = key_of(db, "06_actions_params_returns.zx")
    text = ok(invoke(db, "show", key[:8])).stdout
    assert key in text and "06_actions_params_returns.zx" in text
    assert "== <main>: 177 instructions" in text and "== <main>.square:" in text and "== <main>.min_max:" in text
    assert "STORE_FUNC" in text and "RETURN" in text
    data = as_json(invoke(db, "show", key[:8], "--json"))
    assert_shape(data, {**ENTRY_SHAPE, "code": list})
    assert data["key"] == key and len(data["code"]) == 11
    for obj in data["code"]:
        assert_shape(obj, {"name": str, "constants": list, "instructions": list})
        for instruction in obj["instructions"]:
            assert_shape(instruction, {"offset": int, "opcode": str, "operand": (int, str, list, float, NoneType)})
    assert data["code"][0]["instructions"][0] == {"offset": 0, "opcode": "STORE_FUNC", "operand": [1, 0]}


def test_show_unknown_and_ambiguous_prefixes(db: Path) -> None:
    bytecode = pipeline.compile_source(SNIPPET)
    with Store(db) as s:
        for key in ("abcd0001", "abcd0002"):
            s.put(
                key,
                codec.encode(bytecode),
                kind="ast",
                fingerprint="fp",
                codec_version=1,
                n_instructions=1,
                n_constants=1,
            )
    message = clean_error(invoke(db, "show", "abcd"), "ambiguous key prefix 'abcd'", "2 entries match")
    assert "abcd0001" in message and "abcd0002" in message
    ok(invoke(db, "show", "abcd0002"))
    clean_error(invoke(db, "show", "ffffffff"), "no entry has a key starting with 'ffffffff'")


# -- sql ---------------------------------------------------------------------------------------------


def test_sql_binds_parameters(db: Path) -> None:
    statement = "SELECT kind, count(*) AS n, sum(payload_size) AS bytes FROM entries WHERE kind = :kind GROUP BY kind"
    rows = as_json(invoke(db, "sql", statement, "-p", "kind", "source", "--json"))
    assert len(rows) == 1
    assert_shape(rows[0], {"kind": str, "n": int, "bytes": int})
    assert rows[0]["n"] == 4
    assert as_json(invoke(db, "sql", "SELECT :v AS v", "-p", "v", "x' OR '1'='1", "--json")) == [{"v": "x' OR '1'='1"}]
    assert ok(invoke(db, "sql", "SELECT name, value FROM settings ORDER BY name", "--csv")).stdout.splitlines() == [
        "name,value",
        "max_bytes,268435456",
        "max_entries,100000",
        "policy,lru",
    ]
    assert "hit_rate" in ok(invoke(db, "sql", "SELECT * FROM cache_stats")).stdout
    assert as_json(invoke(db, "sql", "SELECT 1 AS a, 2 AS a", "--json")) == [{"a": 1, "a_2": 2}]
    assert ok(invoke(db, "sql", "SELECT * FROM entries WHERE 0", "--csv")).stdout.startswith("key,kind,")
    assert "(no rows)" in ok(invoke(db, "sql", "SELECT * FROM entries WHERE 0")).stdout
    assert "[/bold] [red]x" in ok(invoke(db, "sql", "SELECT '[/bold] [red]x' AS markup")).stdout  # printed as is


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO counters VALUES ('x', 1)",
        "UPDATE entries SET access_count = 99",
        "DELETE FROM entries",
        "DROP TABLE entries",
        "ATTACH '{tmp}/other.db' AS other",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA query_only = OFF",
    ],
)
def test_sql_refuses_writes(db: Path, tmp_path: Path, statement: str) -> None:
    before = db.read_bytes()
    clean_error(invoke(db, "sql", statement.format(tmp=tmp_path)), "read-only query refused")
    assert len(stored_keys(db)) == 4 and not (tmp_path / "other.db").exists()
    assert as_json(invoke(db, "sql", "SELECT max(access_count) AS n FROM entries", "--json"))[0]["n"] < 99
    assert db.read_bytes() == before


def test_sql_errors(db: Path) -> None:
    clean_error(invoke(db, "sql", "SELEC * FROM entries"), "syntax error")
    clean_error(invoke(db, "sql", "SELECT * FROM nowhere"), "no such table")
    clean_error(invoke(db, "sql", "SELECT :k"), "binding parameter")
    clean_error(invoke(db, "sql", "SELECT 1; SELECT 2"), "one statement")


# -- what new users looked for: sorts by header, totals, files, formats, tables --------------------


def test_ls_sorts_by_its_column_headers(db: Path) -> None:
    def order(*args: str) -> list[Any]:
        return json.loads(ok(invoke(db, "ls", "--json", *args)).stdout)

    uses = [row["access_count"] for row in order("--sort", "uses")]
    assert uses == sorted(uses, reverse=True) and uses[0] > uses[-1]
    instrs = [row["n_instructions"] for row in order("--sort", "instrs")]
    assert instrs == sorted(instrs, reverse=True) and len(set(instrs)) > 1
    assert [row["n_instructions"] for row in order("--sort", "instrs", "-r", "-n", "2")] == sorted(instrs)[:2]
    assert order("--sort", "last-used") == order()
    assert order("--sort", "access_count") == order("--sort", "uses")  # the old names still work
    help_text = ok(invoke(db, "ls", "--help")).stdout
    assert "last-used" in help_text and "instrs" in help_text
    header = ok(invoke(db, "ls")).stdout.splitlines()[0].split()
    assert {"uses", "last-used", "instrs", "size", "source", "key"} <= set(header)


def test_ls_ends_with_a_total_line(db: Path) -> None:
    lines = ok(invoke(db, "ls")).stdout.strip().splitlines()
    sizes = sum(row["payload_size"] for row in as_json(invoke(db, "ls", "--json")))
    from zexus_bcache import render

    assert lines[-1] == f"total: 4 entries, {render.size(sizes)}"
    assert ok(invoke(db, "ls", "-n", "1")).stdout.strip().splitlines()[-1].startswith("total: 1 entry, ")
    assert "(of 4 in the cache)" in ok(invoke(db, "ls", "-n", "1")).stdout
    assert "total:" not in ok(invoke(db, "ls", "--csv")).stdout


def test_paths_are_never_folded_on_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from zexus_bcache import render
    from zexus_bcache.cli.inspect import ENTRY_COLUMNS

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "70")
    monkeypatch.delenv("NO_COLOR", raising=False)
    path = "/home/someone/projects/zexus-app/src/services/billing/invoice_generator.zx"
    row = {
        "key": "ab" * 32,
        "kind": "source",
        "source_path": path,
        "payload_size": 1234,
        "n_instructions": 99,
        "last_access": 0.0,
        "access_count": 3,
    }
    out = Terminal()
    render.rows([row], "table", ENTRY_COLUMNS, out=out)
    assert path in out.getvalue()  # whole, on one line: copyable


def test_stats_with_no_lookups_and_usage(tmp_path: Path, db: Path) -> None:
    fresh = tmp_path / "fresh.db"
    ok(invoke(fresh, "db", "upgrade"))
    table = ok(invoke(fresh, "stats")).stdout
    assert next(line for line in table.splitlines() if line.startswith("hit rate")).split()[-1] == "—"
    assert as_json(invoke(fresh, "stats", "--json"))["hit_rate"] == 0.0
    ok(invoke(db, "config", "set", "max_entries", "8"))
    ok(invoke(db, "config", "set", "max_bytes", "1M"))
    data = as_json(invoke(db, "stats", "--json"))
    assert data["entries_used_percent"] == 50.0
    assert data["bytes_used_percent"] == round(100 * data["total_bytes"] / 1024**2, 2) > 0
    assert "50% of max entries" in ok(invoke(db, "stats")).stdout


def test_show_a_source_file(db: Path, sources: list[Path]) -> None:
    key = key_of(db, PROGRAMS[2])
    assert as_json(invoke(db, "show", str(sources[2]), "--json"))["key"] == key
    assert as_json(invoke(db, "show", f"src/{PROGRAMS[2]}", "--json"))["key"] == key  # relative to here
    clean_error(invoke(db, "show", "src/nothing.zx"), "no entry for src/nothing.zx")


def test_sql_tsv_nl_and_wording(db: Path) -> None:
    tsv = ok(invoke(db, "sql", "SELECT name, value FROM settings ORDER BY name", "--tsv")).stdout.splitlines()
    assert tsv[0] == "name\tvalue" and tsv[1] == "max_bytes\t268435456"
    lines = ok(invoke(db, "sql", "SELECT kind, payload_size FROM entries", "--nl")).stdout.splitlines()
    assert len(lines) == 4 and all(json.loads(line)["kind"] == "source" for line in lines)
    clean_error(invoke(db, "sql", "VACUUM"), "VACUUM", "zexus-bcache vacuum")
    empty = invoke(db, "sql", "  ")
    assert empty.exit_code == 2 and "give an SQL statement" in empty.stderr


def test_tables_and_schema(db: Path) -> None:
    found = {row["name"]: row for row in as_json(invoke(db, "tables", "--json"))}
    assert set(found) == {"entries", "counters", "settings", "totals", "entry_summary", "cache_stats"}
    assert found["entries"]["rows"] == 4 and found["cache_stats"]["type"] == "view"
    described = as_json(invoke(db, "schema", "entries", "cache_stats", "--json"))
    assert [d["name"] for d in described] == ["entries", "cache_stats"]
    assert "source_path VARCHAR" in described[0]["columns"] and "hit_rate" in described[1]["columns"]
    for item in described:  # every column schema shows can be selected
        for column in item["columns"]:
            ok(invoke(db, "sql", f"SELECT {column.split()[0]} FROM {item['name']} LIMIT 1"))
    clean_error(invoke(db, "schema", "nope"), "no table or view named nope")
