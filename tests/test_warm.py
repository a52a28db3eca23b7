"""zexus_bcache.warm: which files, how many workers, statuses, a read-only cache, Ctrl-C, and a shared tier."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from zx_programs import CORPUS_DIR

from zexus_bcache import warm
from zexus_bcache.cache import BytecodeCache
from zexus_bcache.errors import ConfigError, StoreError
from zexus_bcache.store import Store

GOOD = ["01_recursion_factorial.zx", "03_recursion_ackermann.zx", "10_maps_basics.zx", "12_loops_while.zx"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / ".hidden").mkdir(parents=True)
    (root / "sub").mkdir()
    for name in GOOD[:2]:
        shutil.copy(CORPUS_DIR / name, root / name)
    for name in GOOD[2:]:
        shutil.copy(CORPUS_DIR / name, root / "sub" / name)
    shutil.copy(CORPUS_DIR / GOOD[0], root / ".hidden" / "skipped.zx")
    (root / "notes.txt").write_text("not a program")
    return root


def test_find_files_exclude_and_lists(tree: Path) -> None:
    found = warm.find_files([tree])
    assert [f.name for f in found] == [*GOOD[:2], *GOOD[2:]]
    assert [f.name for f in warm.find_files([tree], exclude=r"/sub/")] == GOOD[:2]
    listed = [str(tree / ".hidden" / "skipped.zx"), "", str(tree / GOOD[0])]
    assert [f.name for f in warm.find_files([], listed=listed)] == ["skipped.zx", GOOD[0]]
    with pytest.raises(ConfigError, match="not a regular expression"):
        warm.find_files([tree], exclude="(")
    with pytest.raises(ConfigError, match="no such file"):
        warm.find_files([], listed=[str(tree / "gone.zx")])


def test_jobs_are_capped_by_cpus_and_files() -> None:
    cpus = os.cpu_count() or 1
    assert warm.effective_jobs(1000, 3) == min(3, cpus)
    assert warm.effective_jobs(0, 1000) == cpus == warm.effective_jobs(None, 1000)
    assert warm.effective_jobs(1, 0) == 1


def test_stored_then_evicted_is_compiled_not_failed(tree: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Store(path) as s:
        s.set_setting("max_bytes", 1)  # every entry is evicted by the put that stored it
    files = warm.find_files([tree])
    report = warm.warm(files, {"path": path}, jobs=1)
    assert [r["status"] for r in report.results] == ["compiled"] * len(files), report.results
    assert all("evicted" in r["reason"] for r in report.results)
    with Store(path, read_only=True) as s:
        assert s.count() == 0 and s.counters()["evictions"] == len(files)


def test_statuses_force_and_dry_run(tree: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    files = warm.find_files([tree])
    first = warm.warm(files, {"path": path}, jobs=2)
    assert first.count("compiled") == len(files) and not first.interrupted
    with BytecodeCache(path=path) as cache:
        (tree / GOOD[0]).write_text((tree / GOOD[0]).read_text() + "\nprint(1)\n")
        planned = warm.dry_run(files, cache)
    assert [r["status"] for r in planned.results] == ["would compile", *["cached"] * (len(files) - 1)]
    again = warm.warm(files, {"path": path}, jobs=2)
    assert (again.count("compiled"), again.count("cached")) == (1, len(files) - 1)
    forced = warm.warm(files, {"path": path}, jobs=1, force=True)
    assert forced.count("compiled") == len(files)


def test_a_read_only_cache_is_refused_before_any_work(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    Store(path).close()
    with BytecodeCache(path=path, read_only=True) as cache, pytest.raises(StoreError, match="read-only"):
        warm.check_writable(cache)


def test_ctrl_c_stops_promptly_with_a_summary(tmp_path: Path) -> None:
    """A real `warm` over many files, SIGINT to its whole process group as a terminal sends it."""
    src = tmp_path / "src"
    src.mkdir()
    big = (CORPUS_DIR / "45_large_program.zx").read_text()
    for i in range(400):  # distinct sources: nothing is cached, every file is real work
        (src / f"p{i:03d}.zx").write_text(big + f"\nprint({i})\n")
    db = tmp_path / "c.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEXUS_BCACHE_")}
    child = subprocess.Popen(
        [sys.executable, "-m", "zexus_bcache", "--cache", str(db), "warm", "-j", "2", str(src)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:  # wait until workers have stored something
            if db.exists():
                try:
                    with Store(db, read_only=True) as s:
                        if s.count() >= 4:
                            break
                except StoreError:
                    pass
            time.sleep(0.2)
        assert child.poll() is None, "warm finished before it could be interrupted"
        os.killpg(child.pid, signal.SIGINT)
        sent = time.monotonic()
        out, err = child.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted after" in out and "of 400 files" in out, out
    done = int(out.split("interrupted after ")[1].split()[0])
    assert done < 400 and took < 20, (done, took)
    left = deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # no worker (nor forkserver) is left behind
        left = subprocess.run(
            ["ps", "-o", "pid=,stat=,args=", "-g", str(child.pid)], capture_output=True, text=True
        ).stdout
        if not [line for line in left.splitlines() if " Z" not in line]:
            break
        time.sleep(0.2)
    assert not [line for line in left.splitlines() if " Z" not in line], left


def test_workers_never_inherit_a_half_imported_module(
    tree: Path, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`warm -j 2` with a shared tier: a parent caught half-way through importing psycopg must not
    hand that half module to its workers (forked workers failed with "partially initialized module")."""
    half = types.ModuleType("psycopg")  # what sys.modules holds while another thread imports psycopg
    monkeypatch.setitem(sys.modules, "psycopg", half)
    files = warm.find_files([tree])
    arguments = {"path": tmp_path / "c.db", "shared": pg_url, "shared_key": b"k" * 16}
    report = warm.warm(files, arguments, jobs=2)
    monkeypatch.undo()
    assert report.count("compiled") == len(files), report.results
    with Store(pg_url, read_only=True) as server:
        assert len(server.keys()) == len(files)  # every shared put arrived


def test_a_run_after_warm_is_a_hit(tree: Path, tmp_path: Path) -> None:
    """warm keys entries as `zexus-bcache run` does, so the run that follows skips parse and compile."""
    path = tmp_path / "c.db"
    files = warm.find_files([tree])
    assert warm.warm(files, {"path": path}, jobs=1).count("compiled") == len(files)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEXUS_BCACHE_")}
    env.update(ZEXUS_BCACHE_PATH=str(path), ZEXUS_BCACHE_SERVER="0")
    done = subprocess.run([sys.executable, "-m", "zexus_bcache", "run", "--timings", str(files[0])],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "timings: hit (store)" in done.stderr, done.stderr
    with Store(path, read_only=True) as s:
        assert s.count() == len(files), "the run stored nothing new"
