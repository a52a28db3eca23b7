"""The robustness load workload, ours against diskcache, side by side in one run.

Run: python bench/bench_load.py [--seconds 3] [--rounds 2] [--processes 4 8] [--threads 2] [--keys 300]
(``ZEXUS_BCACHE_LOAD_SECONDS`` sets the default of --seconds; the default run takes about a minute.)

Every row runs the same workload: P processes x T threads, each op a get (80%) or a put (20%) of
a key drawn from one shared key space, key i always holding the real encoded bytecode of corpus
program i % N. All processes open their cache at the same instant (a start-up "database is locked"
counts as an error, then the open is retried), then run for the same time. Rows:

* ``diskcache``: ``diskcache.Cache`` with default settings; get/set of the encoded bytes.
* ``store``: our ``Store``; get/put of the same bytes (the level diskcache works at).
* ``facade``: ``BytecodeCache.lookup`` / ``store_value`` with the in-memory front tier off
  (``max_size=0``): every get reads the store and decodes, every put encodes.
* ``facade+front``: the same with the default front tier (hits from memory after the first).

A wrong read is a get that returns something other than what was put for that key (bytes for
the first two rows; for the façade the instruction list is compared on every hit, and one hit in
25 is re-encoded and compared byte for byte after the timed window). Errors are exceptions, plus
(for the façade, which never raises) warnings that it logged. Throughput counts every op of every
process over the timed window. Each diskcache and store row runs ``--rounds`` times (façade rows
once), interleaved with the other rows in a rotating order; it reports the median throughput
(every round's figure is listed too) and latencies pooled over its rounds.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT  # noqa: E402

IMPLEMENTATIONS = ("diskcache", "store", "facade", "facade+front")
MAX_SAMPLES = 200_000  # latency samples kept per process


# ------------------------------------------------------------------------------------- worker


def worker(args: dict[str, Any]) -> None:
    """One process of one row: open at the go instant, run the threads, print a JSON result."""
    from zexus_bcache import codec

    payloads = [base64.b64decode(p) for p in json.loads(Path(args["pack"]).read_text())]
    bytecodes = [codec.decode(p) for p in payloads]
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logging.getLogger("zexus_bcache").addHandler(Collect(logging.WARNING))
    impl = args["impl"]
    Path(args["ready"]).touch()
    while not Path(args["go"]).exists():
        time.sleep(0.001)
    start_at = float(Path(args["go"]).read_text())
    while time.time() < start_at:
        time.sleep(0.0002)

    errors: list[str] = []
    open_errors = 0
    t_open = time.perf_counter()
    while True:
        try:
            get, put, close = _open(impl, args["where"], payloads, bytecodes)
            break
        except Exception as exc:  # diskcache's start-up "database is locked", reported as an error
            open_errors += 1
            errors.append(f"open: {type(exc).__name__}: {exc}")
            time.sleep(0.01)
    open_s = time.perf_counter() - t_open

    n = len(payloads)
    lock = threading.Lock()
    totals = {"ops": 0, "gets": 0, "puts": 0, "hits": 0, "wrong": 0}
    get_lat: list[int] = []
    put_lat: list[int] = []
    samples: list[tuple[int, Any]] = []
    deadline = time.perf_counter() + args["seconds"]

    def run(tid: int) -> None:
        rng = random.Random(args["seed"] * 1000 + tid)
        mine = dict.fromkeys(totals, 0)
        my_get: list[int] = []
        my_put: list[int] = []
        my_samples: list[tuple[int, Any]] = []
        clock = time.perf_counter_ns
        stop = int(deadline * 1e9)
        while True:
            k = rng.randrange(args["keys"])
            key, program = f"k{k:05d}", k % n
            is_get = rng.random() < 0.8
            t0 = clock()
            if t0 >= stop:
                break
            try:
                if is_get:
                    value = get(key)
                else:
                    put(key, program)
            except Exception as exc:  # counted: a cache must not fail its caller
                with lock:
                    errors.append(f"{'get' if is_get else 'put'}: {type(exc).__name__}: {exc}")
                continue
            finally:
                elapsed = (clock() - t0) // 1000
            mine["ops"] += 1
            if is_get:
                mine["gets"] += 1
                my_get.append(elapsed)
                if value is not None:
                    mine["hits"] += 1
                    if isinstance(value, bytes):
                        mine["wrong"] += value != payloads[program]
                    else:
                        mine["wrong"] += value.instructions != bytecodes[program].instructions
                        if mine["hits"] % 25 == 0 and len(my_samples) < 2000:
                            my_samples.append((program, value))
            else:
                mine["puts"] += 1
                my_put.append(elapsed)
        with lock:
            for name, count in mine.items():
                totals[name] += count
            get_lat.extend(my_get)
            put_lat.extend(my_put)
            samples.extend(my_samples)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(args["threads"])]
    t_run = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    window = time.perf_counter() - t_run
    close()
    # The façade's hits, re-encoded byte for byte (outside the timed window).
    totals["wrong"] += sum(codec.encode(value) != payloads[program] for program, value in samples)
    rng = random.Random(args["seed"])
    if len(get_lat) > MAX_SAMPLES:
        get_lat = rng.sample(get_lat, MAX_SAMPLES)
    if len(put_lat) > MAX_SAMPLES // 4:
        put_lat = rng.sample(put_lat, MAX_SAMPLES // 4)
    print(json.dumps({**totals, "window": window, "open_s": open_s, "open_errors": open_errors,
                      "errors": errors[:20], "n_errors": len(errors), "warnings": warnings[:20],
                      "n_warnings": len(warnings), "get_us": get_lat, "put_us": put_lat,
                      "checked": len(samples)}))  # fmt: skip


def _open(impl: str, where: str, payloads: list[bytes], bytecodes: list[Any]) -> tuple[Any, Any, Any]:
    """get(key) -> value or None, put(key, program index), close() for one implementation."""
    if impl == "diskcache":
        import diskcache

        dc = diskcache.Cache(where)
        return dc.get, lambda key, i: dc.set(key, payloads[i]), dc.close
    if impl == "store":
        from zexus_bcache import codec
        from zexus_bcache.store import Store

        store = Store(where)
        fingerprint = "f" * 64
        n_instructions = [len(b.instructions) for b in bytecodes]
        n_constants = [len(b.constants) for b in bytecodes]

        def get(key: str) -> bytes | None:
            entry = store.get(key)
            return None if entry is None else entry.payload

        def put(key: str, i: int) -> None:
            store.put(key, payloads[i], kind="ast", fingerprint=fingerprint, codec_version=codec.FORMAT_VERSION,
                      n_instructions=n_instructions[i], n_constants=n_constants[i])  # fmt: skip

        return get, put, store.close
    from zexus_bcache.cache import BytecodeCache

    cache = BytecodeCache(path=where, max_size=0 if impl == "facade" else 1000)
    return cache.lookup, lambda key, i: cache.store_value(key, bytecodes[i], kind="ast"), cache.close


# --------------------------------------------------------------------------------------- parent


def percentile(xs: list[int], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return float(s[min(len(s) - 1, int(round(q * (len(s) - 1))))])


def run_row(impl: str, processes: int, args: argparse.Namespace, pack: Path, workdir: Path) -> list[dict[str, Any]]:
    """One timed run of one implementation (a fresh cache); the per-process results."""
    rowdir = Path(tempfile.mkdtemp(prefix=f"{impl}-{processes}-", dir=workdir))
    where = rowdir / ("dc" if impl == "diskcache" else "bcache.db")
    go = rowdir / "go"
    procs = []
    try:
        for i in range(processes):
            spec = dict(impl=impl, where=str(where), pack=str(pack), keys=args.keys, seconds=args.seconds,
                        threads=args.threads, seed=i, ready=str(rowdir / f"ready-{i}"), go=str(go))  # fmt: skip
            procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
        give_up = time.time() + 120
        while not all((rowdir / f"ready-{i}").exists() for i in range(processes)):
            if time.time() > give_up or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{impl}: a worker did not start: {procs[0].communicate(timeout=5)[1][-2000:]}")
            time.sleep(0.01)
        tmp = go.with_suffix(".tmp")
        tmp.write_text(repr(time.time() + 0.3))
        tmp.replace(go)
        results = []
        for p in procs:
            out, err = p.communicate(timeout=args.seconds + 120)
            if p.returncode != 0:
                raise RuntimeError(f"{impl}: a worker failed: {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(rowdir, ignore_errors=True)


def summarize(impl: str, processes: int, threads: int, rounds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Pool the rounds of one row: throughput per round (median reported), latencies pooled."""
    results = [r for round_ in rounds for r in round_]
    gets = [x for r in results for x in r["get_us"]]
    puts = [x for r in results for x in r["put_us"]]
    per_round = sorted(sum(r["ops"] / r["window"] for r in round_) for round_ in rounds)
    return {
        "impl": impl,
        "processes": processes,
        "threads": threads,
        "rounds": len(rounds),
        "ops": sum(r["ops"] for r in results),
        "ops_per_s": statistics.median(per_round),
        "ops_per_s_rounds": [round(x) for x in per_round],
        "p50_us": percentile(gets + puts, 0.5),
        "p95_us": percentile(gets + puts, 0.95),
        "get_p50_us": percentile(gets, 0.5),
        "get_p95_us": percentile(gets, 0.95),
        "put_p50_us": percentile(puts, 0.5),
        "put_p95_us": percentile(puts, 0.95),
        "hit_rate": sum(r["hits"] for r in results) / max(1, sum(r["gets"] for r in results)),
        "errors": sum(r["n_errors"] for r in results) + sum(r["n_warnings"] for r in results),
        "open_errors": sum(r["open_errors"] for r in results),
        "wrong": sum(r["wrong"] for r in results),
        "checked_by_encoding": sum(r["checked"] for r in results),
        "slowest_open_s": max(r["open_s"] for r in results),
        "error_samples": sorted({e[:160] for r in results for e in r["errors"] + r["warnings"]})[:5],
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_s = float(os.environ.get("ZEXUS_BCACHE_LOAD_SECONDS", "3"))
    ap.add_argument("--seconds", type=float, default=default_s, help="timed window per row")
    ap.add_argument("--processes", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--threads", type=int, default=2, help="threads per process")
    ap.add_argument("--keys", type=int, default=300, help="size of the shared key space")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved runs of each row (median ops/s)")
    ap.add_argument("--impl", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = ap.parse_args()

    from zexus_bcache import codec, integration

    programs = sorted((ROOT / "tests" / "corpus").glob("*.zx"))
    payloads = [codec.encode(integration.compile_source(p.read_text(encoding="utf-8"), str(p))) for p in programs]
    workdir = Path(tempfile.mkdtemp(prefix="bench_load_"))
    rows = []
    try:
        pack = workdir / "pack.json"
        pack.write_text(json.dumps([base64.b64encode(p).decode() for p in payloads]))
        sizes = sorted(len(p) for p in payloads)
        print(f"{len(programs)} programs, payloads {sizes[0]}-{sizes[-1]} bytes (median {sizes[len(sizes) // 2]}),"
              f" {args.keys} keys, {args.seconds:g} s per row, {os.cpu_count()} CPUs")  # fmt: skip
        header = (f"{'impl':<14}{'procs':>6}{'thr':>4}{'ops':>9}{'ops/s':>9}{'p50 µs':>9}{'p95 µs':>9}"
                  f"{'get p50':>9}{'get p95':>9}{'put p50':>9}{'put p95':>9}{'errors':>8}{'wrong':>7}"
                  "  ops/s by round")  # fmt: skip
        print(header)
        for processes in args.processes:
            runs: dict[str, list[list[dict[str, Any]]]] = {impl: [] for impl in args.impl}
            for round_ in range(args.rounds):  # interleaved, order rotated: machine noise hits all alike
                order = args.impl[round_ % len(args.impl) :] + args.impl[: round_ % len(args.impl)]
                for impl in order:
                    if round_ and impl.startswith("facade"):
                        continue  # façade rows (CPU-bound in the codec, far from the others) run once
                    runs[impl].append(run_row(impl, processes, args, pack, workdir))
            for impl in args.impl:
                row = summarize(impl, processes, args.threads, runs[impl])
                rows.append(row)
                print(f"{impl:<14}{processes:>6}{args.threads:>4}{row['ops']:>9}{row['ops_per_s']:>9.0f}"
                      f"{row['p50_us']:>9.0f}{row['p95_us']:>9.0f}{row['get_p50_us']:>9.0f}{row['get_p95_us']:>9.0f}"
                      f"{row['put_p50_us']:>9.0f}{row['put_p95_us']:>9.0f}{row['errors']:>8}{row['wrong']:>7}"
                      f"  {row['ops_per_s_rounds']}", flush=True)  # fmt: skip
                for sample in row["error_samples"]:
                    print(f"    e.g. {sample}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for processes in args.processes:
        by = {r["impl"]: r for r in rows if r["processes"] == processes}
        if "diskcache" in by and "store" in by:
            ratio = by["store"]["ops_per_s"] / by["diskcache"]["ops_per_s"]
            print(f"{processes} processes: store/diskcache throughput = {ratio:.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"seconds": args.seconds, "rounds": args.rounds, "threads": args.threads,
                                     "keys": args.keys, "cpus": os.cpu_count(), "rows": rows}, indent=2))  # fmt: skip
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
