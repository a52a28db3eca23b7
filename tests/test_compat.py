"""zexus_bcache.compat against zexus 2.0's own zexus.vm.cache, side by side on the same calls.

zexus's installed cache is the reference: each test runs one script of calls on both caches and
compares what they return. Where docs/COMPAT.md records a deliberate difference (a zexus bug, our
measured memory), the test asserts that difference exactly instead.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bytecode_compare import assert_same

from zexus_bcache import cache as ours_module
from zexus_bcache import compat, integration, pipeline
from zexus_bcache.patterns import pattern_key

with pipeline.quiet():
    import zexus.vm.cache as zexus_module
    from zexus import zexus_ast
    from zexus.evaluator import bytecode_compiler
    from zexus.vm.bytecode import BytecodeBuilder

ZexusCache = zexus_module.BytecodeCache
Ours = compat.BytecodeCache
BOTH = pytest.mark.parametrize("cls", [ZexusCache, Ours], ids=["zexus", "ours"])

SQUARE = "action sq(x) { return x * x }\nprint(sq(7))\n"
CUBE = "action cube(y) { return y * y }\nprint(cube(9))\n"  # the same shape as SQUARE
SUM = "let a = 1\nprint(a + 1)\n"


def compiled(source: str) -> tuple[Any, Any]:
    program = pipeline.parse(source)
    return program, pipeline.compile_program(program)


def literal(n: int) -> tuple[Any, Any]:
    """The seed's own example: IntegerLiteral(n) and a one-constant bytecode."""
    builder = BytecodeBuilder()
    builder.emit_constant(n)
    return zexus_ast.IntegerLiteral(n), builder.build()


def side_by_side(script: Callable[[type], Any]) -> tuple[Any, Any]:
    """Run the same script against zexus's cache class and ours; return (zexus's result, ours)."""
    return script(ZexusCache), script(Ours)


def access_count(cache: Any, node: Any) -> int:
    info = cache.get_entry_info(node)
    assert info is not None
    return int(info["access_count"])


def close(cache: Any) -> None:
    if isinstance(cache, ours_module.BytecodeCache):
        cache.close()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a memory-only cache must write nothing; if it did, it lands here


# ------------------------------------------------------------------ names and signatures


def test_every_public_name_of_zexus_cache_module_is_there() -> None:
    names = [n for n in vars(zexus_module) if not n.startswith("_") and n not in ("annotations",)]
    module_own = {"CACHE_VERSION", "FileMetadata", "CacheStats", "CacheEntry", "BytecodeCache", "Bytecode"}
    assert module_own <= set(names)
    for name in module_own:
        assert getattr(compat, name) is not None, name
    assert compat.CACHE_VERSION == zexus_module.CACHE_VERSION
    assert compat.Bytecode is zexus_module.Bytecode
    for cls in (compat.FileMetadata, compat.CacheEntry):
        theirs = getattr(zexus_module, cls.__name__)
        assert [f.name for f in dataclasses.fields(cls)] == [f.name for f in dataclasses.fields(theirs)]
    theirs_stats = {f.name for f in dataclasses.fields(zexus_module.CacheStats)}
    assert theirs_stats <= {f.name for f in dataclasses.fields(compat.CacheStats)}


@pytest.mark.parametrize("cls", [Ours, ours_module.BytecodeCache], ids=["compat", "main"])
def test_every_method_of_zexus_cache_is_there_with_its_parameters(cls: type) -> None:
    methods = {n for n, v in vars(ZexusCache).items() if callable(v) and (not n.startswith("_") or n == "_hash_ast")}
    methods |= {"__len__", "__contains__", "__repr__", "__bool__"}
    for name in sorted(methods):
        theirs = list(inspect.signature(getattr(ZexusCache, name)).parameters)
        mine = list(inspect.signature(getattr(cls, name)).parameters)
        assert mine[: len(theirs)] == theirs, f"{name}: {mine} does not start with {theirs}"


