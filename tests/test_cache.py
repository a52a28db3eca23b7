"""BytecodeCache: the seed's API over the front layer and the SQLite store."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from bytecode_compare import assert_same

from zexus_bcache import pipeline
from zexus_bcache.cache import BytecodeCache
from zexus_bcache.errors import ConfigError, StoreError

with pipeline.quiet():
    from zexus import zexus_ast
    from zexus.vm.bytecode import BytecodeBuilder

PROGRAMS = [
    "let a = 1\nprint(a + 1)\n",
    "action sq(x) { return x * x }\nprint(sq(7))\n",
    "let xs = [1, 2, 3]\nfor each x in xs { print(x * 10) }\n",
    'let m = {"k": "v"}\nprint(m["k"])\n',
    "let n = 10\nwhile n > 0 { n = n - 3 }\nprint(n)\n",
]


def _compiled(i: int):
    program = pipeline.parse(PROGRAMS[i])
    return program, pipeline.compile_program(program)


@pytest.fixture()
def memory_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BytecodeCache:
    monkeypatch.chdir(tmp_path)
    return BytecodeCache(max_size=100, max_memory_mb=10)


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "bcache.db"


# ------------------------------------------------------------------ the seed's behaviour in memory


def test_the_seed_example_works_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache = BytecodeCache(max_size=1000, max_memory_mb=100, persistent=False, debug=False)
    node = zexus_ast.IntegerLiteral(42)
    bytecode = cache.get(node)
    assert bytecode is None
    builder = BytecodeBuilder()
    builder.emit_constant(42)
    bytecode = builder.build()
    cache.put(node, bytecode)
    assert cache.get(node) is bytecode
    stats = cache.get_stats()
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["hit_rate"] == 50.0
    assert cache.memory_usage_mb() > 0
    assert list(tmp_path.iterdir()) == [], "a memory-only cache must write no file"


def test_hit_rate_arithmetic(memory_cache: BytecodeCache) -> None:
    program, bytecode = _compiled(0)
    assert memory_cache.get(program) is None
    memory_cache.put(program, bytecode)
    for _ in range(3):
        assert memory_cache.get(program) is bytecode
    assert memory_cache.stats.hits == 3 and memory_cache.stats.misses == 1
    assert memory_cache.get_stats()["hit_rate"] == 75.0
    assert memory_cache.stats.front_hits == 3 and memory_cache.stats.store_hits == 0


def test_lru_order_under_max_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache = BytecodeCache(max_size=3)
    nodes = [_compiled(i) for i in range(4)]
    for program, bc in nodes[:3]:
        cache.put(program, bc)
    assert cache.get(nodes[0][0]) is nodes[0][1]  # 0 is now the most recent
    cache.put(*nodes[3])
    assert cache.get(nodes[1][0]) is None, "the least recently used entry goes first"
    assert all(cache.get(p) is b for p, b in (nodes[0], nodes[2], nodes[3]))
    assert len(cache) == 3 and cache.size() == 3
    assert cache.stats.evictions == 1


def test_eviction_under_max_memory_mb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    nodes = [_compiled(i) for i in range(5)]
    probe = BytecodeCache()
    probe.put(*nodes[0])
    one = probe.memory_usage()
    cache = BytecodeCache(max_size=100, max_memory_mb=2.5 * one / (1024 * 1024))
    for program, bc in nodes:
        cache.put(program, bc)
    assert cache.memory_usage() <= cache.max_memory_bytes
    assert 1 <= len(cache) < 5
    assert cache.get(nodes[-1][0]) is nodes[-1][1] and cache.get(nodes[0][0]) is None


def test_reset_stats_keeps_entries(memory_cache: BytecodeCache) -> None:
    program, bc = _compiled(1)
    memory_cache.put(program, bc)
    memory_cache.get(program)
    memory_cache.reset_stats()
    assert memory_cache.stats.hits == 0 and memory_cache.stats.misses == 0
    assert memory_cache.contains(program) and program in memory_cache
    assert memory_cache.get(program) is bc


def test_invalidate_clear_contains_info_keys_repr(memory_cache: BytecodeCache) -> None:
    (p0, b0), (p1, b1) = _compiled(0), _compiled(1)
    memory_cache.put(p0, b0)
    memory_cache.put(p1, b1)
    info = memory_cache.get_entry_info(p0)
    assert info is not None
    assert info["instruction_count"] == len(b0.instructions) and info["constant_count"] == len(b0.constants)
    assert info["size_bytes"] > 0 and info["key"] in memory_cache.get_all_keys()
    assert memory_cache.memory_usage() == memory_cache.stats.memory_bytes > 0
    assert memory_cache.memory_usage_mb() == memory_cache.memory_usage() / (1024 * 1024)
    assert "BytecodeCache(size=2/100" in repr(memory_cache)
    memory_cache.invalidate(p0)
    assert not memory_cache.contains(p0) and memory_cache.get_entry_info(p0) is None
    assert memory_cache.contains(p1)
    memory_cache.clear()
    assert len(memory_cache) == 0 and memory_cache.memory_usage() == 0 and memory_cache.get_all_keys() == []


def test_positions_do_not_change_the_key(memory_cache: BytecodeCache) -> None:
    program, bc = _compiled(1)
    moved = pipeline.parse("\n\n   " + PROGRAMS[1].replace("\n", "\n   "))
    memory_cache.put(program, bc)
    assert memory_cache.get(moved) is bc


@pytest.mark.parametrize("kwargs", [{"max_size": -1}, {"max_size": 1.5}, {"max_memory_mb": -2}, {"max_memory_mb": "x"}])
def test_bad_arguments_name_the_problem(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        BytecodeCache(**kwargs)


def test_path_and_url_together_are_refused(db: Path) -> None:
    with pytest.raises(ConfigError, match="either path or url"):
        BytecodeCache(path=db, url="sqlite:///x.db")


# ------------------------------------------------------------------ persistent


def test_persistent_get_falls_back_to_the_store(db: Path) -> None:
    program, bc = _compiled(2)
    with BytecodeCache(path=db) as first:
        first.put(program, bc)
        assert first.get(program) is bc
    with BytecodeCache(path=db) as second:
        back = second.get(program)
        assert back is not None and back is not bc
        assert_same(bc, back)
        assert second.get(program) is back, "a store hit is kept in the front layer"
        stats = second.stats
        assert stats.store_hits == 1 and stats.front_hits >= 2 and stats.misses == 0


def test_persistent_cache_dir_and_stats_survive_restarts(tmp_path: Path) -> None:
    program, bc = _compiled(0)
    with BytecodeCache(persistent=True, cache_dir=tmp_path / "c") as cache:
        assert cache.get(program) is None
        cache.put(program, bc)
        cache.get(program)
    assert (tmp_path / "c" / "bcache.db").exists()
    with BytecodeCache(persistent=True, cache_dir=tmp_path / "c") as again:
        stats = again.get_stats()
        assert stats["misses"] == 1 and stats["hits"] == 1 and stats["total_entries"] == 1
        again.reset_stats()
        assert again.get_stats()["hits"] == 0 and len(again) == 1


def test_skip_disk_keeps_the_entry_in_memory_only(db: Path) -> None:
    program, bc = _compiled(3)
    with BytecodeCache(path=db) as cache:
        cache.put(program, bc, skip_disk=True)
        assert cache.get(program) is bc
        assert len(cache) == 0, "nothing reached the store"


def test_invalidate_and_clear_reach_the_store(db: Path) -> None:
    (p0, b0), (p1, b1) = _compiled(0), _compiled(1)
    with BytecodeCache(path=db) as cache:
        cache.put(p0, b0)
        cache.put(p1, b1)
        cache.invalidate(p0)
    with BytecodeCache(path=db) as cache:
        assert cache.get(p0) is None and cache.get(p1) is not None
        info = cache.get_entry_info(p1)
        assert info is not None and info["in_store"] and info["kind"] == "ast"
        cache.clear()
    with BytecodeCache(path=db) as cache:
        assert len(cache) == 0 and cache.get(p1) is None


CHILD = textwrap.dedent(
    """
    import sys
    from zexus_bcache import pipeline
    from zexus_bcache.cache import BytecodeCache
    source = open(sys.argv[2]).read()
    program = pipeline.parse(source)
    with BytecodeCache(path=sys.argv[1]) as cache:
        if sys.argv[3] == "put":
            cache.put(program, pipeline.compile_program(program))
        else:
            bytecode = cache.get(program)
            assert bytecode is not None, "expected a hit from the other process"
            pipeline.run_bytecode(bytecode)
    """
)


def test_round_trip_across_two_processes(db: Path, tmp_path: Path) -> None:
    source = tmp_path / "prog.zx"
    source.write_text(PROGRAMS[1] + PROGRAMS[2], encoding="utf-8")
    run = lambda mode: subprocess.run(  # noqa: E731
        [sys.executable, "-c", CHILD, str(db), str(source), mode], capture_output=True, text=True, timeout=120
    )
    assert run("put").returncode == 0
    got = run("get")
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.split() == ["49", "10", "20", "30"]
    with BytecodeCache(path=db) as cache:
        stats = cache.get_stats()
    assert stats["store_hits"] == 1 and stats["puts"] == 1, "stats are summed over both processes"


# ------------------------------------------------------------------ zexus 2.0's file API


def test_file_api_detects_changed_content(tmp_path: Path, db: Path) -> None:
    src = tmp_path / "m.zx"
    src.write_text(PROGRAMS[0], encoding="utf-8")
    bc = pipeline.compile_source(PROGRAMS[0])
    with BytecodeCache(path=db) as cache:
        assert cache.get_by_file(src) is None and not cache.is_file_cached(src)
        cache.put_by_file(src, [bc])
        assert cache.is_file_cached(src)
        assert cache.get_by_file(str(src)) == [bc]
    with BytecodeCache(path=db) as cache:
        back = cache.get_by_file(src)
        assert back is not None and len(back) == 1
        assert_same(bc, back[0])
        src.write_text(PROGRAMS[0] + "print(2)\n", encoding="utf-8")
        assert cache.get_by_file(src) is None and not cache.is_file_cached(src)
        src.write_text(PROGRAMS[0], encoding="utf-8")
        assert cache.is_file_cached(src)
        cache.invalidate_file(src)
        assert not cache.is_file_cached(src) and cache.get_by_file(src) is None
        assert cache.get_by_file(tmp_path / "missing.zx") is None


def test_file_api_in_memory(memory_cache: BytecodeCache, tmp_path: Path) -> None:
    src = tmp_path / "m.zx"
    src.write_text(PROGRAMS[4], encoding="utf-8")
    bc = pipeline.compile_source(PROGRAMS[4])
    memory_cache.put_by_file(src, [bc])
    assert memory_cache.get_by_file(src) == [bc]
    memory_cache.invalidate_file(src)
    assert memory_cache.get_by_file(src) is None


# ------------------------------------------------------------------ failures never break the caller


def test_garbage_database_degrades_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    program, bc = _compiled(0)
    with caplog.at_level(logging.WARNING, logger="zexus_bcache"):
        cache = BytecodeCache(path=bad)
        cache.put(program, bc)
        assert cache.get(program) is bc
        assert cache.get(_compiled(1)[0]) is None
    assert cache.store is None and cache.store_error and "bad.db" in cache.store_error
    warnings = [r for r in caplog.records if r.name == "zexus_bcache"]
    assert len(warnings) == 1 and "compiling as if uncached" in warnings[0].getMessage()
    assert bad.read_bytes() == b"this is not a database" * 100
    with pytest.raises(StoreError, match="bad.db"):
        BytecodeCache(path=bad, strict=True)


def test_store_failing_mid_run_becomes_misses(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    program, bc = _compiled(0)
    cache = BytecodeCache(path=db, max_size=0)  # no front layer: every get reaches the store
    cache.put(program, bc)
    cache.store.close()  # the store now fails on every call
    with caplog.at_level(logging.WARNING, logger="zexus_bcache"):
        assert cache.get(program) is None
        assert cache.get(program) is None
        cache.put(program, bc)
        cache.invalidate(program)
    assert cache.stats.misses >= 2
    kinds = {r.getMessage().split(" failed")[0] for r in caplog.records}
    assert len(caplog.records) == len(kinds), "one warning per kind of failure, not one per call"


def test_a_corrupt_payload_is_a_miss_and_is_deleted(db: Path) -> None:
    import sqlite3

    program, bc = _compiled(0)
    with BytecodeCache(path=db) as cache:
        cache.put(program, bc)
        key = cache.key_for(program)
    with sqlite3.connect(db) as conn:
        query = "SELECT payload FROM entries WHERE key = ?"
        payload = bytearray(conn.execute(query, (key,)).fetchone()[0])
        payload[-3] ^= 0xFF
        update = "UPDATE entries SET payload = ? WHERE key = ?"
        conn.execute(update, (bytes(payload), key))
    conn.close()
    with BytecodeCache(path=db) as cache:
        assert cache.get(program) is None
        assert cache.stats.corrupt == 1
        assert not cache.contains(program)
