"""Child processes of test_robustness.py: load workers, a writer to kill, readers, openers.

Run as ``python _robust_child.py MODE JSON-ARGS``. Each mode prints one line ``RESULT <json>``
last on stdout (what a program prints comes before it). Warnings that zexus_bcache logs are
collected and reported: the façade turns store failures into warnings, so "no lock errors"
means no warnings, not only no exceptions.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from zexus_bcache import codec, pipeline
from zexus_bcache.cache import BytecodeCache

WARNINGS: list[str] = []


class _Collect(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        WARNINGS.append(record.getMessage())


_handler = _Collect(logging.WARNING)
logging.getLogger("zexus_bcache").addHandler(_handler)


def result(data: dict[str, Any]) -> None:
    data.setdefault("warnings", WARNINGS)
    sys.stdout.flush()
    print("RESULT " + json.dumps(data), flush=True)


def load_pack(pack: str) -> tuple[list[bytes], list[Any]]:
    """The encoded bytecode the parent compiled, and its decoded objects (re-encoding must match)."""
    payloads = [base64.b64decode(p) for p in json.loads(Path(pack).read_text())]
    bytecodes = [codec.decode(p) for p in payloads]
    for payload, bytecode in zip(payloads, bytecodes):
        assert codec.encode(bytecode) == payload, "the codec must be deterministic across processes"
    return payloads, bytecodes


def wait_for_go(go: str, deadline_s: float = 120.0) -> float:
    """Block until the parent writes the start time into ``go``; return it."""
    give_up = time.time() + deadline_s
    while time.time() < give_up:
        try:
            text = Path(go).read_text()
        except FileNotFoundError:
            text = ""
        if text.endswith("\n"):
            start = float(text)
            while time.time() < start:
                time.sleep(0.0005)
            return start
        time.sleep(0.005)
    raise SystemExit("no go signal")


# ---------------------------------------------------------------------------------------- load


def load(args: dict[str, Any]) -> None:
    """Threads doing 80% lookups and 20% puts on a shared key space for a bounded time."""
    payloads, bytecodes = load_pack(args["pack"])
    n_programs = len(payloads)
    cache = BytecodeCache(path=args["path"], max_size=args["max_size"], strict=True)
    Path(args["ready"]).touch()
    start = wait_for_go(args["go"])
    deadline = start + args["seconds"]
    lock = threading.Lock()
    totals = {"ops": 0, "hits": 0, "misses": 0, "puts": 0, "wrong": 0}
    errors: list[str] = []
    # key -> [latest start of a recorded use, latest end]: the store's last_access must lie between.
    uses: dict[str, list[float]] = {}

    def work(tid: int) -> None:
        rng = random.Random(args["seed"] * 1000 + tid)
        mine = dict.fromkeys(totals, 0)
        seen: dict[str, list[float]] = {}
        while time.time() < deadline:
            k = rng.randrange(args["keys"])
            key, program = f"k{k:05d}", k % n_programs
            mine["ops"] += 1
            before = time.time()
            try:
                if rng.random() < 0.8:
                    value = cache.lookup(key)
                    after = time.time()
                    if value is None:
                        mine["misses"] += 1
                        continue  # a miss is no use of an entry
                    mine["hits"] += 1
                    if codec.encode(value) != payloads[program]:
                        mine["wrong"] += 1
                else:
                    cache.store_value(key, bytecodes[program], kind="ast")
                    after = time.time()
                    mine["puts"] += 1
            except BaseException as exc:  # reported: nothing may reach the caller
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            use = seen.get(key)
            if use is None:
                seen[key] = [before, after]
            else:
                use[0] = max(use[0], before)
                use[1] = max(use[1], after)
        with lock:
            for name, n in mine.items():
                totals[name] += n
            for key, (b, a) in seen.items():
                use = uses.get(key)
                if use is None:
                    uses[key] = [b, a]
                else:
                    use[0], use[1] = max(use[0], b), max(use[1], a)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(args["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    cache.close()  # flushes this process's access times and counters
    result({**totals, "errors": errors, "uses": uses, "elapsed": elapsed})


# --------------------------------------------------------------------------------------- crash


def crash_writer(args: dict[str, Any]) -> None:
    """Put forever (until killed); after each put returns, append "ok key program" to a log, fsynced."""
    payloads, bytecodes = load_pack(args["pack"])
    cache = BytecodeCache(path=args["path"], max_size=16, strict=True)
    log = os.open(args["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    rng = random.Random(args["seed"])
    Path(args["ready"]).touch()
    i = 0
    while True:
        if i % 2:  # a shared key, replaced again and again (always with the same bytecode)
            j = rng.randrange(args["shared"])
            key, program = f"s{j:04d}", j % len(payloads)
        else:
            key, program = f"u{args['round']:02d}-{i:06d}", rng.randrange(len(payloads))
        warned = len(WARNINGS)
        cache.store_value(key, bytecodes[program], kind="ast")
        status = "ok" if len(WARNINGS) == warned else "FAILED"  # a soft failure is not a returned put
        os.write(log, f"{status} {key} {program}\n".encode())
        os.fsync(log)
        i += 1


# ------------------------------------------------------------------------------ run a program


def run(args: dict[str, Any]) -> None:
    """compile_source through a cache (or none), run the program; print its output, then RESULT."""
    program = args["program"]
    source = Path(program).read_text(encoding="utf-8")
    if args.get("path"):
        cache = BytecodeCache(path=args["path"], strict=args.get("strict", False), max_size=args.get("max_size", 1000))
    else:
        cache = BytecodeCache()  # memory only: the reference run
    report = cache.compile_source_report(source, program)
    encoded = codec.encode(report.bytecode)
    pipeline.run_bytecode(report.bytecode, program)
    sys.stdout.flush()
    stats = cache.get_stats()
    cache.close()
    result({"tier": report.tier, "stats": stats, "encoded": base64.b64encode(encoded).decode(),
            "store_error": cache.store_error})  # fmt: skip


# ---------------------------------------------------------------------------------- first open


def first_open(args: dict[str, Any]) -> None:
    """Open one fresh database at the same instant as the other children; put, read back."""
    payloads, bytecodes = load_pack(args["pack"])
    Path(args["ready"]).touch()
    wait_for_go(args["go"])
    t0 = time.time()
    cache = BytecodeCache(path=args["path"], strict=True)
    opened_s = time.time() - t0
    program = args["i"] % len(payloads)
    cache.store_value(f"open-{args['i']}", bytecodes[program], kind="ast")
    migrated, revision = cache.store.migrated, cache.store.revision()
    cache.close()
    with BytecodeCache(path=args["path"], strict=True, max_size=0) as again:
        back = again.lookup(f"open-{args['i']}")
    read_back = back is not None and codec.encode(back) == payloads[program]
    result({"migrated": migrated, "revision": revision, "opened_s": opened_s, "read_back": read_back})


# ----------------------------------------------------------------------------------- read-only


def _warm_up(scratch: str, program: str) -> None:
    """Use every code path once as root, so nothing is imported after the privileges are dropped."""
    source = Path(program).read_text(encoding="utf-8")
    with BytecodeCache(path=scratch, max_size=0) as cache:
        cache.compile_source(source, program)
        cache.compile_source(source, program)
        cache.lookup("missing")
        cache.get_stats()
    with BytecodeCache(path=scratch, read_only=True, max_size=0) as cache:
        cache.compile_source(source, program)
    WARNINGS.clear()


def read_only(args: dict[str, Any]) -> None:
    """Serve hits from a database this process may not (or must not) write; report what happened."""
    programs = args["programs"]
    sources = {p: Path(p).read_text(encoding="utf-8") for p in programs + [args["new_program"]]}
    expected = {p: codec.encode(pipeline.compile_source(s, p)) for p, s in sources.items()}
    if args.get("user"):
        import pwd

        _warm_up(args["scratch"], programs[0])
        user = pwd.getpwnam(args["user"])
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    cache = BytecodeCache(path=args["path"], read_only=args["read_only"], max_size=args.get("max_size", 1000))
    tiers, wrong, errors = [], 0, []
    try:
        for _ in range(2):  # the second round: front hits
            for p in programs:
                report = cache.compile_source_report(sources[p], p)
                tiers.append(report.tier)
                wrong += codec.encode(report.bytecode) != expected[p]
        assert cache.lookup("no-such-key") is None
        new = cache.compile_source_report(sources[args["new_program"]], args["new_program"])
        wrong += codec.encode(new.bytecode) != expected[args["new_program"]]
        cache.store_value("read-only-new", new.bytecode, kind="ast")
        cache.flush()
        stats = cache.get_stats()
    except BaseException as exc:  # reported: nothing may reach the caller
        errors.append(f"{type(exc).__name__}: {exc}")
        stats = {}
    degraded = getattr(cache.store, "degraded", None)
    cache.close()
    result({"tiers": tiers, "new_tier": new.tier if not errors else None, "wrong": wrong, "errors": errors,
            "read_only": cache.read_only, "degraded": degraded, "store_error": cache.store_error,
            "stats": stats, "uid": os.geteuid()})  # fmt: skip


# ----------------------------------------------------------------------------------- disk full


def disk_full(args: dict[str, Any]) -> None:
    """Put until the disk (or a page limit) is full and past it; the caller must not notice."""
    import sqlite3

    from zexus_bcache.store import Store

    payloads, bytecodes = load_pack(args["pack"])
    path = args["path"]
    cache = BytecodeCache(path=path, strict=True, max_size=100_000)
    if args.get("extra_pages") is not None:
        probe = sqlite3.connect(path)
        (pages,) = probe.execute("PRAGMA page_count").fetchone()
        probe.close()
        cache.store.close()
        cache.store = Store(path, pragmas={"max_page_count": pages + args["extra_pages"]})
    errors: list[str] = []
    attempted = 0
    first_failure = None
    for i in range(args["max_puts"]):
        key, program = f"full-{i:05d}", i % len(payloads)
        warned = len(WARNINGS)
        try:
            cache.store_value(key, bytecodes[program], kind="ast")
        except BaseException as exc:  # reported: nothing may reach the caller
            errors.append(f"{type(exc).__name__}: {exc}")
        attempted += 1
        if first_failure is None and len(WARNINGS) > warned:
            first_failure = i
        if first_failure is not None and i - first_failure >= args["puts_after_full"]:
            break
    # The caller is unaffected: every value put is served (from memory when the disk refused it).
    served = sum(
        (v := cache.lookup(f"full-{i:05d}")) is not None and codec.encode(v) == payloads[i % len(payloads)]
        for i in range(attempted)
    )
    stored = cache.store.keys(prefix="full-")
    stats = cache.get_stats()
    cache.close()
    result({"attempted": attempted, "first_failure": first_failure, "stored": stored, "served": served,
            "write_errors": stats["write_errors"], "errors": errors})  # fmt: skip


def main() -> None:
    mode, raw = sys.argv[1], sys.argv[2]
    MODES[mode](json.loads(raw))


MODES = {
    "load": load,
    "crash_writer": crash_writer,
    "run": run,
    "first_open": first_open,
    "read_only": read_only,
    "disk_full": disk_full,
}

if __name__ == "__main__":
    main()
