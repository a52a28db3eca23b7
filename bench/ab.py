"""Before/after of one change: the same measurements under an earlier revision and under this checkout.

    python -m bench.ab --base REV [--rounds N]

The earlier revision is checked out into a temporary git worktree. Each round runs one new process
per side (alternating which goes first, so machine noise hits both alike); a process imports
``zexus_bcache`` from its side's tree and measures, over the corpus (median per call):

* ``facade put (persistent)``: ``BytecodeCache(path=...).put(key, bytecode)`` into a new SQLite file;
* ``facade put (memory)``: the same without a store (the front tier only);
* ``encode``: ``codec.encode_measured`` (payload, measured size and shape);
* ``decode (first in process)``: the first ``codec.decode`` a process makes (one mid-sized program);
* ``decode (steady)``: later decodes of every program.

Ratios are this checkout over the base, per round, then their median (lower is better).
Results go to bench/results/ab.json and ab.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("facade put (persistent)", "facade put (memory)", "encode", "decode (first in process)", "decode (steady)")


def _per_call_us(fn: Any, args: list[Any], repeat: int) -> float:
    """Median microseconds per call of fn over args, repeat times each, the collector off."""
    samples = []
    for _ in range(repeat):
        for a in args:
            gc.disable()
            t0 = time.perf_counter_ns()
            fn(a)
            samples.append(time.perf_counter_ns() - t0)
            gc.enable()
    return statistics.median(samples) / 1000


def child(tree: str, workdir: str) -> None:
    """One side's measurements, as JSON on stdout (zexus_bcache imported from ``tree``)."""
    sys.path[:0] = [tree, str(ROOT)]
    from zexus_bcache import codec, pipeline
    from zexus_bcache.cache import BytecodeCache

    assert Path(codec.__file__).is_relative_to(tree), codec.__file__
    with pipeline.quiet():
        sources = sorted((ROOT / "tests" / "corpus").glob("*.zx"))
        bytecodes = [pipeline.compile_program(pipeline.parse(p.read_text(encoding="utf-8"), str(p))) for p in sources]
        blobs = [codec.encode(b) for b in bytecodes]
        mid = sorted(range(len(blobs)), key=lambda i: len(blobs[i]))[len(blobs) // 2]
        out: dict[str, float] = {}
        t0 = time.perf_counter_ns()
        codec.decode(blobs[mid])
        out["decode (first in process)"] = (time.perf_counter_ns() - t0) / 1000
        out["decode (steady)"] = _per_call_us(codec.decode, blobs, 3)
        out["encode"] = _per_call_us(codec.encode_measured, bytecodes, 3)
        keyed = [(f"k{r}-{i}", b) for r in range(3) for i, b in enumerate(bytecodes)]
        for label, kwargs in (
            ("facade put (persistent)", {"path": os.path.join(workdir, "ab.db")}),
            ("facade put (memory)", {}),
        ):
            with BytecodeCache(**kwargs) as cache:
                out[label] = _per_call_us(lambda kb, c=cache: c.put(*kb), keyed, 1)
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the git revision to compare against")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    base = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "zexus_bcache"],
                                capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    samples: dict[str, dict[str, list[float]]] = {"base": {m: [] for m in METRICS}, "this": {m: [] for m in METRICS}}
    with tempfile.TemporaryDirectory(prefix="zexus-ab-") as tmp:
        worktree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), base], check=True)
        try:
            for r in range(args.rounds):
                sides = [("base", worktree), ("this", ROOT)]
                for side, tree in sides if r % 2 == 0 else sides[::-1]:
                    work = Path(tmp) / f"{side}{r}"
                    work.mkdir()
                    done = subprocess.run([sys.executable, "-m", "bench.ab", "--base", base, "--child", str(tree), str(work)],
                                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)  # fmt: skip
                    for metric, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
                        samples[side][metric].append(value)
                    shutil.rmtree(work)
                print(f"[ab] round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    rows = []
    for m in METRICS:
        ratios = [t / b for t, b in zip(samples["this"][m], samples["base"][m], strict=True)]
        rows.append({"metric": m, "base_us": statistics.median(samples["base"][m]),
                     "this_us": statistics.median(samples["this"][m]), "ratio": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios)})  # fmt: skip
    this = f"{head}{' + uncommitted changes' if dirty else ''}"
    result = {"base": base, "this": this, "rounds": args.rounds, "started": time.strftime("%Y-%m-%d %H:%M %Z"),
              "loadavg": os.getloadavg(), "rows": rows, "samples": samples}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ab.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    lines = [f"# Before/after: {base} (base) vs {this} ({args.rounds} alternating rounds, {result['started']})", "",
             "| measure (corpus median per call) | base µs | this µs | this / base (median of rounds) | rounds min–max |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        lines.append(f"| {row['metric']} | {row['base_us']:,.1f} | {row['this_us']:,.1f} | {row['ratio']:.3f}× | "
                     f"{row['ratio_min']:.3f}–{row['ratio_max']:.3f} |")  # fmt: skip
    lines += [
        "",
        "Each round: one new process per side, alternating which goes first. Lower is better for this side.",
        "",
    ]
    (args.out / "ab.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
