"""integration: the zexus pipeline, install()/uninstall() as zexus's shared cache, and `run` against `zx run`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from zx_programs import corpus_programs

from zexus_bcache import integration, pipeline
from zexus_bcache.cache import BytecodeCache

with pipeline.quiet():
    from zexus.evaluator import bytecode_compiler


def test_install_and_uninstall_swap_the_shared_cache(tmp_path: Path) -> None:
    before = bytecode_compiler._SHARED_CACHE
    cache = BytecodeCache(path=tmp_path / "c.db", compiler="evaluator")
    try:
        assert integration.install(cache) is cache
        assert bytecode_compiler.get_shared_cache() is cache
        compiler = bytecode_compiler.EvaluatorBytecodeCompiler(use_cache=True)
        assert compiler.cache is cache
    finally:
        integration.uninstall()
        cache.close()
    assert bytecode_compiler._SHARED_CACHE is before


def test_install_without_a_cache_opens_the_configured_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "proj"
    (project / ".zexus").mkdir(parents=True)
    (project / ".zexus" / "bcache.toml").write_text('path = "elsewhere/cache.db"\nmax_memory_mb = 7\n', encoding="utf-8")
    monkeypatch.chdir(project)
    monkeypatch.delenv("ZEXUS_BCACHE_PATH", raising=False)
    monkeypatch.delenv("ZEXUS_BCACHE_MAX_MEMORY_MB", raising=False)
    monkeypatch.delenv("ZEXUS_BCACHE_SHARED_URL", raising=False)
    before = bytecode_compiler._SHARED_CACHE
    cache = integration.install()
    try:
        assert bytecode_compiler.get_shared_cache() is cache
        assert Path(cache.location) == (project / "elsewhere" / "cache.db").resolve()
        assert cache.max_memory_bytes == 7 * 2**20 and cache.compiler == "evaluator"
        assert cache.shared is None
    finally:
        integration.uninstall()
        cache.close()
    assert bytecode_compiler._SHARED_CACHE is before


EVALUATOR_CHILD = textwrap.dedent(
    """
    import json, sys
    from zexus_bcache import codec, integration, pipeline
    from zexus_bcache.cache import BytecodeCache
    cache = integration.install(BytecodeCache(path=sys.argv[1], compiler="evaluator"))
    from zexus.evaluator.bytecode_compiler import EvaluatorBytecodeCompiler
    program = pipeline.parse(open(sys.argv[2]).read())
    with pipeline.quiet():
        compiler = EvaluatorBytecodeCompiler(use_cache=True)
        compiled = [compiler.compile(s) for s in program.statements]
    blobs = [codec.encode(b).hex() for b in compiled if b is not None]
    integration.uninstall()
    stats = cache.get_stats()
    cache.close()
    print(json.dumps({"blobs": blobs, "store_hits": stats["store_hits"], "misses": stats["misses"]}))
    """
)


def test_zexus_own_compiler_hits_our_store_across_processes(tmp_path: Path) -> None:
    import json

    program = tmp_path / "p.zx"
    program.write_text(
        'let a = 6 * 7;\nlet s = "x" + "y";\nprint(a);\nlet m = {"k": [1, 2]};\nprint(m["k"][1]);\n', encoding="utf-8"
    )
    db = tmp_path / "shared.db"

    def child() -> dict:
        done = subprocess.run(
            [sys.executable, "-c", EVALUATOR_CHILD, str(db), str(program)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = child(), child()
    assert first["blobs"], "zexus's evaluator compiler compiled nothing"
    assert first["store_hits"] == 0 and first["misses"] >= len(first["blobs"])
    assert second["blobs"] == first["blobs"], "the second process got the same bytecode"
    assert second["store_hits"] >= len(second["blobs"]), "the second process was served from our store"


def _zx_run(program: Path) -> subprocess.CompletedProcess[str]:
    zx = Path(sys.executable).with_name("zx")
    return subprocess.run([str(zx), "run", str(program)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, COLUMNS="200"))


def _ours(program: Path, db: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "zexus_bcache", "--cache", str(db), "run", "--timings", str(program)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="200"))


def _program_output(zx_stdout: str) -> str:
    """What ``zx run`` printed after its own banner lines (it ends them with 'Executing on VM...')."""
    marker = "Executing on VM...\n"
    assert marker in zx_stdout, zx_stdout[:2000]
    return zx_stdout.split(marker, 1)[1]


@pytest.mark.parametrize("program", corpus_programs(), ids=lambda p: p.name)
def test_run_prints_what_zx_run_prints_and_hits_the_second_time(program: Path, tmp_path: Path) -> None:
    db = tmp_path / "bcache.db"
    expected = _program_output(_zx_run(program).stdout)
    cold = _ours(program, db)
    warm = _ours(program, db)
    assert cold.returncode == 0 and warm.returncode == 0, cold.stderr[-2000:] + warm.stderr[-2000:]
    assert cold.stdout == expected
    assert warm.stdout == expected
    assert "miss (compiled and stored)" in cold.stderr
    assert "hit (store)" in warm.stderr
    with BytecodeCache(path=db) as cache:
        stats = cache.get_stats()
    assert stats["store_hits"] == 1 and stats["misses"] == 1


def test_a_warm_run_imports_nothing_it_does_not_need(tmp_path: Path) -> None:
    # SQLAlchemy and Alembic (~100 ms), rich (~35 ms, nothing of ours is printed by a plain run of
    # a program that returns nothing) and importlib.metadata (~14 ms) stay off the warm path.
    program = next(iter(corpus_programs()))
    db = tmp_path / "bcache.db"
    assert _ours(program, db).returncode == 0  # cold: creates, migrates and fills the cache
    script = textwrap.dedent(
        f"""
        import sys
        from zexus_bcache import cli
        cli.main(["--cache", {str(db)!r}, "run", "--timings", {str(program)!r}], standalone_mode=False)
        heavy = ("sqlalchemy", "alembic", "rich", "importlib.metadata")
        print("imported:", sorted(m for m in heavy if m in sys.modules))
        """
    )
    warm = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert "hit (store)" in warm.stderr
    assert warm.stdout.rstrip().endswith("imported: []")


def test_install_without_a_cache_takes_the_configured_shared_tier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 9 on loopback refuses connections: the tier is configured (and then marked down), never fatal.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZEXUS_BCACHE_PATH", str(tmp_path / "local.db"))
    monkeypatch.setenv("ZEXUS_BCACHE_SHARED_URL", "postgresql://nobody@127.0.0.1:9/none")
    monkeypatch.setenv("ZEXUS_BCACHE_SHARED_KEY", "k" * 32)
    monkeypatch.setenv("ZEXUS_BCACHE_SHARED_READ_ONLY", "1")
    cache = integration.install()
    try:
        assert cache.shared is not None and cache.shared.read_only
        assert Path(cache.location) == tmp_path / "local.db"
    finally:
        integration.uninstall()
        cache.close()
