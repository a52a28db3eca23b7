"""Many processes, crashes and bad disks: no lock errors, nothing lost, never wrong bytecode.

Every test runs real processes (tests/_robust_child.py) on real SQLite files, with real bytecode
compiled from tests/corpus/, bounded in time; children are killed and reaped in ``finally``.
``ZEXUS_BCACHE_LOAD_SECONDS`` (default 3) sets how long the load runs; ``ZEXUS_BCACHE_CRASH_KILLS``
(default 20) how many writers are killed. Each test prints its figures (see them with ``-s``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from zx_programs import corpus_programs

from zexus_bcache import codec, pipeline
from zexus_bcache.cache import BytecodeCache
from zexus_bcache.errors import StoreError
from zexus_bcache.store import ALLOW_WORLD_WRITABLE_ENV, Store, head_revision

CHILD = Path(__file__).parent / "_robust_child.py"
LOAD_SECONDS = float(os.environ.get("ZEXUS_BCACHE_LOAD_SECONDS", "3"))
CRASH_KILLS = int(os.environ.get("ZEXUS_BCACHE_CRASH_KILLS", "20"))
START_TIMEOUT = 120.0  # for children to import and open (a loaded 2-core CI machine)
RUN_TIMEOUT = 120.0


@dataclass
class Pack:
    """The corpus compiled once here; children decode it, so every process puts the same bytes."""

    path: Path
    payloads: list[bytes]
    programs: list[Path]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Pack:
    programs = corpus_programs()
    payloads = [codec.encode(pipeline.compile_source(p.read_text(encoding="utf-8"), str(p))) for p in programs]
    path = tmp_path_factory.mktemp("pack") / "pack.json"
    path.write_text(json.dumps([base64.b64encode(p).decode() for p in payloads]))
    return Pack(path, payloads, programs)


# ------------------------------------------------------------------------------- children


class Children:
    """Child processes of one test: output to files, always killed and reaped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[subprocess.Popen[bytes], Path, Path]] = []

    def spawn(self, mode: str, args: dict[str, Any], **popen: Any) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        out, err = self.workdir / f"child-{n}.out", self.workdir / f"child-{n}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(CHILD), mode, json.dumps(args)], stdout=stdout, stderr=stderr, **popen
            )
        self.procs.append((proc, out, err))
        return proc

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        err = next(e for p, _, e in self.procs if p is proc)
        return err.read_text(errors="replace")[-3000:]

    def result(self, proc: subprocess.Popen[bytes], timeout: float = RUN_TIMEOUT) -> tuple[dict[str, Any], str]:
        """Wait for a child; return its RESULT and what it printed before."""
        proc.wait(timeout=timeout)
        out = next(o for p, o, _ in self.procs if p is proc).read_text(errors="replace")
        assert proc.returncode == 0, f"child failed ({proc.returncode}): {self.stderr(proc)}"
        printed, _, last = out.rstrip("\n").rpartition("\n")
        if not last.startswith("RESULT "):
            printed, last = "", out.strip()
        assert last.startswith("RESULT "), f"no result: {out[-2000:]} {self.stderr(proc)}"
        return json.loads(last[len("RESULT ") :]), (printed + "\n" if printed else "")

    def kill_all(self) -> None:
        for proc, _, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
                pass


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    group = Children(tmp_path)
    try:
        yield group
    finally:
        group.kill_all()


def wait_for(paths: list[Path], procs: list[subprocess.Popen[bytes]], group: Children) -> None:
    """Wait until every child has created its ready file (fail early if one died)."""
    give_up = time.time() + START_TIMEOUT
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a child exited before it was ready: {group.stderr(proc)}")
        assert time.time() < give_up, "children did not get ready in time"
        time.sleep(0.02)


def go(path: Path, delay: float = 0.3) -> float:
    start = time.time() + delay
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{start!r}\n")
    tmp.replace(path)
    return start


# ------------------------------------------------------------------------------- database probes