def test_cache_entry_and_file_metadata_behave_alike() -> None:
    def script(module: Any) -> list[Any]:
        entry = module.CacheEntry(bytecode="bc", timestamp=0.0, size_bytes=7)
        before = entry.access_count
        entry.update_access()
        meta = module.FileMetadata(file_path="/a.zx", mtime=1.5, size=3, content_hash="h")
        return [before, entry.access_count, entry.timestamp > 0, entry.size_bytes, dataclasses.astuple(meta)]

    assert script(zexus_module) == script(compat)


# ------------------------------------------------------------------ the seed's documented examples


def test_seed_example_1_basic_usage() -> None:
    def example(cls: type) -> list[Any]:
        cache = cls(max_size=1000, max_memory_mb=100, persistent=False, debug=False)
        node = zexus_ast.IntegerLiteral(42)
        bytecode = first = cache.get(node)
        if bytecode is None:
            builder = BytecodeBuilder()
            builder.emit_constant(42)
            bytecode = builder.build()
            cache.put(node, bytecode)
        cached = cache.get(node)
        stats = cache.get_stats()
        return [first, cached is bytecode, f"Hit rate: {stats['hit_rate']:.1f}%", cache.memory_usage_mb() > 0]

    theirs, ours = side_by_side(example)
    assert ours == theirs == [None, True, "Hit rate: 50.0%", True]
    assert list(Path.cwd().iterdir()) == []


def test_seed_example_2_compiler_integration() -> None:
    def example(cls: type) -> list[Any]:
        integration.install(cls(max_size=1000, compiler="evaluator") if cls is Ours else cls(max_size=1000))
        try:
            compiler = bytecode_compiler.EvaluatorBytecodeCompiler(use_cache=True, cache_size=1000)
            node = zexus_ast.IntegerLiteral(42)
            bytecode1 = compiler.compile(node)
            bytecode2 = compiler.compile(node)
            stats = compiler.get_cache_stats()
            seen = [bytecode2 is bytecode1, stats["hits"], stats["misses"], stats["hit_rate"], compiler.cache_size()]
            compiler.clear_cache()
            seen.append(compiler.cache_size())
            compiler.compile(node)
            compiler.invalidate_cache(node)
            seen.append(compiler.cache_size())
            compiler.reset_cache_stats()
            seen.append(compiler.get_cache_stats()["hits"])
            return [seen, bytecode1]
        finally:
            integration.uninstall()

    (theirs, their_bc), (ours, our_bc) = side_by_side(example)
    assert ours == theirs == [True, 1, 1, 50.0, 1, 0, 0, 0]
    assert_same(their_bc.constants, our_bc.constants)


def test_seed_example_3_persistent_cache(tmp_path: Path) -> None:
    program, bc = compiled(SUM)

    def example(cls: type) -> tuple[list[Any], Any]:
        cache_dir = str(tmp_path / cls.__module__)
        node, bytecode = literal(42)
        cache = cls(max_size=500, persistent=True, cache_dir=cache_dir)
        cache.put(node, bytecode)
        cache.put(program, bc)
        close(cache)
        new_cache = cls(max_size=500, persistent=True, cache_dir=cache_dir)
        cached, again = new_cache.get(node), new_cache.get(program)
        stats = new_cache.get_stats()
        close(new_cache)
        return [cached.constants, stats["hits"], stats["misses"]], again

    (theirs, _), (ours, our_again) = side_by_side(example)
    assert theirs[0] == ours[0] == [42]
    assert_same(bc.constants, our_again.constants)  # ours is lossless; zexus's .zxc round trip is not checked
    # zexus counts a disk hit as a miss (its bug); ours counts the two store hits as hits.
    assert theirs[1:] == [0, 2] and ours[1:] == [2, 0]


# ------------------------------------------------------------------ every method, memory only


