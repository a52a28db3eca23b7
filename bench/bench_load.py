"""The robustness load workload, ours against diskcache, side by side in one run.

Run alone: python -m bench --only load [--quick]  (``ZEXUS_BCACHE_LOAD_SECONDS`` overrides the window)

Every row runs the same workload: P processes x T threads, each op a get (80%) or a put (20%) of
a key drawn from one shared key space, key i always holding the real encoded bytecode of corpus
program i % N. All processes open their cache at the same instant (a start-up "database is locked"
counts as an error, then the open is retried), then run for the same time. Rows:

* ``diskcache``: ``diskcache.Cache`` with default settings; get/set of the encoded bytes.
* ``store``: our ``Store``; get/put of the same bytes (the level diskcache works at).
* ``facade``: ``BytecodeCache.lookup`` / ``store_value`` with the in-memory front tier off
  (``max_size=0``): every get reads the store and decodes, every put encodes.
* ``facade+front``: the same with the default front tier (hits from memory after the first).
* ``diskcache+codec``: diskcache at the façade's level: get + our decode, put = our encode + set.
* ``diskcache+pickle``: diskcache holding the bytecode itself (it pickles on set, unpickles on get).

zexus 2.0's BytecodeCache is not a row: its memory tier is per process (nothing is shared) and its
disk tier rewrites .zxc files in place without locking (a reader can see a torn file) and is
lossy, so "a wrong read" has no meaning for it; see the codec section for its fidelity.

A wrong read is a get that returns something other than what was put for that key (bytes for
the first two rows; for the façade and diskcache rows the instruction list is compared on every hit, and one hit in
25 is re-encoded and compared byte for byte after the timed window). Errors are exceptions, plus
(for the façade, which never raises) warnings that it logged. Throughput counts every op of every
process over the timed window. Each diskcache and store row runs ``--rounds`` times (façade rows
once), interleaved with the other rows in a rotating order; it reports the median throughput
(every round's figure is listed too) and latencies pooled over its rounds.
"""

from __future__ import annotations

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

IMPLEMENTATIONS = ("diskcache", "store", "facade", "facade+front", "diskcache+codec", "diskcache+pickle")
ROOT = Path(__file__).resolve().parent.parent
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
    if impl == "diskcache+codec":
        import diskcache

        from zexus_bcache import codec

        dc = diskcache.Cache(where)

        def get_decoded(key: str) -> Any:
            blob = dc.get(key)
            return None if blob is None else codec.decode(blob)

        return get_decoded, lambda key, i: dc.set(key, codec.encode(bytecodes[i])), dc.close
    if impl == "diskcache+pickle":
        import diskcache

        dc = diskcache.Cache(where)
        return dc.get, lambda key, i: dc.set(key, bytecodes[i]), dc.close
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


def run_row(impl: str, processes: int, args: Any, pack: Path, workdir: Path) -> list[dict[str, Any]]:
    """One timed run of one implementation (a fresh cache); the per-process results."""
    rowdir = Path(tempfile.mkdtemp(prefix=f"{impl}-{processes}-", dir=workdir))
    where = rowdir / ("dc" if impl.startswith("diskcache") else "bcache.db")
    go = rowdir / "go"
    procs = []
    try:
        for i in range(processes):
            spec = dict(impl=impl, where=str(where), pack=str(pack), keys=args.keys, seconds=args.seconds,
                        threads=args.threads, seed=i, ready=str(rowdir / f"ready-{i}"), go=str(go))  # fmt: skip
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.bench_load", "--worker", json.dumps(spec)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT))  # fmt: skip
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


class Options:
    """The knobs of one load run."""

    def __init__(self, quick: bool) -> None:
        default_s = 0.5 if quick else 3.0
        self.seconds = float(os.environ.get("ZEXUS_BCACHE_LOAD_SECONDS", default_s))
        self.processes = [2] if quick else [4, 8]
        self.threads = 2
        self.keys = 300
        self.rounds = 1 if quick else 2
        self.impl = list(IMPLEMENTATIONS)


ONCE = ("facade", "diskcache+")  # rows far from the others (CPU-bound in a codec): one round


def run(payloads: list[bytes], quick: bool, workdir: Path) -> dict[str, Any]:
    """Every row for every process count; JSON-able results with tables."""
    from ._common import progress, ratio

    args = Options(quick)
    rows = []
    pack = workdir / "pack.json"
    pack.write_text(json.dumps([base64.b64encode(p).decode() for p in payloads]))
    for processes in args.processes:
        runs: dict[str, list[list[dict[str, Any]]]] = {impl: [] for impl in args.impl}
        for round_ in range(args.rounds):  # interleaved, order rotated: machine noise hits all alike
            order = args.impl[round_ % len(args.impl) :] + args.impl[: round_ % len(args.impl)]
            for impl in order:
                if round_ and impl.startswith(ONCE):
                    continue
                runs[impl].append(run_row(impl, processes, args, pack, workdir))
        for impl in args.impl:
            rows.append(summarize(impl, processes, args.threads, runs[impl]))
        progress(f"load: {processes} processes done")
    result: dict[str, Any] = {"seconds": args.seconds, "rounds": args.rounds, "threads": args.threads,
                              "keys": args.keys, "programs": len(payloads), "rows": rows, "ratios": {}}  # fmt: skip
    for processes in args.processes:
        by = {r["impl"]: r for r in rows if r["processes"] == processes}
        for a, b in (("store", "diskcache"), ("facade+front", "diskcache+codec"), ("facade+front", "diskcache+pickle"),
                     ("facade", "diskcache+codec")):  # fmt: skip
            # Every round of a pair; with one round each the spread is that one figure.
            xs = [x / y for x in by[a]["ops_per_s_rounds"] for y in by[b]["ops_per_s_rounds"]]
            r = ratio(xs, "higher", f"{a} / {b} throughput (ops/s), every pair of rounds")
            r["of_medians"] = by[a]["ops_per_s"] / by[b]["ops_per_s"]
            result["ratios"][f"{a} / {b} @ {processes} processes"] = r
    result["tables"] = tables(result)
    return result


def tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    from ._common import fmt_ratio, table

    rows = []
    for x in r["rows"]:
        rows.append([x["impl"], x["processes"], x["ops_per_s"], ", ".join(f"{v:,}" for v in x["ops_per_s_rounds"]),
                     x["get_p50_us"], x["get_p95_us"], x["put_p50_us"], x["put_p95_us"], x["hit_rate"] * 100,
                     x["errors"], x["wrong"]])  # fmt: skip
    ratios = "; ".join(f"{k}: {fmt_ratio(v)}" for k, v in r["ratios"].items())
    return [table(
        f"Multi-process workload: P processes x {r['threads']} threads, 80% get / 20% put over {r['keys']} shared keys "
        f"(real bytecode of {r['programs']} programs), {r['seconds']:g} s per row",
        ["implementation", "processes", "ops/s (median)", "ops/s by round", "get p50 µs", "get p95 µs", "put p50 µs",
         "put p95 µs", "hit rate %", "errors", "wrong reads"],
        rows,
        "store and diskcache move bytes; facade (BytecodeCache, front off), facade+front and diskcache+codec/+pickle "
        "return decoded bytecode. zexus's BytecodeCache: n/a (per-process memory tier; unlocked, lossy .zxc disk "
        f"tier). Throughput ratios (higher is better for ours): {ratios}.",
        key=True,
    )]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
        return
    raise SystemExit("run the load section with: python -m bench --only load [--quick]")


if __name__ == "__main__":
    main()
