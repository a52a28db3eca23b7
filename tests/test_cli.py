"""The command line through click's CliRunner: every command, its JSON shapes, and every error path."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from zexus_bcache import cli, codec, config, integration, keys, schema, store
from zexus_bcache.cache import BytecodeCache
from zexus_bcache.cli import main
from zexus_bcache.errors import ConfigError
from zexus_bcache.store import Store
from zx_programs import CORPUS_DIR

PROGRAMS = ["01_recursion_factorial.zx", "03_recursion_ackermann.zx", "06_actions_params_returns.zx"]
SNIPPET = "let a = 6 * 7\nprint(a)\n"
NoneType = type(None)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in its own project directory, with no cache settings from the environment."""
    for name in ("PATH", "MAX_ENTRIES", "MAX_BYTES", "POLICY", "MAX_MEMORY_MB"):
        monkeypatch.delenv(f"ZEXUS_BCACHE_{name}", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".zexus").mkdir()  # the project root marker: config files outside tmp_path are not read


@pytest.fixture
def sources(tmp_path: Path) -> list[Path]:
    """A few corpus programs copied into the project."""
    directory = tmp_path / "src"
    directory.mkdir()
    return [Path(shutil.copy(CORPUS_DIR / name, directory / name)) for name in PROGRAMS]


@pytest.fixture
def db(tmp_path: Path, sources: list[Path]) -> Path:
    """A cache holding the programs (file entries with their paths) and one snippet (no path)."""
    path = tmp_path / "cache.db"
    with BytecodeCache(path=path) as cache:
        for source in sources:
            cache.compile_file(source)
        cache.compile_source(SNIPPET)
        cache.compile_file(sources[0])  # a hit
    return path