def exercise(cls: type, src: Path) -> dict[str, Any]:
    """Every method of zexus's API, in one script; returns what a caller would observe."""
    (p0, b0), (p1, b1), (sq, bsq) = literal(1), literal(2), compiled(SQUARE)
    cube, total = pipeline.parse(CUBE), pipeline.parse(SUM)
    cache = cls(max_size=10, debug=False)
    seen: dict[str, Any] = {"empty": (cache.size(), len(cache), cache.memory_usage(), bool(cache), cache.get(p0))}
    cache.put(p0, b0)
    cache.put(p1, b1)
    seen["after put"] = (cache.contains(p0), p1 in cache, cache.get(p0) is b0, len(cache.get_all_keys()))
    info = cache.get_entry_info(p0)
    seen["entry info"] = (info["access_count"], info["instruction_count"], info["constant_count"],
                          info["size_bytes"] > 0, info["timestamp"] <= time.time())
    seen["hash"] = (cache._hash_ast(literal(1)[0]) == cache._hash_ast(p0), cache._hash_ast(p0) == cache._hash_ast(p1))
    cache.invalidate(p1)
    seen["invalidate"] = (cache.contains(p1), cache.get(p1), cache.size())
    seen["memory"] = (cache.memory_usage() == cache.stats.memory_bytes > 0,
                      cache.memory_usage_mb() == cache.memory_usage() / (1024 * 1024))
    seen["repr"] = all(s in repr(cache) for s in ("BytecodeCache(", "size=", "memory=", "hit_rate="))
    cache.put_by_pattern(sq, bsq)
    seen["pattern"] = (cache.get_by_pattern(cube) is bsq, cache.get_by_pattern(total), cache.stats.pattern_hits,
                       cache.get_stats()["pattern_memory_bytes"] > 0)
    live = cache.stats
    before = live.hits
    cache.get(p0)
    seen["live stats"] = (live.hits - before, live.misses)
    stats = cache.get_stats()
    seen["stats"] = {k: stats[k] for k in ("hits", "misses", "hit_rate", "evictions", "total_entries", "pattern_hits")}
    seen["file"] = file_api(cache, src)
    cache.stats.misses = 0
    seen["set a counter"] = cache.stats.misses
    cache.stats = type(cache.stats)() if cls is ZexusCache else compat.CacheStats()
    seen["assign stats"] = (cache.get_stats()["hits"], cache.get_stats()["file_hits"])
    cache.get(p0)
    cache.reset_stats()
    seen["reset"] = (cache.stats.hits, cache.get_stats()["total_entries"], cache.get(p0) is b0)
    cache.clear()
    seen["clear"] = (cache.size(), cache.memory_usage(), cache.get_stats()["hits"], cache.get_stats()["misses"],
                     cache.get_by_pattern(cube), cache.get_stats()["pattern_memory_bytes"])
    return seen


def file_api(cache: Any, src: Path) -> dict[str, Any]:
    (_, b0), (_, b1) = compiled(SUM), compiled(SQUARE)
    src.write_text(SUM)
    seen: dict[str, Any] = {"miss": (cache.get_by_file(str(src)), cache.is_file_cached(str(src)),
                                     cache.get_file_cache_info(str(src)))}
    cache.put_by_file(str(src), [b0, b1])
    got = cache.get_by_file(str(src))
    info = cache.get_file_cache_info(str(src))
    seen["hit"] = ([a is b for a, b in zip(got, [b0, b1], strict=True)], cache.is_file_cached(str(src)))
    seen["info"] = (sorted(info), info["file_path"] == str(src.resolve()), info["mtime"] == src.stat().st_mtime,
                    info["bytecode_count"], isinstance(info["content_hash"], str), info["cached_at"] <= time.time())
    src.write_text(SUM + "print(3)\n")
    seen["edited"] = (cache.get_by_file(str(src)), cache.is_file_cached(str(src)))
    cache.invalidate_file(str(src))
    seen["invalidated"] = cache.get_file_cache_info(str(src))
    stats = cache.get_stats()
    seen["stats"] = (stats["file_hits"], stats["file_misses"])
    seen["lookups"] = stats["hits"] + stats["misses"]
    return seen


