"""One flipped bit in the database file never runs another program (issue 16 item 2).

A real cache of distinct real programs; each trial flips one random bit of the database file
(a third anywhere, the rest in the cells of the key index and the entries table, where a flip
can lead a key to another entry's valid payload), then looks up every key in a fresh cache.
A hit must be exactly the bytecode put under that key; a miss or an error is fine.
"""

from __future__ import annotations

import logging
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from zexus_bcache import BytecodeCache, codec, pipeline

TRIALS = 360
PROGRAMS = 40


def _cell_ranges(db: Path) -> list[tuple[int, int]]:
    """(start, end) file offsets of the cell content of the key index and entries pages."""
    conn = sqlite3.connect(db)
    try:
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        pages = [
            row[0]
            for row in conn.execute(
                "SELECT pageno FROM dbstat WHERE name IN ('sqlite_autoindex_entries_1', 'entries') AND pagetype = 'leaf'"
            )
        ]
    finally:
        conn.close()
    data = db.read_bytes()
    ranges = []
    for page in pages:
        base = (page - 1) * page_size
        header = base + (100 if page == 1 else 0)
        content = int.from_bytes(data[header + 5 : header + 7], "big") or 65536
        ranges.append((base + content, base + page_size))
    assert ranges, "the test needs the index pages"
    return ranges


def test_one_flipped_bit_never_serves_another_program(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "cache" / "bcache.db"
    expected: dict[str, bytes] = {}
    cache = BytecodeCache(path=db)
    for i in range(PROGRAMS):
        source = f'let n = {i}\nlet s = "program {i}"\nprint(s + " " + (n * {i + 3}))\n'
        key = f"{i:02d}" + "k" * 30
        bytecode = pipeline.compile_source(source)
        expected[key] = codec.encode(bytecode)
        cache.store_value(key, bytecode, kind="source")
    cache.close()
    assert not (db.parent / "bcache.db-wal").exists(), "closing checkpoints everything into the file"
    pristine = db.read_bytes()
    targets = _cell_ranges(db)
    rng = random.Random(16)
    wrong, hits, misses, errors = 0, 0, 0, 0
    caplog.set_level(logging.ERROR, logger="zexus_bcache")  # thousands of expected warnings
    for trial in range(TRIALS):
        for side in db.parent.glob("bcache.db-*"):
            side.unlink()
        damaged = bytearray(pristine)
        if trial % 3 == 0:
            offset = rng.randrange(len(damaged))
        else:
            start, end = rng.choice(targets)
            offset = rng.randrange(start, end)
        damaged[offset] ^= 1 << rng.randrange(8)
        db.write_bytes(bytes(damaged))
        try:
            trial_cache = BytecodeCache(path=db)
        except Exception:  # a damaged header: refusing to open is fine
            errors += 1
            continue
        try:
            for key, payload in expected.items():
                try:
                    value = trial_cache.lookup(key)
                except Exception:
                    errors += 1
                    continue
                if value is None:
                    misses += 1
                    continue
                hits += 1
                if codec.encode(value) != payload:
                    wrong += 1
        finally:
            trial_cache.close()
    shutil.rmtree(db.parent)
    print(f"bit flips: {TRIALS} trials, {hits} hits, {misses} misses, {errors} errors, {wrong} wrong programs")
    assert hits > TRIALS * PROGRAMS // 2, "most flips miss nothing: the lookups really ran"
    assert wrong == 0, f"{wrong} lookups returned another program's bytecode"