def connect(db: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection from outside the library (as another program would look)."""
    return sqlite3.connect(db, timeout=30)


def integrity(db: Path) -> list[str]:
    conn = connect(db)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def stored_payloads(db: Path) -> dict[str, bytes]:
    conn = connect(db)
    try:
        return dict(conn.execute("SELECT key, payload FROM entries"))
    finally:
        conn.close()


def counters(db: Path) -> dict[str, int]:
    conn = connect(db)
    try:
        return dict(conn.execute("SELECT name, value FROM counters"))
    finally:
        conn.close()


def file_state(db: Path) -> dict[str, tuple[str, int, int]]:
    """sha256, size and mtime of the database file and of a non-empty WAL."""
    out = {}
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            data = path.read_bytes()
            out[path.name] = (hashlib.sha256(data).hexdigest(), len(data), path.stat().st_mtime_ns)
    return out


def wal_is_untouched(db: Path, before: dict[str, tuple[str, int, int]]) -> bool:
    wal = db.name + "-wal"
    now = file_state(db).get(wal)
    return now == before.get(wal) or (wal not in before and now is not None and now[1] == 0)


def populate(db: Path, programs: list[Path]) -> None:
    """Store the programs (source entries, as compile_source makes them) and close cleanly."""
    with BytecodeCache(path=db, strict=True) as cache:
        for program in programs:
            report = cache.compile_source_report(program.read_text(encoding="utf-8"), str(program))
            assert report.tier is None
    assert not db.with_name(db.name + "-wal").exists(), "a clean close checkpoints and removes the WAL"


def report(name: str, **figures: Any) -> None:
    print(f"\n[robustness] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# ------------------------------------------------------------------------------------------ load


@pytest.mark.parametrize("processes", [4, 8])
def test_load_many_processes_and_threads(processes: int, tmp_path: Path, pack: Pack, children: Children) -> None:
    """80% lookups / 20% puts on a shared key space: no error, no wrong hit, nothing lost, stats add up."""
    db = tmp_path / "cache" / "bcache.db"
    n_keys, threads = 300, 2
    go_file = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(processes)]
    procs = [
        children.spawn(
            "load",
            dict(path=str(db), pack=str(pack.path), keys=n_keys, seconds=LOAD_SECONDS, threads=threads,
                 max_size=16, seed=i, go=str(go_file), ready=str(ready[i])),  # fmt: skip
        )
        for i in range(processes)
    ]
    wait_for(ready, procs, children)
    go(go_file)
    results = [children.result(p, timeout=LOAD_SECONDS + RUN_TIMEOUT)[0] for p in procs]

    assert [r["errors"] for r in results] == [[]] * processes, "an exception reached the caller"
    assert [r["warnings"] for r in results] == [[]] * processes, "a store failure was swallowed"
    assert sum(r["wrong"] for r in results) == 0, "a hit returned bytecode other than what was put"
    ops = sum(r["ops"] for r in results)
    hits, misses, puts = (sum(r[k] for r in results) for k in ("hits", "misses", "puts"))
    assert all(r["hits"] > 0 and r["puts"] > 0 for r in results)

    assert integrity(db) == ["ok"]
    stored = stored_payloads(db)
    used: dict[str, list[float]] = {}
    for r in results:
        for key, (before, after) in r["uses"].items():
            old = used.setdefault(key, [before, after])
            old[0], old[1] = max(old[0], before), max(old[1], after)
    assert set(stored) == set(used), "every committed entry is there, and nothing else"
    for key, payload in stored.items():
        assert payload == pack.payloads[int(key[1:]) % len(pack.payloads)], key

    persisted = counters(db)
    assert persisted["front_hits"] + persisted["store_hits"] == hits
    assert (persisted["misses"], persisted["puts"]) == (misses, puts)
    assert persisted["corrupt"] == persisted["write_errors"] == 0
    conn = connect(db)
    query = "SELECT key, last_access, access_count FROM entries"
    rows = {key: (last, count) for key, last, count in conn.execute(query)}
    conn.close()
    assert sum(count for _, count in rows.values()) == hits, "every hit is counted on its entry"
    # LRU order: each entry's last_access is its latest use (a hit or a put), in whichever process.
    for key, (last_access, _) in rows.items():
        before, after = used[key]
        assert before <= last_access <= after, (key, before, last_access, after)
    report(
        f"load {processes} processes x {threads} threads", seconds=LOAD_SECONDS, ops=ops, hits=hits,
        misses=misses, puts=puts, ops_per_s=round(ops / LOAD_SECONDS), entries=len(stored),
        errors=0, wrong=0, front_hits=persisted["front_hits"], store_hits=persisted["store_hits"],
    )  # fmt: skip


def test_a_put_never_moves_last_access_back(tmp_path: Path) -> None:
    """A put that waited for the write lock commits after later hits were flushed: LRU keeps the later."""
    db = tmp_path / "c.db"
    with Store(db) as store:
        meta = dict(kind="ast", fingerprint="f", codec_version=1, n_instructions=1, n_constants=1)
        store.put("k", b"x", **meta)
        future = time.time() + 3600
        conn = connect(db)
        with conn:
            conn.execute("UPDATE entries SET last_access = ? WHERE key = 'k'", (future,))
        conn.close()
        store.put("k", b"x", **meta)
        info = store.info("k")
        assert info is not None and info["last_access"] == future


# ----------------------------------------------------------------------------------------- crash


def test_kill_minus_9_in_the_middle_of_puts(tmp_path: Path, pack: Pack, children: Children) -> None:
    """A writer killed at a random moment of its put loop, again and again: nothing it reported is lost."""
    db = tmp_path / "cache" / "bcache.db"
    log = tmp_path / "puts.log"
    rng = random.Random(20240501)
    reported: dict[str, int] = {}
    per_round = []
    t0 = time.time()
    for round_ in range(CRASH_KILLS):
        ready = tmp_path / f"ready-{round_}"
        args = dict(path=str(db), pack=str(pack.path), log=str(log), ready=str(ready), seed=round_, round=round_,
                    shared=64)  # fmt: skip
        proc = children.spawn("crash_writer", args)
        wait_for([ready], [proc], children)
        time.sleep(rng.uniform(0.05, 0.5))
        assert proc.poll() is None, children.stderr(proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL

        lines = log.read_text().split("\n")[:-1]  # a line cut by the kill has no newline yet
        assert not [line for line in lines if not line.startswith("ok ")], "a put failed softly"
        before = len(reported)
        for line in lines:
            _, key, program = line.split()
            reported[key] = int(program)
        per_round.append(len(lines) - sum(per_round))
        assert integrity(db) == ["ok"], f"round {round_}"
        stored = stored_payloads(db)
        for key, program in reported.items():
            assert stored.get(key) == pack.payloads[program], f"round {round_}: {key} lost or damaged"
        assert len(reported) >= before
    # Every reported entry decodes, through the API, to the bytecode that was put.
    with BytecodeCache(path=db, strict=True, max_size=0) as cache:
        for key, program in reported.items():
            value = cache.lookup(key)
            assert value is not None and codec.encode(value) == pack.payloads[program], key
        assert cache.stats.corrupt == 0
    report(
        "kill -9", kills=CRASH_KILLS, reported_puts=sum(per_round), distinct_keys=len(reported),
        puts_per_round_min=min(per_round), puts_per_round_max=max(per_round), lost=0, damaged=0,
        seconds=round(time.time() - t0, 1),
    )  # fmt: skip


# ------------------------------------------------------------------------------------ corruption


def _program(name: str) -> Path:
    return next(p for p in corpus_programs() if p.name.startswith(name))


def test_flipped_bits_in_a_payload_are_a_miss_and_the_program_still_runs(tmp_path: Path, children: Children) -> None:
    program = _program("31_algo_sorting")
    reference, reference_out = children.result(children.spawn("run", {"program": str(program)}))
    assert reference_out.strip() and reference["tier"] is None
    db = tmp_path / "cache" / "bcache.db"
    first, out = children.result(children.spawn("run", {"program": str(program), "path": str(db)}))
    assert first["tier"] is None and out == reference_out and first["warnings"] == []
    payload = base64.b64decode(reference["encoded"])
    body = codec.HEADER_SIZE
    positions = {"magic": 0, "version": 5, "body length": 8, "checksum": body - 3, "body start": body + 1,
                 "body middle": (body + len(payload)) // 2, "last byte": len(payload) - 1}  # fmt: skip
    for n, (where, offset) in enumerate(positions.items(), start=1):
        conn = connect(db)
        with conn:
            (key, stored) = conn.execute("SELECT key, payload FROM entries").fetchone()
            assert stored == payload, "the previous run repaired the entry"
            damaged = bytearray(stored)
            damaged[offset] ^= 1 << (n % 8)
            conn.execute("UPDATE entries SET payload = ? WHERE key = ?", (bytes(damaged), key))
        conn.close()
        got, out = children.result(children.spawn("run", {"program": str(program), "path": str(db)}))
        assert out == reference_out, f"{where}: the program printed something else"
        assert got["tier"] is None, f"{where}: a damaged payload must be a miss (recompiled)"
        assert got["encoded"] == reference["encoded"]
        assert got["stats"]["corrupt"] == n, f"{where}: the corrupt counter goes up"
        assert len(got["warnings"]) == 1 and "corrupt" in got["warnings"][0]
    # The recompiled bytecode was stored again: the next run is served, right, from the store.
    again, out = children.result(children.spawn("run", {"program": str(program), "path": str(db), "max_size": 0}))
    assert again["tier"] == "store" and out == reference_out and again["warnings"] == []
    assert integrity(db) == ["ok"]
    report("flipped bits", positions=len(positions), misses=len(positions), corrupt=len(positions), wrong=0)


def _make_damaged(db: Path, how: str, page_size: int = 4096) -> None:
    data = db.read_bytes()
    if how == "truncated":
        db.write_bytes(data[: len(data) // 2 + 100])
    elif how == "truncated at a page boundary":
        db.write_bytes(data[: (len(data) // page_size // 2) * page_size])
    elif how == "garbage":
        db.write_bytes(random.Random(7).randbytes(len(data)))
    elif how == "zeroed header":
        db.write_bytes(bytes(100) + data[100:])
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "truncated at a page boundary", "garbage", "zeroed header"])
def test_a_damaged_database_file_is_a_clear_error_or_runs_uncached(
    how: str, tmp_path: Path, pack: Pack, children: Children
) -> None:
    program = _program("20_arith_floats")
    db = tmp_path / "cache" / "bcache.db"
    populate(db, sorted(set(pack.programs[:20] + [program])))
    _make_damaged(db, how)
    damaged = db.read_bytes()
    with pytest.raises(StoreError) as info:
        BytecodeCache(path=db, strict=True)
    assert str(db) in str(info.value)
    reference, reference_out = children.result(children.spawn("run", {"program": str(program)}))
    got, out = children.result(children.spawn("run", {"program": str(program), "path": str(db)}))
    assert out == reference_out and got["encoded"] == reference["encoded"] and got["tier"] is None
    assert got["store_error"] and str(db) in got["store_error"]
    assert len(got["warnings"]) == 1 and "uncached" in got["warnings"][0]
    assert db.read_bytes() == damaged, "a damaged file is left for doctor to look at"


def test_a_damaged_page_inside_the_database_never_breaks_the_program(
    tmp_path: Path, pack: Pack, children: Children
) -> None:
    """A b-tree page overwritten after open (nothing checks every page at open): calls fail softly."""
    program = _program("20_arith_floats")
    db = tmp_path / "cache" / "bcache.db"
    populate(db, sorted(set(pack.programs[:20] + [program])))
    conn = connect(db)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'entries'").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(random.Random(3).randbytes(page_size))
    reference, reference_out = children.result(children.spawn("run", {"program": str(program)}))
    got, out = children.result(children.spawn("run", {"program": str(program), "path": str(db)}))
    assert out == reference_out and got["encoded"] == reference["encoded"] and got["tier"] is None
    kinds = [w.split(" failed")[0] for w in got["warnings"]]
    assert got["warnings"] and len(kinds) == len(set(kinds)), "at most one warning per kind of failure"
    report("damaged page", warnings=len(got["warnings"]), first=got["warnings"][0][:100])


# ------------------------------------------------------------------------------------- read-only


def _read_only_args(db: Path, programs: list[Path], new_program: Path, **extra: Any) -> dict[str, Any]:
    return dict(path=str(db), programs=[str(p) for p in programs], new_program=str(new_program), **extra)


def _check_read_only_run(got: dict[str, Any], n_programs: int) -> None:
    assert got["errors"] == [] and got["wrong"] == 0
    assert got["tiers"] == ["store"] * n_programs + ["front"] * n_programs, "hits are served"
    assert got["new_tier"] is None and got["read_only"] is True


def test_read_only_flag_serves_hits_and_writes_nothing(tmp_path: Path, pack: Pack, children: Children) -> None:
    db = tmp_path / "cache" / "bcache.db"
    programs = pack.programs[:8]
    populate(db, programs)
    before = file_state(db)
    got, _ = children.result(
        children.spawn("read_only", _read_only_args(db, programs, pack.programs[9], read_only=True))
    )
    _check_read_only_run(got, len(programs))
    assert got["warnings"] == [], "read_only=True is a choice, not a failure: no warning"
    assert got["stats"]["store_hits"] == len(programs), "counted in memory"
    assert file_state(db)[db.name] == before[db.name], "the database file was not written"
    assert wal_is_untouched(db, before)
    assert counters(db)["store_hits"] == 0, "nothing was flushed"


@contextmanager
def mounted_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at ``where`` (skip when this machine does not let us mount one)."""
    where.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {run.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def test_a_read_only_mount_serves_hits_with_one_warning(tmp_path: Path, pack: Pack, children: Children) -> None:
    """A file SQLite can only open mode=ro (read-only file system, no -shm): served, one warning, no write."""
    programs = pack.programs[:8]
    with mounted_tmpfs(tmp_path / "mnt", "8m") as mnt:
        db = mnt / "cache" / "bcache.db"
        populate(db, programs)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True, timeout=30)
        before = file_state(db)
        got, _ = children.result(
            children.spawn("read_only", _read_only_args(db, programs, pack.programs[9], read_only=False))
        )
        _check_read_only_run(got, len(programs))
        assert len(got["warnings"]) == 1 and "read-only" in got["warnings"][0], got["warnings"]
        assert got["degraded"], "the cache says why it went read-only"
        assert file_state(db) == before and not db.with_name(db.name + "-wal").exists()


def _nobody() -> Any:
    import pwd

    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root (and as non-root, chmod already works)")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user on this machine")