def test_every_method_gives_zexus_results(tmp_path: Path) -> None:
    theirs, ours = side_by_side(lambda cls: exercise(cls, tmp_path / f"{cls.__module__}.zx"))
    # Ours counts a file lookup as a lookup too (hits/misses by tier), zexus only as file_hits/misses.
    their_lookups, our_lookups = theirs["file"].pop("lookups"), ours["file"].pop("lookups")
    assert our_lookups - their_lookups == sum(ours["file"]["stats"]) == 3
    assert ours == theirs
    assert theirs["entry info"][0] == 2, "the put counts as the first access, the get as the second"
    assert theirs["live stats"] == (1, 2) and theirs["file"]["info"][3] == 2


def test_stored_as_zexus_stores_an_entry_larger_than_the_memory_limit(caplog: pytest.LogCaptureFixture) -> None:
    programs = [compiled(s) for s in (SQUARE, SUM)]

    def script(cls: type) -> list[Any]:
        cache = cls(max_size=10, max_memory_mb=0.0001)  # 104 bytes: smaller than any real bytecode
        seen = []
        for program, bc in programs:
            cache.put(program, bc)
            seen.append((cache.get(program) is bc, cache.size(), cache.get_stats()["evictions"]))
        return [seen, cache.get(programs[0][0]), cache.memory_usage() > cache.max_memory_bytes]

    with caplog.at_level(logging.WARNING, logger="zexus_bcache"):
        theirs, ours = side_by_side(script)
    assert ours == theirs == [[(True, 1, 0), (True, 1, 1)], None, True]
    assert [r.getMessage() for r in caplog.records if "exceeds the in-memory limit" in r.getMessage()]


def test_zexus_serves_another_programs_bytecode_past_depth_50_ours_does_not() -> None:
    def nested(x: int) -> str:
        return "let a = " + "(1 + " * 60 + str(x) + ")" * 60 + "\nprint(a)\n"

    (p1, b1), (p2, _) = compiled(nested(1)), compiled(nested(2))

    def script(cls: type) -> Any:
        cache = cls()
        cache.put(p1, b1)
        return cache.get(p2)

    theirs, ours = side_by_side(script)
    assert theirs is b1, "zexus 2.0's AST hash stops at depth 50: the other program hits"
    assert ours is None


def test_the_same_program_moved_down_hits_ours_not_zexus() -> None:
    (program, bc), moved = compiled(SQUARE), pipeline.parse("\n\n" + SQUARE)

    def script(cls: type) -> Any:
        cache = cls()
        cache.put(program, bc)
        return cache.get(moved)

    theirs, ours = side_by_side(script)
    assert theirs is None, "zexus 2.0 hashes line and column numbers into its key"
    assert ours is bc


def test_pattern_keys_group_real_trees_exactly_as_zexus_does() -> None:
    zexus = ZexusCache()
    trees = [pipeline.parse(s) for s in (SQUARE, CUBE, SUM, "let b = 2\nprint(b + 5)\n", 'print("x")\n')]
    nodes = [n for tree in trees for n in [tree, *tree.statements]]
    theirs = [zexus._get_pattern_hash(n) for n in nodes]
    ours = [pattern_key(n) for n in nodes]
    pairs = [(i, j) for i in range(len(nodes)) for j in range(i)]
    assert [theirs[i] == theirs[j] for i, j in pairs] == [ours[i] == ours[j] for i, j in pairs]
    assert any(theirs[i] == theirs[j] for i, j in pairs), "the sample must contain trees of one shape"


# ------------------------------------------------------------------ persistent


def test_file_cache_survives_a_restart_and_clear_leaves_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "app.zx"
    src.write_text(SUM)
    _, bc = compiled(SUM)

    def script(cls: type) -> list[Any]:
        cache_dir = tmp_path / cls.__module__
        first = cls(persistent=True, cache_dir=str(cache_dir))
        first.put_by_file(str(src), [bc])
        close(first)
        second = cls(persistent=True, cache_dir=str(cache_dir))
        got = second.get_by_file(str(src))
        seen = [len(got), second.get_stats()["file_hits"], second.get_file_cache_info(str(src))["bytecode_count"]]
        second.clear()
        close(second)
        third = cls(persistent=True, cache_dir=str(cache_dir))
        seen += [third.get_by_file(str(src)), third.get_stats()["hits"]]
        close(third)
        return seen

    theirs, ours = side_by_side(script)
    assert ours == theirs == [1, 1, 1, None, 0]
    # zexus's clear() deletes file_index.cache, but its index is file_index.json: a stale index is left.
    assert (tmp_path / ZexusCache.__module__ / "file_index.json").exists()
    assert sorted(p.name for p in (tmp_path / Ours.__module__).iterdir() if not p.name.startswith("bcache.db"))  == []


