"""Warm vs cold starts, and AST-keyed hits vs compiling, on the corpus.

Run: python bench/bench_warm.py [--repeat 5]

* Warm vs cold: each sample is a new process that opens the cache and times compile_source (a
  store hit: key, SELECT, decode), then times lex + parse + compile of the same source, which
  that process has never parsed (the parser's block cache is empty), side by side.
* AST-keyed hit vs compile, in one process on the same parsed tree: our key + front lookup, and
  zexus 2.0's own BytecodeCache key + lookup, against compile_ast_to_bytecode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, timings  # noqa: E402

from zexus_bcache import integration  # noqa: E402
from zexus_bcache.cache import BytecodeCache  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from zexus_bcache import integration
from zexus_bcache.cache import BytecodeCache
t1 = time.perf_counter()
db, path = sys.argv[1], sys.argv[2]
source = open(path, encoding="utf-8").read()
cache = BytecodeCache(path=db)
t2 = time.perf_counter()
report = cache.compile_source_report(source, path)
t3 = time.perf_counter()
assert report.tier == "store", report.tier
program = integration.parse(source, path)
integration.compile_program(program)
t4 = time.perf_counter()
cache.close()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "warm": t3 - t2, "cold": t4 - t3}))
"""


def warm_vs_cold(programs: list[Path], repeat: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bcache.db"
        with BytecodeCache(path=db) as cache:
            for p in programs:
                cache.compile_source(p.read_text(encoding="utf-8"), str(p))
        for p in programs:
            samples = []
            for _ in range(repeat):
                out = subprocess.run([sys.executable, "-c", CHILD, str(db), str(p)], capture_output=True,
                                     text=True, timeout=120, check=True).stdout
                samples.append(json.loads(out.strip().splitlines()[-1]))
            warm = median([s["warm"] for s in samples])
            cold = median([s["cold"] for s in samples])
            rows.append({"program": p.name, "warm_ms": warm * 1e3, "cold_ms": cold * 1e3, "ratio": cold / warm,
                         "open_ms": median([s["open"] for s in samples]) * 1e3,
                         "import_ms": median([s["import"] for s in samples]) * 1e3})
    return rows


def ast_hits(programs: list[Path]) -> list[dict]:
    with integration.quiet():
        from zexus.vm.cache import BytecodeCache as UpstreamCache
        from zexus.vm.compiler import compile_ast_to_bytecode
    rows = []
    ours = BytecodeCache(max_size=10_000, max_memory_mb=1024)
    theirs = UpstreamCache(max_size=10_000, max_memory_mb=1024, persistent=False)
    for p in programs:
        tree = integration.parse(p.read_text(encoding="utf-8"), str(p))
        with integration.quiet():
            bc = compile_ast_to_bytecode(tree, optimize=True)
        ours.put(tree, bc)
        theirs.put(tree, bc)

        def compile_it() -> None:
            with integration.quiet():
                compile_ast_to_bytecode(tree, optimize=True)

        t_compile = median(timings(compile_it, repeat=15))
        t_ours = median(timings(lambda: ours.get(tree), repeat=15))
        t_theirs = median(timings(lambda: theirs.get(tree), repeat=15))
        rows.append({"program": p.name, "compile_us": t_compile * 1e6, "ours_us": t_ours * 1e6,
                     "upstream_us": t_theirs * 1e6, "ours_x": t_compile / t_ours, "upstream_x": t_compile / t_theirs})
    return rows


def summary(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f}× (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="processes per program for warm vs cold")
    ap.add_argument("--limit", type=int, default=0, help="only the first N corpus programs")
    ap.add_argument("--glob", default="*.zx", help="which corpus programs")
    args = ap.parse_args()
    programs = sorted((ROOT / "tests" / "corpus").glob(args.glob))
    if args.limit:
        programs = programs[: args.limit]
    t0 = time.time()
    warm = warm_vs_cold(programs, args.repeat)
    print(f"{'program':36} {'cold ms':>8} {'warm ms':>8} {'ratio':>7} {'open ms':>8}")
    for r in warm:
        print(f"{r['program']:36} {r['cold_ms']:8.2f} {r['warm_ms']:8.3f} {r['ratio']:7.1f} {r['open_ms']:8.2f}")
    print("warm start (new process, store hit) vs cold (lex+parse+compile):", summary([r["ratio"] for r in warm]))
    print(f"  per-process cache open: median {statistics.median(r['open_ms'] for r in warm):.2f} ms; "
          f"import of zexus_bcache+zexus: median {statistics.median(r['import_ms'] for r in warm):.0f} ms")
    hits = ast_hits(programs)
    print("AST-keyed hit (key + front lookup) vs compiling the same AST:")
    print("  ours:     ", summary([r["ours_x"] for r in hits]))
    print("  zexus 2.0:", summary([r["upstream_x"] for r in hits]))
    print(f"({time.time() - t0:.0f} s)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "warm.json").write_text(json.dumps({"warm_vs_cold": warm, "ast_hits": hits}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