@pytest.mark.parametrize("case", ["file and directory unwritable", "directory unwritable"])
def test_an_unwritable_cache_serves_hits_to_an_unprivileged_user(
    case: str, tmp_path: Path, pack: Pack, children: Children
) -> None:
    """As root chmod stops nothing: the reader drops to 'nobody' (after its imports)."""
    nobody = _nobody()
    programs = pack.programs[:8]
    # tmp_path's parents are private to root: nobody needs a path it can reach.
    base = Path(tempfile.mkdtemp(prefix="zexus_bcache_robust_"))
    try:
        base.chmod(0o755)
        db = base / "cache" / "bcache.db"
        populate(db, programs)
        db.parent.chmod(0o755)  # shared for reading
        if case == "directory unwritable":
            os.chown(db, 0, nobody.pw_gid)
            db.chmod(0o664)  # nobody may write the file, but SQLite could not create its -wal there
        else:
            db.chmod(0o644)
        before = file_state(db)
        args = _read_only_args(db, programs, pack.programs[9], read_only=False, user="nobody",
                               scratch=str(tmp_path / "scratch.db"))  # fmt: skip
        got, _ = children.result(children.spawn("read_only", args))
        assert got["uid"] == nobody.pw_uid
        _check_read_only_run(got, len(programs))
        assert len(got["warnings"]) == 1 and "read-only" in got["warnings"][0], got["warnings"]
        assert file_state(db) == before, "the database was not written"
        assert not db.with_name(db.name + "-wal").exists() and not db.with_name(db.name + "-shm").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------------------- disk full


