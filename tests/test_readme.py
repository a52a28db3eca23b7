"""The README's promises: its SQL works from the sqlite3 shell, its test command is what CI runs."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from zx_programs import corpus_programs

from zexus_bcache import BytecodeCache

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
QUERIES = re.findall(r"```sql\n(.*?)```", README, flags=re.S)


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("readme") / "bcache.db"
    with BytecodeCache(path=db) as cache:
        for program in corpus_programs()[:6]:
            cache.compile_file(program)
            cache.compile_file(program)
    return db


def test_readme_has_queries() -> None:
    assert len(QUERIES) >= 5


@pytest.mark.parametrize("query", QUERIES, ids=[q.split(" FROM ")[1].split()[0] for q in QUERIES])
def test_readme_query_works_in_the_sqlite3_shell(query: str, populated: Path) -> None:
    with sqlite3.connect(f"file:{populated}?mode=ro", uri=True) as conn:
        rows = conn.execute(query).fetchall()
    assert rows, "every documented query returns something on a used cache"
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 shell is not installed here; the query ran through Python's sqlite3")
    done = subprocess.run([shell, "-readonly", str(populated), query], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert len(done.stdout.strip().splitlines()) == len(rows)


def test_stats_view_matches_the_api(populated: Path) -> None:
    with sqlite3.connect(f"file:{populated}?mode=ro", uri=True) as conn:
        hits, misses, rate, entries = conn.execute("SELECT hits, misses, hit_rate, entries FROM cache_stats").fetchone()
    with BytecodeCache(path=populated, read_only=True) as cache:
        stats = cache.get_stats()
    assert (hits, misses, entries) == (stats["hits"], stats["misses"], stats["total_entries"])
    assert rate == stats["hit_rate"] == 50.0


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
