"""Commands that change a cache: evict, invalidate, clear, vacuum, doctor."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import (
    PROGRAMS,
    NoneType,
    as_json,
    assert_shape,
    clean_error,
    invoke,
    key_of,
    ok,
    stored_keys,
)

from zexus_bcache import keys
from zexus_bcache.store import Store

pytestmark = pytest.mark.usefixtures("cli_project")


# -- evict, invalidate, clear, vacuum ------------------------------------------------------------------


EVICT_SHAPE = {
    "dry_run": bool,
    "evicted": int,
    "bytes": int,
    "max_entries": int,
    "max_bytes": int,
    "policy": str,
    "older_than": (float, NoneType),
    "entries": list,
}


def test_evict_dry_run_then_for_real(db: Path) -> None:
    planned = as_json(invoke(db, "evict", "--max-entries", "1", "--dry-run", "--json"))
    assert_shape(planned, EVICT_SHAPE)
    assert planned["dry_run"] is True and planned["evicted"] == 3 and planned["max_entries"] == 1
    for row in planned["entries"]:
        assert_shape(
            row,
            {
                "key": str,
                "kind": str,
                "source_path": (str, NoneType),
                "payload_size": int,
                "last_access": float,
                "access_count": int,
                "reason": str,
            },
        )
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
    assert [c["check"] for c in data["checks"]] == ["schema", "integrity", "payloads"]
    for check in data["checks"]:
        assert_shape(check, {"check": str, "ok": bool, "detail": str})
    n = as_json(invoke(db, "sql", "SELECT count(*) AS n FROM entries", "--json"))[0]["n"]
    assert f"payloads    ok       {n} checked" in ok(invoke(db, "doctor")).stdout


def test_doctor_finds_and_repairs_damaged_payloads(db: Path) -> None:
    before = stored_keys(db)
    with sqlite3.connect(db) as conn:
        damaged, flipped = [row[0] for row in conn.execute("SELECT key FROM entries ORDER BY key LIMIT 2")]
        conn.execute("UPDATE entries SET payload = x'5a584243' WHERE key = ?", (damaged,))
        # SQLite's || makes TEXT of it (not UTF-8): doctor reads it as bytes and reports one damaged payload.
        conn.execute("UPDATE entries SET payload = substr(payload, 1, length(payload) - 1) || x'00' WHERE key = ?", (flipped,))
    conn.close()
    result = invoke(db, "doctor", "--json")
    clean_error(result, "1 problem found", "--repair")
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["problems"] == 1
    failed = {c["check"]: c["detail"] for c in data["checks"] if not c["ok"]}
    assert "2 damaged" in failed["payloads"] and "checksum mismatch" in failed["payloads"]
    repaired = as_json(invoke(db, "doctor", "--repair", "--json"))
    assert repaired["ok"] is True and repaired["repairs"] == ["removed 2 entries with a damaged payload"]
    assert stored_keys(db) == sorted(set(before) - {damaged, flipped})
    assert as_json(invoke(db, "doctor", "--json"))["problems"] == 0


def test_doctor_moves_a_garbage_database_aside(tmp_path: Path) -> None:
    garbage = tmp_path / "bcache.db"
    garbage.write_bytes(b"this is not a database" * 200)
    clean_error(invoke(garbage, "doctor"), "1 problem found")
    data = as_json(invoke(garbage, "doctor", "--repair", "--json"))
    assert data["checks"][0]["check"] == "open" and "not a SQLite database" in data["checks"][0]["detail"]
    assert "moved the broken database to" in data["repairs"][0]
    moved = list(tmp_path.glob("bcache.db.broken-*"))
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"this is not a database")
    assert as_json(invoke(garbage, "stats", "--json"))["entries"] == 0


def test_clear_without_a_terminal_and_it_frees_space(db: Path) -> None:
    refused = invoke(db, "clear")  # no input at all: nobody to ask
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.stderr.strip().splitlines()[-1] == "Error: no answer (no terminal to ask on): pass --yes to go ahead"
    assert len(stored_keys(db)) == 4
    before = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    result = ok(invoke(db, "clear", "--yes"))
    after = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    assert "removed 4 entries; database file" in result.stdout and after < before


def test_singular_wording(db: Path) -> None:
    assert "evicted 1 entry (" in ok(invoke(db, "evict", "--max-entries", "3")).stderr
    key = stored_keys(db)[0]
    assert "removed 1 entry (key: 1)" in ok(invoke(db, "invalidate", "--key", key[:12])).stdout


def test_doctor_says_chmod_for_a_world_writable_cache(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv("ZEXUS_BCACHE_ALLOW_WORLD_WRITABLE", raising=False)
    os.chmod(db, 0o666)
    result = invoke(db, "doctor", "--repair")
    clean_error(result, "1 problem found")
    assert "chmod go-w" in result.stdout and "not repaired" in result.stdout
    assert db.exists() and not list(db.parent.glob("*.broken-*"))
    for file in db.parent.glob(db.name + "*"):
        os.chmod(file, 0o600)
    assert len(stored_keys(db)) == 4


def test_doctor_shows_no_progress_without_a_terminal(db: Path) -> None:
    result = ok(invoke(db, "doctor"))
    assert result.stderr == ""