def _committed_before(db: Path, pack: Pack, n: int = 20) -> dict[str, int]:
    with BytecodeCache(path=db, strict=True) as cache:
        for i in range(n):
            cache.store_value(f"before-{i:03d}", codec.decode(pack.payloads[i % len(pack.payloads)]), kind="ast")
        assert cache.stats.write_errors == 0, "the disk must not be full yet"
    return {f"before-{i:03d}": i % len(pack.payloads) for i in range(n)}


def _check_disk_full(db: Path, pack: Pack, got: dict[str, Any], before: dict[str, int]) -> None:
    assert got["errors"] == [], "the caller is unaffected"
    assert got["first_failure"] is not None, "the disk never filled up"
    assert got["served"] == got["attempted"], "every value put is served to its process"
    failed = got["attempted"] - len(got["stored"])
    assert failed > 0 and got["write_errors"] == failed, "each failed put is counted once"
    puts_failed = [w for w in got["warnings"] if "put failed" in w]
    assert len(puts_failed) == 1, got["warnings"]
    stored = stored_payloads(db)
    for key, program in before.items():
        assert stored[key] == pack.payloads[program], f"{key} committed before the disk filled is lost"
    for key in got["stored"]:
        assert stored[key] == pack.payloads[int(key.split("-")[1]) % len(pack.payloads)]
    assert integrity(db) == ["ok"]