def invoke(db: Path | None, *args: str, input: str | None = None) -> Result:
    """Run the command line (with --cache db when given); never let an exception escape silently."""
    argv = (["--cache", str(db)] if db is not None else []) + list(args)
    result = CliRunner().invoke(main, argv, input=input, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def clean_error(result: Result, *fragments: str) -> str:
    """An error is one line, 'Error: ...', exit code 1, no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_shape(obj: Any, shape: dict[str, Any]) -> None:
    """The object has exactly these keys, each of these types."""
    assert isinstance(obj, dict) and set(obj) == set(shape), (set(obj) ^ set(shape))
    for key, kind in shape.items():
        assert isinstance(obj[key], kind) and not (kind is int and isinstance(obj[key], bool)), (key, obj[key])


ENTRY_SHAPE = {
    "key": str,
    "kind": str,
    "fingerprint": str,
    "codec_version": int,
    "checksum": str,
    "source_hash": (str, NoneType),
    "mem_size": (int, NoneType),
    "payload_size": int,
    "n_instructions": int,
    "n_constants": int,
    "source_path": (str, NoneType),
    "created_at": float,
    "last_access": float,
    "access_count": int,
    "signature": (str, NoneType),
}


def stored_keys(db: Path) -> list[str]:
    with Store(db, read_only=True) as s:
        return s.keys()


# -- the command line itself ----------------------------------------------------------------------


def all_commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def test_every_command_and_db_subcommand_has_help() -> None:
    names = {path for path, _ in all_commands()}
    expected = {"run", "demo", "stats", "ls", "show", "evict", "invalidate", "clear", "vacuum", "doctor", "sql", "db",
                "config", "warm", ("db", "upgrade"), ("db", "downgrade"), ("db", "current"), ("db", "history")}
    assert names == {(n,) if isinstance(n, str) else n for n in expected}
    for path, command in all_commands():
        assert command.help and command.get_short_help_str().strip(), path
        result = ok(invoke(None, *path, "--help"))
        assert result.stdout.startswith(f"Usage: main {' '.join(path)}")
        assert command.help.split()[0] in result.stdout
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, (path, param.name)


def test_literal_choices_match_the_library() -> None:
    assert cli.KINDS == schema.KINDS and cli.POLICIES == schema.POLICIES and cli.SORTS == store.SORTS
    assert config._DEFAULTS["max_entries"] == int(schema.DEFAULT_SETTINGS["max_entries"])
    assert config._DEFAULTS["max_bytes"] == int(schema.DEFAULT_SETTINGS["max_bytes"])
    assert config._DEFAULTS["policy"] == schema.DEFAULT_SETTINGS["policy"]


@pytest.mark.parametrize(
    ("text", "size"), [("0", 0), ("1048576", 1048576), ("512K", 512 * 1024), ("10MB", 10 * 1024**2), ("1.5GiB", 1536 * 1024**2), ("2 m", 2 * 1024**2)]
)
def test_sizes(text: str, size: int) -> None:
    assert config.parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("45m", 2700), ("12h", 43200), ("30d", 2592000), ("1h30m", 5400), ("15", 15)])
def test_durations(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "lots", "-5", "5x", "1.2.3"])
def test_bad_sizes_and_durations(bad: str) -> None:
    with pytest.raises(ConfigError):
        config.parse_size(bad)
    with pytest.raises(ConfigError):
        config.parse_duration(bad)


# -- stats -------------------------------------------------------------------------------------------


STATS_SHAPE = {
    "location": str, "schema_revision": str, "entries": int, "total_bytes": int, "file_bytes": int,
    "front_hits": int, "store_hits": int, "hits": int, "misses": int, "hit_rate": float, "puts": int,
    "evictions": int, "corrupt": int, "write_errors": int, "max_entries": int, "max_bytes": int, "policy": str,
    "shared_hits": int, "shared_misses": int, "shared_puts": int, "shared_dropped": int, "shared_errors": int,
    "auth_failures": int,
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


def key_of(db: Path, name: str) -> str:
    with Store(db, read_only=True) as s:
        return next(e["key"] for e in s.entries() if e["source_path"] and e["source_path"].endswith(name))


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
    bytecode = integration.compile_source(SNIPPET)
    with Store(db) as s:
        for key in ("abcd0001", "abcd0002"):
            s.put(key, codec.encode(bytecode), kind="ast", fingerprint="fp", codec_version=1, n_instructions=1, n_constants=1)
    message = clean_error(invoke(db, "show", "abcd"), "ambiguous key prefix 'abcd'", "2 entries match")
    assert "abcd0001" in message and "abcd0002" in message
    ok(invoke(db, "show", "abcd0002"))
    clean_error(invoke(db, "show", "ffffffff"), "no entry has a key starting with 'ffffffff'")


# -- evict, invalidate, clear, vacuum ------------------------------------------------------------------


EVICT_SHAPE = {"dry_run": bool, "evicted": int, "bytes": int, "max_entries": int, "max_bytes": int, "policy": str,
               "older_than": (float, NoneType), "entries": list}


def test_evict_dry_run_then_for_real(db: Path) -> None:
    planned = as_json(invoke(db, "evict", "--max-entries", "1", "--dry-run", "--json"))
    assert_shape(planned, EVICT_SHAPE)
    assert planned["dry_run"] is True and planned["evicted"] == 3 and planned["max_entries"] == 1
    for row in planned["entries"]:
        assert_shape(row, {"key": str, "kind": str, "source_path": (str, NoneType), "payload_size": int,
                           "last_access": float, "access_count": int, "reason": str})
    assert len(stored_keys(db)) == 4
    result = ok(invoke(db, "evict", "--max-entries", "1"))
    assert "evicted 3 entries" in result.stderr and "limits" in result.stdout
    assert len(stored_keys(db)) == 1
    assert as_json(invoke(db, "stats", "--json"))["evictions"] == 3


def test_evict_by_age_and_size(db: Path) -> None:
    assert as_json(invoke(db, "evict", "--older-than", "1h", "--json"))["evicted"] == 0
    data = as_json(invoke(db, "evict", "--max-bytes", "1K", "--policy", "lfu", "--json"))
    assert data["max_bytes"] == 1024 and data["policy"] == "lfu" and data["bytes"] > 0
    assert sum(e["payload_size"] for e in json.loads(ok(invoke(db, "ls", "--json")).stdout)) <= 1024
    clean_error(invoke(db, "evict", "--max-bytes", "lots"), "--max-bytes", "not a size")
    clean_error(invoke(db, "evict", "--older-than", "30x"), "--older-than", "not a duration")


def test_invalidate_stale_files(db: Path, sources: list[Path]) -> None:
    sources[0].write_text(sources[0].read_text() + "\nprint(1)\n")
    sources[1].unlink()
    data = as_json(invoke(db, "invalidate", "--stale", "--json"))
    assert data == {"removed": 2, "by_criterion": {"stale": 2}}
    remaining = json.loads(ok(invoke(db, "ls", "--json")).stdout)
    assert {row["source_path"] for row in remaining} == {str(sources[2]), None}
    assert as_json(invoke(db, "invalidate", "--stale", "--json"))["removed"] == 0


def test_invalidate_by_key_file_and_compiler(db: Path, sources: list[Path]) -> None:
    key = key_of(db, PROGRAMS[2])
    result = ok(invoke(db, "invalidate", "--key", key[:10], "--file", str(sources[0])))
    assert "removed 2 entries (key: 1, file: 1)" in result.stdout
    with Store(db) as s:
        s.put("old", b"x", kind="ast", fingerprint="another zexus", codec_version=1, n_instructions=1, n_constants=1)
    assert keys.compiler_fingerprint() in {row["fingerprint"] for row in json.loads(invoke(db, "ls", "--json").stdout)}
    assert as_json(invoke(db, "invalidate", "--other-compilers", "--json"))["by_criterion"] == {"other_compilers": 1}
    assert len(stored_keys(db)) == 2
    assert as_json(invoke(db, "invalidate", "--file", str(sources[0].parent), "--json"))["removed"] == 1
    clean_error(invoke(db, "invalidate", "--key", "ffff"), "no entry")
    usage = invoke(db, "invalidate")
    assert usage.exit_code == 2 and "give at least one of" in usage.stderr


def test_clear_asks_first(db: Path) -> None:
    result = invoke(db, "clear", input="n\n")
    assert result.exit_code == 1 and "Remove all 4 entries" in result.stderr and len(stored_keys(db)) == 4
    assert "removed 4 entries" in ok(invoke(db, "clear", input="y\n")).stdout
    assert stored_keys(db) == []
    assert "removed 0 entries" in ok(invoke(db, "clear", "--yes")).stdout


def test_vacuum(db: Path) -> None:
    ok(invoke(db, "clear", "--yes"))
    assert f"vacuumed {db}:" in ok(invoke(db, "vacuum")).stdout


# -- doctor ------------------------------------------------------------------------------------------


DOCTOR_SHAPE = {"location": str, "ok": bool, "problems": int, "checks": list, "repairs": list}


def test_doctor_on_a_healthy_cache(db: Path) -> None:
    data = as_json(invoke(db, "doctor", "--json"))
    assert_shape(data, DOCTOR_SHAPE)
    assert data["ok"] is True and data["problems"] == 0 and data["repairs"] == []
    assert [c["check"] for c in data["checks"]] == ["schema", "integrity", "payloads", "orphans"]
    for check in data["checks"]:
        assert_shape(check, {"check": str, "ok": bool, "detail": str})
    blobs = as_json(invoke(db, "sql", "SELECT count(*) AS n FROM blobs", "--json"))[0]["n"]
    assert f"payloads    ok       {blobs} checked" in ok(invoke(db, "doctor")).stdout


def test_doctor_finds_and_repairs_damaged_payloads_and_orphans(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        damaged, lost = [row[0] for row in conn.execute("SELECT checksum FROM blobs ORDER BY checksum LIMIT 2")]
        conn.execute("UPDATE blobs SET payload = x'5a584243' WHERE checksum = ?", (damaged,))
        conn.execute("DELETE FROM blobs WHERE checksum = ?", (lost,))
        conn.execute("INSERT INTO blobs VALUES ('unused', ?)", (b"x",))
    conn.close()
    result = invoke(db, "doctor", "--json")
    clean_error(result, "problem(s) found", "--repair")
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["problems"] == 2
    failed = {c["check"]: c["detail"] for c in data["checks"] if not c["ok"]}
    assert "checksum mismatch" in failed["payloads"] and "1 entries without a blob, 1 blobs without an entry" in failed["orphans"]
    repaired = as_json(invoke(db, "doctor", "--repair", "--json"))
    assert repaired["ok"] is True and repaired["repairs"] and len(stored_keys(db)) == 2
    assert as_json(invoke(db, "doctor", "--json"))["problems"] == 0


def test_doctor_moves_a_garbage_database_aside(tmp_path: Path) -> None:
    garbage = tmp_path / "bcache.db"
    garbage.write_bytes(b"this is not a database" * 200)
    clean_error(invoke(garbage, "doctor"), "1 problem(s) found")
    data = as_json(invoke(garbage, "doctor", "--repair", "--json"))
    assert data["checks"][0]["check"] == "open" and "not a SQLite database" in data["checks"][0]["detail"]
    assert "moved the broken database to" in data["repairs"][0]
    moved = list(tmp_path.glob("bcache.db.broken-*"))
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"this is not a database")
    assert as_json(invoke(garbage, "stats", "--json"))["entries"] == 0


# -- sql ---------------------------------------------------------------------------------------------


def test_sql_binds_parameters(db: Path) -> None:
    statement = "SELECT kind, count(*) AS n, sum(payload_size) AS bytes FROM entries WHERE kind = :kind GROUP BY kind"
    rows = as_json(invoke(db, "sql", statement, "-p", "kind", "source", "--json"))
    assert len(rows) == 1
    assert_shape(rows[0], {"kind": str, "n": int, "bytes": int})
    assert rows[0]["n"] == 4
    assert as_json(invoke(db, "sql", "SELECT :v AS v", "-p", "v", "x' OR '1'='1", "--json")) == [{"v": "x' OR '1'='1"}]
    assert ok(invoke(db, "sql", "SELECT name, value FROM settings ORDER BY name", "--csv")).stdout.splitlines() == [
        "name,value", "max_bytes,268435456", "max_entries,100000", "policy,lru"
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


# -- db ----------------------------------------------------------------------------------------------


def test_db_current_history_downgrade_upgrade(db: Path) -> None:
    head = store.head_revision()
    current = as_json(invoke(db, "db", "current", "--json"))
    assert_shape(current, {"location": str, "revision": (str, NoneType), "head": str, "status": str})
    assert current["revision"] == head and current["status"] == "up to date"
    history = as_json(invoke(db, "db", "history", "--json"))
    for row in history:
        assert_shape(row, {"revision": str, "down_revision": (str, NoneType), "description": str, "head": bool, "current": bool})
    assert history[0]["revision"] == head and history[0]["head"] and history[0]["current"]

    refused = invoke(db, "db", "downgrade", "base", input="n\n")
    assert refused.exit_code == 1 and "Downgrade" in refused.stderr
    assert "downgraded" in ok(invoke(db, "db", "downgrade", "base", "--yes")).stdout
    assert as_json(invoke(db, "db", "current", "--json"))["revision"] is None
    clean_error(invoke(db, "stats"), "db upgrade")  # read commands never migrate
    clean_error(invoke(db, "db", "downgrade", "nowhere", "--yes"), "nowhere")
    assert f"upgraded base -> {head}" in ok(invoke(db, "db", "upgrade")).stdout
    assert "already at" in ok(invoke(db, "db", "upgrade")).stdout
    assert as_json(invoke(db, "stats", "--json"))["entries"] == 0
    usage = invoke(db, "db", "downgrade")
    assert usage.exit_code == 2  # the revision is required


def test_db_upgrade_creates_a_database(tmp_path: Path) -> None:
    path = tmp_path / "new" / "c.db"
    ok(invoke(path, "db", "upgrade"))
    assert as_json(invoke(path, "db", "current", "--json"))["revision"] == store.head_revision()


# -- config ------------------------------------------------------------------------------------------


def settings_of(result: Result) -> dict[str, Any]:
    data = json.loads(ok(result).stdout)
    assert_shape(data, {"config_file": str, "config_file_exists": bool, "settings": dict})
    for name, setting in data["settings"].items():
        assert name in config.NAMES
        assert_shape(setting, {"value": (str, int, float), "source": str, "origin": str})
    return data["settings"]


def test_config_defaults(tmp_path: Path) -> None:
    settings = settings_of(invoke(None, "config", "--json"))
    assert list(settings) == list(config.NAMES)
    assert settings["path"] == {"value": str(tmp_path / ".zexus" / "bcache.db"), "source": "default", "origin": ""}
    assert settings["max_bytes"]["value"] == 256 * 1024**2 and settings["policy"]["value"] == "lru"
    assert "(all keys optional)" in ok(invoke(None, "config", "--help")).stdout


def test_config_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".zexus" / "bcache.toml").write_text(
        'path = "caches/project.db"\nmax_bytes = "10MB"\npolicy = "lfu"\nmax_entries = 7\nmax_memory_mb = 12.5\n'
    )
    monkeypatch.setenv("ZEXUS_BCACHE_MAX_ENTRIES", "50")
    settings = settings_of(invoke(None, "config", "--json"))
    assert settings["path"]["value"] == str(tmp_path / "caches" / "project.db")
    assert settings["path"]["source"] == "config file"
    assert settings["max_entries"] == {"value": 50, "source": "environment", "origin": "ZEXUS_BCACHE_MAX_ENTRIES"}
    assert settings["max_bytes"]["value"] == 10 * 1024**2 and settings["max_bytes"]["source"] == "config file"
    assert settings["max_memory_mb"]["value"] == 12.5
    monkeypatch.setenv("ZEXUS_BCACHE_PATH", str(tmp_path / "env.db"))
    assert settings_of(invoke(None, "config", "--json"))["path"]["source"] == "environment"
    assert settings_of(invoke(tmp_path / "cli.db", "config", "--json"))["path"] == {
        "value": str(tmp_path / "cli.db"), "source": "command line", "origin": "--cache"
    }
    table = ok(invoke(None, "config")).stdout
    assert "environment" in table and "config file" in table and "10.0 MiB" in table


def test_config_database_source_and_writes_store_the_limits(db: Path, tmp_path: Path) -> None:
    with Store(db) as s:
        s.set_setting("max_entries", 3)
    assert settings_of(invoke(db, "config", "--json"))["max_entries"] == {"value": 3, "source": "database", "origin": str(db)}
    (tmp_path / ".zexus" / "bcache.toml").write_text("max_entries = 2\n")
    ok(invoke(db, "evict"))  # a command that writes stores the file's limits for every process
    with Store(db, read_only=True) as s:
        assert s.get_settings()["max_entries"] == 2 and s.count() == 2


def test_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / ".zexus" / "bcache.toml"
    config_file.write_text("colour = 'blue'\n")
    clean_error(invoke(None, "config"), "unknown setting(s) colour")
    config_file.write_text("max_bytes = = 3\n")
    clean_error(invoke(None, "config"), "cannot read the config file")
    config_file.unlink()
    monkeypatch.setenv("ZEXUS_BCACHE_POLICY", "fifo")
    clean_error(invoke(None, "config"), "ZEXUS_BCACHE_POLICY", "policy must be one of lru, lfu")


# -- warm --------------------------------------------------------------------------------------------


WARM_SHAPE = {"location": str, "files": int, "compiled": int, "cached": int, "failed": int, "seconds": float, "results": list}


def test_warm_in_parallel(tmp_path: Path, sources: list[Path]) -> None:
    directory = sources[0].parent
    (directory / "nested").mkdir()
    shutil.copy(CORPUS_DIR / "10_maps_basics.zx", directory / "nested" / "maps.zx")
    (directory / "broken.zx").write_text("action {\n")
    (directory / "unsupported.zx").write_text("let f = 3\nf(1) = 2\n")
    (directory / "notes.txt").write_text("not a program")
    path = tmp_path / "warm.db"

    data = as_json(invoke(path, "warm", "-j", "2", "--json", str(directory)))
    assert_shape(data, WARM_SHAPE)
    assert (data["files"], data["compiled"], data["cached"], data["failed"]) == (6, 4, 0, 2)
    for row in data["results"]:
        assert_shape(row, {"path": str, "status": str, "reason": (str, NoneType)})
    reasons = {Path(r["path"]).name: r["reason"] for r in data["results"] if r["status"] == "failed"}
    assert reasons["broken.zx"].startswith("parse errors:")
    assert reasons["unsupported.zx"].startswith("not supported by the VM compiler:")
    assert len(stored_keys(path)) == 4

    again = ok(invoke(path, "warm", "-j", "2", "--quiet", str(directory)))
    assert "4 already cached, 2 failed" in again.stdout and "broken.zx" in again.stdout
    assert "parse errors" in again.stdout
    clean_error(invoke(path, "warm", "--strict", str(directory)), "2 of 6 files could not be compiled")
    stats = as_json(invoke(path, "stats", "--json"))
    assert stats["store_hits"] >= 4 and stats["puts"] == 4  # the workers' counters were saved


def test_warm_failures_only_and_no_files(tmp_path: Path) -> None:
    (tmp_path / "broken.zx").write_text("action {\n")
    clean_error(invoke(tmp_path / "c.db", "warm", str(tmp_path / "broken.zx")), "1 of 1 files could not be compiled")
    (tmp_path / "empty").mkdir()
    clean_error(invoke(tmp_path / "c.db", "warm", str(tmp_path / "empty")), "no .zx files")


# -- error paths common to every command -----------------------------------------------------------


READ_COMMANDS = [
    ["stats"], ["ls"], ["show", "abc"], ["sql", "SELECT 1"], ["db", "current"], ["doctor"], ["evict", "--dry-run"],
]
WRITE_COMMANDS = [["stats", "-z"], ["evict"], ["invalidate", "--stale"], ["clear", "--yes"], ["vacuum"], ["db", "downgrade", "base", "--yes"]]


@pytest.mark.parametrize("args", READ_COMMANDS + WRITE_COMMANDS, ids=" ".join)
def test_a_missing_database_is_not_created(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "nowhere" / "bcache.db"
    clean_error(invoke(path, *args), f"no cache at {path}")
    assert not path.parent.exists()


def test_the_default_location_is_not_created_by_reading(tmp_path: Path) -> None:
    clean_error(invoke(None, "ls"), f"no cache at {tmp_path / '.zexus' / 'bcache.db'}")
    assert list((tmp_path / ".zexus").iterdir()) == []


@pytest.mark.parametrize("args", READ_COMMANDS[:-2] + WRITE_COMMANDS[:-1], ids=" ".join)
def test_a_garbage_database_is_one_clean_error(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "bcache.db"
    path.write_bytes(b"garbage!" * 1000)
    clean_error(invoke(path, *args), "not a SQLite database", "doctor --repair")
    assert path.read_bytes() == b"garbage!" * 1000


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE mine (a)")
    conn.close()
    clean_error(invoke(path, "ls"), "not a zexus_bcache store")
    clean_error(invoke(path, "db", "upgrade"), "not a zexus_bcache store")


# -- run and demo (step 3) through the same runner ---------------------------------------------------


def test_run_compiles_then_hits_the_store(tmp_path: Path, sources: list[Path]) -> None:
    path = tmp_path / "run.db"
    first = ok(invoke(path, "run", "--timings", str(sources[0])))
    assert "fact(5) = 120" in first.stdout and "miss (compiled and stored)" in first.stderr
    second = ok(invoke(path, "run", "--timings", str(sources[0])))
    assert second.stdout == first.stdout and "hit (store)" in second.stderr
    broken = tmp_path / "broken.zx"
    broken.write_text("action {\n")
    clean_error(invoke(path, "run", str(broken)), "parse errors")


def test_run_uses_the_project_config_file(tmp_path: Path, sources: list[Path]) -> None:
    (tmp_path / ".zexus" / "bcache.toml").write_text('path = "configured.db"\nmax_entries = 5\n')
    ok(invoke(None, "run", str(sources[1])))
    with Store(tmp_path / "configured.db", read_only=True) as s:
        assert s.count() == 1 and s.get_settings()["max_entries"] == 5


def test_demo(sources: list[Path]) -> None:
    result = ok(invoke(None, "demo", str(sources[0])))
    assert "fact(5) = 120" in result.stdout and "encoded to" in result.stderr