def test_live_stats_set_and_reset_the_persisted_counters(tmp_path: Path) -> None:
    program, bc = compiled(SUM)
    with Ours(persistent=True, cache_dir=str(tmp_path)) as cache:
        cache.get(program)
        cache.put(program, bc)
        cache.get(program)
        cache.stats.misses = 5
        assert (cache.stats.hits, cache.stats.misses) == (1, 5)
    with Ours(persistent=True, cache_dir=str(tmp_path)) as other:
        assert (other.stats.hits, other.stats.misses) == (1, 5), "counters are persisted, summed over processes"
        other.stats = compat.CacheStats()
        assert other.get_stats()["hits"] == other.get_stats()["misses"] == 0 and len(other) == 1


def test_live_stats_refuse_what_is_not_a_counter() -> None:
    cache = Ours()
    for name, value, error in (("hit_rate", 1.0, AttributeError), ("memory_bytes", 0, AttributeError),
                               ("nonsense", 0, AttributeError), ("hits", -1, ValueError), ("hits", "0", ValueError)):
        with pytest.raises(error, match=name if error is AttributeError else "whole number"):
            setattr(cache.stats, name, value)
    with pytest.raises(TypeError, match="CacheStats"):
        cache.stats = {"hits": 0}  # type: ignore[assignment]


# ------------------------------------------------------------------ our own class: the differences are visible


def test_main_class_keeps_its_own_semantics_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (program, bc), (other, obc) = compiled(SQUARE), compiled(SUM)
    main = ours_module.BytecodeCache(max_memory_mb=0.0001)
    with caplog.at_level(logging.WARNING, logger="zexus_bcache"):
        main.put(program, bc)
    assert main.get(program) is None, "an oversized entry is refused by the memory tier ..."
    assert main.stats.oversized == 1 and main.stats.puts == 1, "... but counted"
    assert any("not kept in memory" in r.getMessage() for r in caplog.records), "... and warned about"
    with ours_module.BytecodeCache(max_memory_mb=0.0001, path=tmp_path / "store" / "c.db") as persistent:
        persistent.put(program, bc)
        assert persistent.get(program) is not None, "a persistent cache serves it from the store"
    plain = ours_module.BytecodeCache()
    plain.put(other, obc)
    assert access_count(plain, other) == 0, "access_count counts uses, not the put"
    plain.get(other)
    assert access_count(plain, other) == 1
    plain.clear()
    assert plain.stats.hits == 1, "clear() keeps the statistics; reset_stats() zeroes them"
    assert os.listdir(Path.cwd()) == ["store"], "memory-only caches wrote no file"


def test_the_readme_table_has_a_row_for_every_public_name_of_zexus_cache() -> None:
    """The README's row-by-row table cannot silently miss a method zexus's cache has."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### zexus 2.0's cache API and ours", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    with pipeline.quiet():
        import zexus.vm.cache as theirs
    names = {n for n, _ in inspect.getmembers(theirs.BytecodeCache, inspect.isfunction) if not n.startswith("__")}
    names -= {n for n in names if n.startswith("_") and n != "_hash_ast"}  # private helpers
    names |= {"CACHE_VERSION", "FileMetadata", "CacheEntry", "CacheStats"}
    first_cells = " ".join(row.split("|")[1] for row in rows)
    missing = sorted(n for n in names if f"`{n}" not in first_cells and f" {n}(" not in first_cells)
    assert not missing, f"README table lacks rows for: {missing}"