def test_disk_full_by_page_limit_fails_puts_softly(tmp_path: Path, pack: Pack, children: Children) -> None:
    db = tmp_path / "cache" / "bcache.db"
    before = _committed_before(db, pack)
    args = dict(path=str(db), pack=str(pack.path), extra_pages=3, max_puts=400, puts_after_full=25)
    got, _ = children.result(children.spawn("disk_full", args))
    _check_disk_full(db, pack, got, before)
    assert counters(db)["write_errors"] == got["write_errors"], "write errors reach the shared statistics"
    report("disk full (max_page_count)", attempted=got["attempted"], stored=len(got["stored"]),
           write_errors=got["write_errors"], warnings=[w[-90:] for w in got["warnings"]])  # fmt: skip


def test_a_really_full_disk_fails_puts_softly(tmp_path: Path, pack: Pack, children: Children) -> None:
    with mounted_tmpfs(tmp_path / "mnt", "2m") as mnt:
        db = mnt / "cache" / "bcache.db"
        before = _committed_before(db, pack)
        args = dict(path=str(db), pack=str(pack.path), max_puts=2000, puts_after_full=25)
        got, _ = children.result(children.spawn("disk_full", args))
        _check_disk_full(db, pack, got, before)
        report("disk full (2 MiB tmpfs)", attempted=got["attempted"], stored=len(got["stored"]),
               write_errors=got["write_errors"], warnings=[w[-90:] for w in got["warnings"]])  # fmt: skip


