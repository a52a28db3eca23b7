"""zexus_bcache.maintenance: stale keys by the cache's own content hash, revisions, doctor and repair."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from zexus_bcache import maintenance, store
from zexus_bcache.cache import BytecodeCache
from zexus_bcache.errors import StoreError
from zexus_bcache.store import Store

PROGRAM = "let a = 6 * 7\nprint(a)\n"


@pytest.fixture
def cache_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.delenv("ZEXUS_BCACHE_ALLOW_WORLD_WRITABLE", raising=False)
    source = tmp_path / "prog.zx"
    source.write_text(PROGRAM)
    path = tmp_path / "c" / "bcache.db"
    with BytecodeCache(path=path) as cache:
        cache.compile_file(source)
    return path, source


def test_stale_keys_use_the_hash_the_cache_stored(cache_db: tuple[Path, Path]) -> None:
    path, source = cache_db
    with Store(path, read_only=True) as s:
        (entry,) = s.entries()
        assert entry["source_hash"] in maintenance.content_hashes(source)  # type: ignore[operator]
        assert maintenance.stale_keys(s) == []
    source.write_text(PROGRAM.replace("\n", "\r\n"))  # same text with universal newlines: not stale
    with Store(path, read_only=True) as s:
        assert maintenance.stale_keys(s) == []
    source.write_text(PROGRAM + "print(1)\n")
    with Store(path, read_only=True) as s:
        assert maintenance.stale_keys(s) == [entry["key"]]
    source.unlink()
    with Store(path, read_only=True) as s:
        assert maintenance.stale_keys(s) == [entry["key"]]


def test_revision_classification(cache_db: tuple[Path, Path]) -> None:
    path, _ = cache_db
    head = store.head_revision()
    assert maintenance.revision_status(path) == maintenance.RevisionStatus(head, head, "current")
    assert maintenance.classify_revision(None).state == "empty"
    assert maintenance.classify_revision("0001_initial").state == "older"
    assert maintenance.classify_revision("9999_future").message.startswith("newer")


def test_diagnose_reports_progress_and_a_healthy_cache(cache_db: tuple[Path, Path]) -> None:
    path, _ = cache_db
    calls: list[tuple[int, int | None]] = []
    found = maintenance.diagnose(path, lambda done, total: calls.append((done, total)))
    assert found.problems == 0 and [c["check"] for c in found.checks] == ["schema", "integrity", "payloads"]
    assert calls[0] == (0, 1) and calls[-1] == (1, 1)


def test_repair_never_moves_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / ".zexus"
    directory.mkdir()
    (directory / "bcache.toml").write_text("max_entries = 5\n")
    assert "is a directory" in (maintenance.database_problem(directory) or "")
    found = maintenance.diagnose(directory)
    assert found.broken
    with pytest.raises(StoreError, match="not a database file"):
        maintenance.repair(directory, found)
    assert directory.is_dir() and (directory / "bcache.toml").read_text() == "max_entries = 5\n"


def test_repair_says_chmod_for_a_healthy_world_writable_cache(cache_db: tuple[Path, Path]) -> None:
    path, _ = cache_db
    os.chmod(path, 0o666)
    found = maintenance.diagnose(path)
    assert found.untrusted and not found.broken and found.problems == 1
    assert [c["check"] for c in found.checks if not c["ok"]] == ["trust"]
    assert {c["check"] for c in found.checks if c["ok"]} == {"schema", "integrity", "payloads"}
    done = maintenance.repair(path, found)
    assert len(done) == 1 and "chmod go-w" in done[0] and done[0].startswith("not repaired")
    assert path.exists() and not list(path.parent.glob("*.broken-*"))
    for file in path.parent.glob(path.name + "*"):  # what the hint's `chmod go-w DIR FILE*` does
        os.chmod(file, 0o600)
    with Store(path, read_only=True) as s:
        assert s.count() == 1


def test_repair_removes_damaged_payloads(cache_db: tuple[Path, Path]) -> None:
    path, _ = cache_db
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE entries SET payload = x'00'")
    conn.close()
    with Store(path, read_only=True) as store:
        keys = store.keys()
    found = maintenance.diagnose(path)
    assert list(found.bad_payloads) == keys and len(keys) == 1 and not found.broken
    assert maintenance.repair(path, found) == ["removed 1 entry with a damaged payload"]
    assert maintenance.diagnose(path).problems == 0


def test_driver_errors_become_one_sentence() -> None:
    orig = sqlite3.OperationalError("attempt to write a readonly database")
    with pytest.raises(StoreError) as caught, maintenance._clean_database_errors("x.db", "upgrade"):
        raise sa.exc.OperationalError("INSERT ...", {}, orig)
    assert (
        str(caught.value)
        == "x.db: cannot upgrade: the cache is read-only here (its file or directory is not writable by you)"
    )
    assert "sqlalche.me" not in str(caught.value) and "\n" not in str(caught.value)


def test_plural_and_usage() -> None:
    assert [maintenance.plural(n, "entry", "entries") for n in (0, 1, 2)] == ["0 entries", "1 entry", "2 entries"]
    assert maintenance.usage(50, 10, {"max_entries": 200, "max_bytes": 0}) == {
        "entries_used_percent": 25.0,
        "bytes_used_percent": None,
    }
