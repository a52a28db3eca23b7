"""Every command with ``--cache postgresql://...`` against a real server, and ``--shared`` for run/warm.

Each test gets a fresh database (conftest.py); without ZEXUS_BCACHE_TEST_PG_URL they skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_helpers import PROGRAMS, as_json, clean_error, ok
from cli_helpers import invoke as invoke_cli
from click.testing import Result

from zexus_bcache import store
from zexus_bcache.cache import BytecodeCache
from zexus_bcache.shared import verify
from zexus_bcache.store import Store

KEY = "cli-test-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in its own project directory, with no cache settings from the environment."""
    for name in (
        "PATH",
        "MAX_ENTRIES",
        "MAX_BYTES",
        "POLICY",
        "MAX_MEMORY_MB",
        "SHARED_URL",
        "SHARED_READ_ONLY",
        "SHARED_KEY_FILE",
    ):
        monkeypatch.delenv(f"ZEXUS_BCACHE_{name}", raising=False)
    monkeypatch.setenv("ZEXUS_BCACHE_SHARED_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".zexus").mkdir()


@pytest.fixture
def pg(pg_url: str, sources: list[Path]) -> str:
    """A PostgreSQL cache holding the programs (file paths kept)."""
    with BytecodeCache(url=pg_url) as cache:
        for source in sources:
            cache.compile_file(source)
        cache.compile_file(sources[0])  # a hit
    return pg_url


def invoke(*args: str, input: str | None = None) -> Result:
    return invoke_cli(None, *args, input=input)  # the URL is among args (--cache ...)


def plain(url: str) -> str:
    """The same URL without the driver: postgresql://..."""
    return "postgresql://" + url.split("://", 1)[1]


def test_stats_ls_show(pg: str) -> None:
    for url in (pg, plain(pg)):
        stats = as_json(invoke("--cache", url, "stats", "--json"))
        assert stats["entries"] == 3 and stats["front_hits"] == 1 and stats["misses"] == 3
        assert stats["schema_revision"] == store.head_revision() and stats["file_bytes"] is None
        assert "***" in stats["location"] and "postgresql+psycopg://" in stats["location"]  # no password shown
    table = ok(invoke("--cache", pg, "stats")).stdout
    assert "hits (shared tier)" in table and "database file" in table
    listed = as_json(invoke("--cache", pg, "ls", "--json"))
    assert sorted(Path(e["source_path"]).name for e in listed) == sorted(PROGRAMS)
    csv = ok(invoke("--cache", pg, "ls", "--csv", "--sort", "size")).stdout
    assert csv.splitlines()[0].startswith("key,")
    key = listed[0]["key"]
    shown = as_json(invoke("--cache", pg, "show", key[:10], "--json"))
    assert shown["key"] == key and shown["code"][0]["instructions"]
    assert "Instructions:" in ok(invoke("--cache", pg, "show", key[:10])).stdout
    clean_error(invoke("--cache", pg, "show", "zzzz"), "no entry has a key starting with")


def test_evict_invalidate_clear_vacuum(pg: str, sources: list[Path]) -> None:
    dry = as_json(invoke("--cache", pg, "evict", "--max-entries", "2", "--dry-run", "--json"))
    assert dry["evicted"] == 1 and dry["dry_run"]
    assert as_json(invoke("--cache", pg, "evict", "--max-entries", "2", "--json"))["evicted"] == 1
    with Store(pg, read_only=True) as s:
        assert s.count() == 2 and s.counters()["evictions"] == 1
    remaining = [e for e in as_json(invoke("--cache", pg, "ls", "--json"))]
    gone = as_json(invoke("--cache", pg, "invalidate", "--file", remaining[0]["source_path"], "--json"))
    assert gone["removed"] == 1
    assert "removed 1 entry" in ok(invoke("--cache", pg, "clear", "--yes")).stdout
    assert ok(invoke("--cache", pg, "vacuum")).stdout.startswith("vacuumed postgresql+psycopg://")
    with Store(pg, read_only=True) as s:
        assert s.count() == 0
        assert s.query("SELECT COUNT(*), COALESCE(SUM(octet_length(payload)), 0) FROM entries")[1] == [(0, 0)]


def test_doctor_checks_payloads_and_repairs(pg: str) -> None:
    report = as_json(invoke("--cache", pg, "doctor", "--json"))
    assert report["ok"] and {c["check"] for c in report["checks"]} == {"schema", "integrity", "payloads"}
    engine = sa.create_engine(pg)
    with engine.begin() as conn:  # damage two payloads
        keys = conn.exec_driver_sql("SELECT key FROM entries ORDER BY key").scalars().all()
        conn.exec_driver_sql("UPDATE entries SET payload = 'garbage'::bytea WHERE key IN (%(a)s, %(b)s)", {"a": keys[0], "b": keys[1]})
    engine.dispose()
    clean_error(invoke("--cache", pg, "doctor"), "1 problem found")
    found = as_json(invoke("--cache", pg, "doctor", "--json", "--repair"))
    assert found["repairs"] == ["removed 2 entries with a damaged payload"] and found["problems"] == 1
    assert as_json(invoke("--cache", pg, "doctor", "--json"))["ok"]
    with Store(pg, read_only=True) as s:
        assert s.keys() == keys[2:]


def test_sql_reads_and_refuses_writes(pg: str) -> None:
    rows = as_json(
        invoke(
            "--cache",
            pg,
            "sql",
            "SELECT kind, COUNT(*) AS n FROM entries WHERE kind = :k GROUP BY kind",
            "-p",
            "k",
            "source",
            "--json",
        )
    )
    assert rows == [{"kind": "source", "n": 3}]
    assert "hit_rate" in ok(invoke("--cache", pg, "sql", "SELECT * FROM cache_stats", "--csv")).stdout
    clean_error(invoke("--cache", pg, "sql", "DELETE FROM entries"), "read-only query refused", "DELETE")
    clean_error(invoke("--cache", pg, "sql", "COMMIT; DELETE FROM entries"), "read-only query refused")
    clean_error(invoke("--cache", pg, "sql", "SELEC 1"), "syntax error")
    with Store(pg, read_only=True) as s:
        assert s.count() == 3


def test_db_commands(pg_url: str) -> None:
    history = as_json(invoke("--cache", pg_url, "db", "history", "--json"))
    head = store.head_revision()
    assert [r["revision"] for r in history] == [head, "0003_entry_totals", "0002_entry_signature", "0001_initial"]
    assert not any(r["current"] for r in history)  # an empty database
    assert f"upgraded base -> {head}" in ok(invoke("--cache", pg_url, "db", "upgrade")).stdout
    assert as_json(invoke("--cache", pg_url, "db", "current", "--json"))["status"] == "up to date"
    ok(invoke("--cache", pg_url, "db", "downgrade", "0001_initial", "--yes"))
    current = as_json(invoke("--cache", pg_url, "db", "current", "--json"))
    assert current["revision"] == "0001_initial" and "older" in current["status"]
    clean_error(invoke("--cache", pg_url, "stats"), "db upgrade")  # read commands never migrate
    ok(invoke("--cache", pg_url, "db", "upgrade"))
    assert as_json(invoke("--cache", pg_url, "stats", "--json"))["entries"] == 0


def test_config_shows_the_shared_settings_without_the_key(pg_url: str, tmp_path: Path) -> None:
    data = as_json(invoke("--cache", pg_url, "--shared", plain(pg_url), "--shared-read-only", "config", "--json"))
    settings = data["settings"]
    password = sa.make_url(pg_url).password
    assert password and password not in json.dumps(data)  # a database URL's password is never shown
    assert settings["path"]["value"] == pg_url.replace(password, "***") and settings["path"]["source"] == "command line"
    assert settings["shared_url"] == {
        "value": plain(pg_url).replace(password, "***"),
        "source": "command line",
        "origin": "--shared",
    }
    table = ok(invoke("--cache", pg_url, "--shared", pg_url, "config")).stdout
    assert password not in table and "***" in table
    assert settings["shared_read_only"]["value"] is True
    assert settings["shared_key"] == {
        "value": "(set, not shown)",
        "source": "environment",
        "origin": "ZEXUS_BCACHE_SHARED_KEY",
    }
    assert KEY not in ok(invoke("config")).stdout
    clean_error(invoke("--shared", "not a url", "config"), "shared_url must be a database URL")


def test_run_and_warm_on_postgresql(pg_url: str, sources: list[Path]) -> None:
    first = ok(invoke("--cache", pg_url, "run", "--timings", str(sources[0])))
    assert "fact(5) = 120" in first.stdout and "miss (compiled and stored)" in first.stderr
    second = ok(invoke("--cache", pg_url, "run", "--timings", str(sources[0])))
    assert second.stdout == first.stdout and "hit (store)" in second.stderr
    warmed = as_json(invoke("--cache", pg_url, "warm", "-j", "2", "--json", str(sources[0].parent)))
    assert (warmed["compiled"], warmed["cached"], warmed["failed"]) == (2, 1, 0)


def test_run_and_warm_with_a_shared_tier(pg_url: str, sources: list[Path], tmp_path: Path) -> None:
    a, b, c = (str(tmp_path / f"{n}.db") for n in "abc")
    first = ok(invoke("--cache", a, "--shared", pg_url, "run", "--timings", str(sources[0])))
    assert "miss (compiled and stored)" in first.stderr
    second = ok(invoke("--cache", b, "--shared", plain(pg_url), "run", "--timings", str(sources[0])))
    assert second.stdout == first.stdout and "hit (shared tier)" in second.stderr
    warmed = as_json(invoke("--cache", a, "--shared", pg_url, "warm", "-j", "2", "--json", str(sources[0].parent)))
    assert warmed["compiled"] == 2 and warmed["failed"] == 0
    with Store(pg_url, read_only=True) as server:
        keys = server.keys()
        assert len(keys) == 3 and all(verify(KEY.encode(), server.get(k)) for k in keys)  # type: ignore[arg-type]
    # A read-only client (a pull-request build): served from the server, writes nothing there.
    ro = as_json(
        invoke(
            "--cache", c, "--shared", pg_url, "--shared-read-only", "warm", "-j", "1", "--json", str(sources[0].parent)
        )
    )
    assert ro["cached"] == 3
    assert as_json(invoke("--cache", c, "stats", "--json"))["shared_hits"] == 3
    with Store(pg_url, read_only=True) as server:
        assert server.counters()["puts"] == 0 and len(server.keys()) == 3


def test_shared_errors_are_one_line(
    pg_url: str, sources: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZEXUS_BCACHE_SHARED_KEY")
    local = str(tmp_path / "a.db")
    # run: no key, no shared tier, one warning; the program still runs from the local cache.
    result = ok(invoke("--cache", local, "--shared", pg_url, "run", str(sources[0])))
    assert "fact(5) = 120" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "needs a key" in warnings[0]
    # warm asked for the tier explicitly: a clean error.
    clean_error(invoke("--cache", local, "--shared", pg_url, "warm", str(sources[0])), "needs a key")
    key_file = tmp_path / "missing.key"
    monkeypatch.setenv("ZEXUS_BCACHE_SHARED_KEY_FILE", str(key_file))
    clean_error(
        invoke("--cache", local, "--shared", pg_url, "warm", str(sources[0])), "cannot read the shared key file"
    )
    clean_error(invoke("--cache", "postgresql+nosuchdriver://u@h/db", "stats"))