# ------------------------------------------------------------------------------------ first open


def test_eight_processes_open_one_fresh_cache_at_once(tmp_path: Path, pack: Pack, children: Children) -> None:
    """BytecodeCache level (Store level: test_schema_migrations.py): migrated once, all succeed."""
    db = tmp_path / "cache" / "bcache.db"
    go_file = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(8)]
    procs = [
        children.spawn("first_open", dict(path=str(db), pack=str(pack.path), i=i, go=str(go_file), ready=str(ready[i])))
        for i in range(8)
    ]
    wait_for(ready, procs, children)
    go(go_file)
    results = [children.result(p)[0] for p in procs]
    assert [r["warnings"] for r in results] == [[]] * 8
    assert all(r["read_back"] for r in results)
    assert [r["revision"] for r in results] == [head_revision()] * 8
    assert sum(r["migrated"] for r in results) == 1
    assert len(stored_payloads(db)) == 8 and integrity(db) == ["ok"]
    report("first open", processes=8, migrations=1, slowest_open_s=round(max(r["opened_s"] for r in results), 2))


# ----------------------------------------------------------------------------------- permissions


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_cache_is_private_even_with_a_permissive_umask(tmp_path: Path, pack: Pack) -> None:
    old = os.umask(0)
    try:
        cache = BytecodeCache(persistent=True, cache_dir=tmp_path / "project" / ".zexus", strict=True)
        cache.store_value("k", codec.decode(pack.payloads[0]), kind="ast")
        db = tmp_path / "project" / ".zexus" / "bcache.db"
        wal, shm = db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")
        assert wal.exists() and shm.exists()
        modes = {p.name: oct(_mode(p)) for p in (db.parent, db, wal, shm)}
        cache.close()
    finally:
        os.umask(old)
    assert modes == {".zexus": "0o700", "bcache.db": "0o600", "bcache.db-wal": "0o600", "bcache.db-shm": "0o600"}


@pytest.mark.parametrize("what", ["database file", "directory", "wal file"])
def test_a_world_writable_cache_is_refused(what: str, tmp_path: Path, pack: Pack, children: Children) -> None:
    """Anyone could have planted bytecode there: strict raises, otherwise one warning and uncached."""
    program = _program("20_arith_floats")
    db = tmp_path / "cache" / "bcache.db"
    populate(db, [program])
    target = {"database file": db, "directory": db.parent, "wal file": db.with_name(db.name + "-wal")}[what]
    if what == "wal file":
        target.touch()
    target.chmod(0o777 if target.is_dir() else 0o666)
    before = file_state(db)
    with pytest.raises(StoreError, match="writable by other users") as info:
        BytecodeCache(path=db, strict=True)
    assert str(db) in str(info.value) and ALLOW_WORLD_WRITABLE_ENV in str(info.value)
    got, out = children.result(children.spawn("run", {"program": str(program), "path": str(db)}))
    assert got["tier"] is None and out.strip(), "the program runs, uncached"
    assert len(got["warnings"]) == 1 and "writable by other users" in got["warnings"][0]
    assert file_state(db) == before
    # An explicit opt-in trusts it.
    env = dict(os.environ, **{ALLOW_WORLD_WRITABLE_ENV: "1"})
    trusted, out2 = children.result(children.spawn("run", {"program": str(program), "path": str(db)}, env=env))
    assert trusted["tier"] == "store" and trusted["warnings"] == [] and out2 == out


def test_a_shared_sticky_directory_is_used_only_below_a_private_directory(tmp_path: Path, pack: Pack) -> None:
    """In a /tmp-like directory (world-writable, sticky) a cache needs a private directory of its own."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(StoreError, match="its directory .* is writable by other users"):
        BytecodeCache(path=shared / "bcache.db", strict=True)
    assert not (shared / "bcache.db").exists(), "nothing is created where it would be refused"
    db = shared / "mine" / "bcache.db"
    with BytecodeCache(path=db, strict=True) as cache:
        cache.store_value("k", codec.decode(pack.payloads[0]), kind="ast")
    assert oct(_mode(db.parent)) == "0o700"
    with BytecodeCache(path=db, strict=True, max_size=0) as cache:
        assert cache.lookup("k") is not None
    if os.geteuid() != 0:
        return  # only root can give the file to another user
    nobody = _nobody()
    os.chown(db, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(StoreError, match="belongs to another user"):
        BytecodeCache(path=db, strict=True)


def test_refusals_and_fallbacks_warn_once(tmp_path: Path, pack: Pack, caplog: pytest.LogCaptureFixture) -> None:
    """In process too: a refused cache logs one warning however many calls follow."""
    db = tmp_path / "cache" / "bcache.db"
    populate(db, pack.programs[:2])
    db.chmod(0o666)
    source = pack.programs[0].read_text(encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="zexus_bcache"):
        cache = BytecodeCache(path=db)
        for _ in range(5):
            cache.compile_source(source, str(pack.programs[0]))
            cache.store_value("x", codec.decode(pack.payloads[0]), kind="ast")
        cache.close()
    assert len([r for r in caplog.records if r.name == "zexus_bcache"]) == 1
